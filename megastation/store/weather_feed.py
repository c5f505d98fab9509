"""The live weather feed's status (no pandas here: `status` imports it).

Table ``weather_feed_status`` (migration ``0202_weather_feed_status``): one row, the
feed's latest fetch (provider, ok or the error, since when it fails, the last good fetch,
counts, what the PV forecast uses), replaced by :class:`megastation.control.weather_feed.
WeatherFeed` after every fetch, so `status` in another process shows what `serve`'s feed does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from megastation.store import Store, iso, parse_iso


def record_feed_status(
    store: Store,
    *,
    provider: str,
    attempted_at: datetime,
    ok: bool,
    error: str | None,
    last_ok_at: datetime | None,
    fetches: int,
    failures: int,
    source: str,
) -> None:
    """Replace the weather feed's status row; ``failing_since`` is kept while it fails."""
    with store.conn:
        store.conn.execute(
            "INSERT INTO weather_feed_status (id, provider, attempted_at, ok, error, failing_since,"
            " last_ok_at, fetches, failures, source) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET provider = excluded.provider,"
            " attempted_at = excluded.attempted_at, ok = excluded.ok, error = excluded.error,"
            " failing_since = CASE WHEN excluded.ok THEN NULL"
            " WHEN weather_feed_status.ok OR weather_feed_status.failing_since IS NULL"
            " THEN excluded.failing_since ELSE weather_feed_status.failing_since END,"
            " last_ok_at = excluded.last_ok_at, fetches = excluded.fetches,"
            " failures = excluded.failures, source = excluded.source",
            (
                provider, iso(attempted_at), int(ok), None if ok else error,
                None if ok else iso(attempted_at), iso(last_ok_at) if last_ok_at else None,
                fetches, failures, source,
            ),
        )  # fmt: skip


def feed_status(store: Store, now: datetime | None = None) -> dict[str, Any] | None:
    """The weather feed's latest status (None: no feed has run), with ``age_min``: minutes
    since the last good fetch at ``now`` (None without one)."""
    row = store.conn.execute(
        "SELECT provider, attempted_at, ok, error, failing_since, last_ok_at, fetches, failures,"
        " source FROM weather_feed_status WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    keys = ("provider", "attempted_at", "ok", "error", "failing_since", "last_ok_at", "fetches",
            "failures", "source")  # fmt: skip
    out = dict(zip(keys, row, strict=True))
    out["ok"] = bool(out["ok"])
    last = out["last_ok_at"]
    now = now or store.now()
    out["age_min"] = (
        None if last is None else round((now - parse_iso(last)).total_seconds() / 60, 1)
    )
    return out


__all__ = ["feed_status", "record_feed_status"]
