"""Shared pieces of the CLI: the context that lazily opens config and store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from megastation.config import ConfigError, Station, default_config_path, load_station
from megastation.store import Store


@dataclass
class Context:
    """What every command may need, opened on first use."""

    config_path: Path | None
    db_path: Path
    _station: Station | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def resolved_config_path(self) -> Path:
        return self.config_path or default_config_path()

    @property
    def station(self) -> Station:
        if self._station is None:
            try:
                self._station = load_station(self.resolved_config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._station

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_ctx = click.make_pass_decorator(Context)
