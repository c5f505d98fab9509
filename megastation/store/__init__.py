"""The SQLite store: the station's source of truth.

Everything a process knows in memory is a cache it can rebuild from here, so a second
process (or another database later) can share the work. Schema changes are
migrations: named functions, applied once each in name order and recorded in the
``_migrations`` table (see :mod:`megastation.store.schema`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from megastation.core.clock import Clock, SystemClock
from megastation.store.schema import MIGRATIONS

if TYPE_CHECKING:
    import sqlite_utils


def iso(ts: datetime) -> str:
    """A timestamp as stored: ISO 8601 in UTC with microseconds, so text order is time order."""
    last = _last_iso[0]  # one read: threads may share it
    if last[0] is ts:
        return last[1]
    tz = ts.tzinfo
    if tz is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: give a time zone")
    text = (ts if tz is UTC else ts.astimezone(UTC)).isoformat(timespec="microseconds")
    _last_iso[0] = (ts, text)
    return text


# the last time written and its text: a simulated clock's one ``now`` object stamps every
# row of a substep (a meter sample's time, received_at, updated_at, ...): datetimes are
# immutable, so the same object has the same text
_last_iso: list[tuple[datetime | None, str]] = [(None, "")]


def time_range(
    column: str, start: datetime | None, end: datetime | None
) -> tuple[list[str], list[str]]:
    """SQL conditions and arguments selecting ``column`` in ``[start, end)`` (either open).

    Callers add their own conditions and join them with ``AND``.
    """
    where, args = [], []
    if start is not None:
        where.append(f"{column} >= ?")
        args.append(iso(start))
    if end is not None:
        where.append(f"{column} < ?")
        args.append(iso(end))
    return where, args


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso`."""
    return datetime.fromisoformat(text)


def dumps(obj: Any) -> str:
    """Strict JSON for payload columns (compact, datetimes as ISO text, non-finite -> null)."""
    try:
        return json.dumps(
            obj, separators=(",", ":"), default=_json_default, ensure_ascii=False, allow_nan=False
        )
    except ValueError:  # NaN or infinity somewhere: null, as strict JSON has no such numbers
        return json.dumps(
            finite_json(obj), separators=(",", ":"), default=_json_default, ensure_ascii=False,
            allow_nan=False,
        )  # fmt: skip


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, for strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs: Any) -> str:
    """Strict JSON for output (CLI ``--json``): non-finite numbers as null, never ``Infinity``."""
    kwargs.setdefault("default", str)
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Store:
    """A migrated SQLite database in WAL mode, with the clock that stamps its rows.

    ``path`` may be ``":memory:"`` for throwaway use; everything else is a file.
    """

    def __init__(self, path: str | os.PathLike[str], clock: Clock | None = None) -> None:
        self.path = str(path)
        self.clock: Clock = clock or SystemClock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA recursive_triggers=on")  # what sqlite-utils sets
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.migrate()

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """The sqlite-utils view of the connection (bulk inserts), made on first use."""
        # lazy: sqlite_utils imports pandas and numpy (~1 s); the read-only CLI commands
        # (status, sessions, chargers, tags) answer without it
        import sqlite_utils

        return sqlite_utils.Database(self.conn, recursive_triggers=False)

    def now(self) -> datetime:
        return self.clock.now()

    def migrate(self) -> list[str]:
        """Apply pending migrations in name order; return the names applied."""

        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in self.conn.execute("SELECT name FROM _migrations").fetchall()}
        applied = []
        for name in sorted(MIGRATIONS):
            if name in done:
                continue
            with self.conn:
                MIGRATIONS[name](self.conn)
                self.conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (name, iso(self.clock.now())),
                )
            applied.append(name)
        return applied

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM _migrations ORDER BY name")]

    # Small key/value settings table (operator overrides such as a live grid limit).
    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, dumps(value), iso(self.clock.now())),
            )

    def close(self) -> None:
        self.conn.close()
