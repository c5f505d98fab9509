"""The latest state of each site device (battery, PV inverters, grid meter).

Table ``device_status`` (migration ``0600_device_status``): one row per device, replaced
on every recorded poll, so `megastation devices` and `status` (other processes than
`serve`) show what the running loop sees. The history of the readings is the
energy-flow record (``energy_flows``), not this table.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from megastation.store import Store, dumps, iso


def record_device_status(
    store: Store,
    *,
    name: str,
    kind: str,
    address: str,
    model: str,
    time: datetime,
    reading_at: datetime | None,
    reading: dict[str, Any],
    fault: str | None,
) -> None:
    """Upsert a device's latest state; ``fault_since`` is kept while the fault lasts."""
    with store.conn:
        store.conn.execute(
            "INSERT INTO device_status (name, kind, address, model, updated_at, reading_at, "
            "reading, fault, fault_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, address = excluded.address, "
            "model = excluded.model, updated_at = excluded.updated_at, "
            "reading_at = excluded.reading_at, reading = excluded.reading, fault = excluded.fault, "
            "fault_since = CASE WHEN excluded.fault IS NULL THEN NULL "
            "WHEN device_status.fault IS NULL THEN excluded.fault_since "
            "ELSE device_status.fault_since END",
            (
                name, kind, address, model, iso(time),
                iso(reading_at) if reading_at else None, dumps(reading), fault,
                iso(time) if fault else None,
            ),
        )  # fmt: skip


def forget_devices_except(store: Store, names: list[str]) -> None:
    """Drop the rows of devices no longer configured (at `serve` start)."""
    with store.conn:
        marks = ",".join("?" for _ in names)
        store.conn.execute(
            f"DELETE FROM device_status WHERE name NOT IN ({marks})" if names
            else "DELETE FROM device_status",
            names,
        )  # fmt: skip


def device_statuses(store: Store) -> list[dict[str, Any]]:
    """Every device's latest state, by kind then name."""
    rows = store.conn.execute(
        "SELECT name, kind, address, model, updated_at, reading_at, reading, fault, fault_since "
        "FROM device_status ORDER BY CASE kind WHEN 'battery' THEN 0 WHEN 'pv' THEN 1 ELSE 2 END, name"
    ).fetchall()
    keys = ("name", "kind", "address", "model", "updated_at", "reading_at", "reading", "fault",
            "fault_since")  # fmt: skip
    out = []
    for r in rows:
        d = dict(zip(keys, r, strict=True))
        d["reading"] = json.loads(d["reading"] or "{}")
        out.append(d)
    return out


__all__ = ["device_statuses", "forget_devices_except", "record_device_status"]
