"""Shared pieces of the CLI: the context that lazily opens config and store."""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import click

from megastation.core.clock import parse_local_time
from megastation.core.config import ConfigError, Station, default_config_path, load_station
from megastation.sim.options import SimulationError, weather_path
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
            try:
                self._store = Store(self.db_path)
            except sqlite3.DatabaseError as exc:
                raise click.ClickException(f"--db {self.db_path}: {exc}") from None
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_ctx = click.make_pass_decorator(Context)


# Domain errors whose message is meant for the user, by the module that defines them.
_USER_ERRORS = {
    "forecasts.weather": "WeatherError",
    "megastation.dispatch.problem": "ProblemError",
    "megastation.reports.frames": "ExportError",
    "megastation.sim.options": "SimulationError",
}


def _user_errors() -> tuple[type[Exception], ...]:
    """Domain errors whose message is meant for the user: shown without a traceback.

    Only a module that has been imported can have raised its error, so none is imported
    here (the CLI stays light: see ``benchmarks/cli_start.py``)."""
    loaded = [getattr(sys.modules[m], name) for m, name in _USER_ERRORS.items() if m in sys.modules]
    return (ConfigError, sqlite3.DatabaseError, *loaded)


class MegastationGroup(click.Group):
    """The top-level group: a domain error from any command becomes a one-line message."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            raise click.ClickException(str(exc)) from None


def parse_when(text: str | None, station: Station, *, option: str | None = None) -> datetime | None:
    """A time given on the command line: ISO date or date-time; no zone = station local time.

    A bare date (``2026-06-30``) is local midnight. A bad value raises a
    ``click.BadParameter`` naming ``option``.
    """
    if not text:
        return None
    try:
        return parse_local_time(text, station.site.tz)
    except ValueError:
        raise click.BadParameter(f"not an ISO date or time: {text!r}", param_hint=option) from None


def parse_range(
    start: str | None,
    end: str | None,
    station: Station,
    *,
    start_option: str = "--from",
    end_option: str = "--to",
) -> tuple[datetime | None, datetime | None]:
    """``--from``/``--to`` of a command: the half-open range ``[from, to)``, each end
    parsed by :func:`parse_when`. A ``--to`` not after ``--from`` (an empty range) is a
    ``click.BadParameter`` naming ``--to``, not a silently empty answer."""
    t0 = parse_when(start, station, option=start_option)
    t1 = parse_when(end, station, option=end_option)
    if t0 is not None and t1 is not None and t1 <= t0:
        raise click.BadParameter(
            f"{end} is not after {start_option} {start} (the range is [from, to))",
            param_hint=end_option,
        )
    return t0, t1


def export_group() -> click.Group:
    """The shared ``megastation export`` group; each command module adds its exports to it."""
    from megastation.cli import main  # lazy: megastation.cli imports this module

    existing = main.commands.get("export")
    if isinstance(existing, click.Group):
        return existing

    @main.group("export")
    def export() -> None:
        """Export the store for analysts: CSV with unit-suffixed headers (Parquet where noted)."""

    return export


def check_weather(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback for ``--weather``: a seed name or an existing weather CSV."""
    try:
        weather_path(value)
    except SimulationError as exc:
        raise click.BadParameter(str(exc).removeprefix("weather: "), ctx, param) from None
    return value


def output_option(f):
    """``-o/--output FILE`` of every export: .csv, or .parquet with pyarrow."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="File to write: .csv, or .parquet (needs pyarrow).",
    )(f)


def range_options(f):
    """``--from``/``--to`` of every export: the half-open range ``[from, to)``."""
    f = click.option(
        "--to", "end", help="Until, exclusive (ISO date or date-time; station local if no zone)."
    )(f)
    return click.option(
        "--from", "start", help="From (ISO date or date-time; station local if no zone)."
    )(f)
