"""CSV exports of charging sessions and meter values, with unit-suffixed headers.

Library functions first (analysts call them directly); ``megastation export`` is a
thin layer over them. Times are ISO UTC; ``start``/``end`` select ``[start, end)``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from megastation.reports.frames import write_frame
from megastation.store import Store, records

SESSION_COLUMNS = (
    "transaction_id",
    "charger_id",
    "connector_id",
    "ocpp_version",
    "ocpp_transaction_id",
    "id_token",
    "start_time_utc",
    "stop_time_utc",
    "duration_min",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_kwh",
    "stop_reason",
    "state",
)

METER_COLUMNS = (
    "time_utc",
    "charger_id",
    "connector_id",
    "transaction_id",
    "power_kw",
    "energy_register_kwh",
    "soc_percent",
    "current_a",
    "voltage_v",
)

_WIDE = {
    (records.POWER_IMPORT, "kW"): "power_kw",
    (records.ENERGY_REGISTER, "kWh"): "energy_register_kwh",
    (records.SOC, "Percent"): "soc_percent",
    ("Current.Import", "A"): "current_a",
    ("Voltage", "V"): "voltage_v",
}


def session_rows(
    store: Store, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    out = []
    for tx in records.list_transactions(store, start=start, end=end):
        duration = None
        if tx["stop_time"]:
            delta = records.parse_time(tx["stop_time"]) - records.parse_time(tx["start_time"])
            duration = round(delta.total_seconds() / 60.0, 2)
        out.append(
            {
                "transaction_id": tx["id"],
                "charger_id": tx["charger_id"],
                "connector_id": tx["connector_id"],
                "ocpp_version": tx["ocpp_version"],
                "ocpp_transaction_id": tx["ocpp_tx_id"],
                "id_token": tx["id_token"],
                "start_time_utc": tx["start_time"],
                "stop_time_utc": tx["stop_time"],
                "duration_min": duration,
                "meter_start_wh": tx["meter_start_wh"],
                "meter_stop_wh": tx["meter_stop_wh"],
                "energy_kwh": None if tx["energy_kwh"] is None else round(tx["energy_kwh"], 4),
                "stop_reason": tx["stop_reason"],
                "state": tx["state"],
            }
        )
    return out


def meter_value_rows(
    store: Store, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per (time, charger, connector): power, energy register, SoC, current, voltage.

    Totals are used where the charger sent them; otherwise per-phase power is summed and
    ``current_a`` is the highest phase current (the one a per-phase limit binds). SoC is
    taken from wherever the charger reports it (usually ``location="EV"``); the other
    columns only from the outlet. Other measurands are left out (they stay in the store).
    """
    rows: dict[tuple, dict[str, Any]] = {}
    phased: dict[tuple, dict[str, float]] = {}
    for s in records.list_meter_samples(store, start=start, end=end):
        col = _WIDE.get((s["measurand"], s["unit"]))
        if col is None or (col != "soc_percent" and s["location"] not in ("", "Outlet")):
            continue
        key = (s["ts"], s["charger_id"], s["connector_id"])
        row = rows.setdefault(
            key,
            {
                "time_utc": s["ts"],
                "charger_id": s["charger_id"],
                "connector_id": s["connector_id"],
                "transaction_id": s["transaction_id"],
            },
        )
        if s["phase"] in ("", "N") or col in ("soc_percent", "voltage_v"):
            if s["phase"] == "" or col not in row:
                row[col] = s["value"]
        else:
            acc = phased.setdefault(key, {})
            if col == "current_a":
                acc[col] = max(acc.get(col, 0.0), s["value"])
            else:
                acc[col] = acc.get(col, 0.0) + s["value"]
    for key, acc in phased.items():
        for col, total in acc.items():
            rows[key].setdefault(col, total)
    return [rows[k] for k in sorted(rows)]


def _write(path: str | os.PathLike[str], columns: tuple[str, ...], rows: list[dict]) -> int:
    """CSV or Parquet by the file name, through the one writer all exports share."""
    # lazy: pandas only for writing files; `megastation sessions` lists without it
    import pandas as pd

    return write_frame(pd.DataFrame(rows, columns=list(columns)), path)


def export_sessions(
    store: Store,
    path: str | os.PathLike[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Write sessions starting in ``[start, end)`` to CSV; return the row count."""
    return _write(path, SESSION_COLUMNS, session_rows(store, start, end))


def export_meter_values(
    store: Store,
    path: str | os.PathLike[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Write meter values timed in ``[start, end)`` to CSV; return the row count."""
    return _write(path, METER_COLUMNS, meter_value_rows(store, start, end))
