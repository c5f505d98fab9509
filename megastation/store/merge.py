"""One store from the stores of a run simulated in parts (:mod:`megastation.sim.parts`).

A long simulation runs in parts of whole months in parallel, each part in its own store
and each after a warm-up that starts before its first month. :func:`append_part` copies
what a part recorded in its own period ``[since, until)`` into the run's store: flows,
sessions (transactions, meter samples, charging needs, the simulator's session table),
plans and set points, and the part's settings (the last part's win). Row ids are
renumbered past the run store's; a session that began in the previous part and ends in this one (the
previous part cut it at its end) keeps its first row and takes this part's end of it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from megastation.store import Store, flows, iso

# the copied tables' columns (ids left to SQLite, or renumbered below)
_FLOW_COLS = (
    "ts, step_s, pv_kw, curtailed_kw, ev_kw, base_load_kw, battery_charge_kw, "
    "battery_discharge_kw, grid_import_kw, grid_export_kw, soc_frac, grid_limit_kw, "
    "pv_forecast_kw, pv_p10_kw, pv_p90_kw"
)
_TX_STOP_COLS = ("stop_time", "meter_stop_wh", "energy_kwh", "stop_reason", "state", "updated_at")
_SAMPLE_COLS = (
    "charger_id, connector_id, ts, measurand, phase, location, context, value, unit, received_at"
)
_NEEDS_COLS = (
    "charger_id, connector_id, requested_energy_kwh, departure_time, max_power_kw, "
    "energy_transfer_mode, payload, received_at"
)
_SESSION_COLS = (
    "run, session_key, charger_id, connector_id, car_model, arrival, departure, "
    "energy_wanted_kwh, energy_kwh, unmet_kwh"
)
_PLAN_COLS = (
    "created_at, reason, policy, grid_limit_kw, status, solve_ms, cycle_ms, grid_import_kw, "
    "pv_kw, battery_soc_frac, battery_kw, inputs, first_step, horizon"
)
_SETPOINT_COLS = "charger_id, connector_id, target, power_kw, payload, status, detail, created_at"


def append_part(store: Store, part: str | Path, since: datetime, until: datetime) -> None:
    """Copy what the store at ``part`` recorded in ``[since, until)`` into ``store``
    (one transaction; see the module docstring)."""
    db = store.conn
    db.execute("ATTACH DATABASE ? AS part", (str(part),))
    try:
        with db:
            args = (iso(since), iso(until))
            _map_transactions(db, *args)
            db.execute(
                f"INSERT INTO main.energy_flows ({_FLOW_COLS}) SELECT {_FLOW_COLS} "
                "FROM part.energy_flows WHERE ts >= ? AND ts < ?",
                args,
            )
            db.execute(
                "INSERT INTO main.connector_flows (ts, charger_id, connector_id, transaction_id, "
                "session_key, power_kw) SELECT c.ts, c.charger_id, c.connector_id, m.new, "
                "c.session_key, c.power_kw FROM part.connector_flows c "
                "LEFT JOIN temp.txmap m ON m.old = c.transaction_id WHERE c.ts >= ? AND c.ts < ?",
                args,
            )
            _copy_with_tx(db, "meter_samples", _SAMPLE_COLS, "ts", args)
            _copy_with_tx(db, "charging_needs", _NEEDS_COLS, "received_at", args)
            # a session ending in this part replaces the previous part's cut copy of it
            db.execute(
                f"INSERT OR REPLACE INTO main.sim_sessions ({_SESSION_COLS}, transaction_id) "
                f"SELECT {', '.join('s.' + c.strip() for c in _SESSION_COLS.split(','))}, m.new "
                "FROM part.sim_sessions s LEFT JOIN temp.txmap m ON m.old = s.transaction_id "
                "WHERE s.departure > ? AND s.arrival < ?",
                args,
            )
            _copy_plans(db, args)
            db.execute("INSERT OR REPLACE INTO main.settings SELECT * FROM part.settings")
    finally:
        db.execute("DROP TABLE IF EXISTS temp.txmap")
        db.execute("DETACH DATABASE part")
        flows.forget_windows(store)  # energy_flows written here, not by flows.record_flows


def _map_transactions(db: sqlite3.Connection, since: str, until: str) -> None:
    """Copy the part's transactions into ``main`` and fill ``temp.txmap`` (old id -> new
    id): those that started in ``[since, until)`` get new ids (a 1.6 ``ocpp_tx_id``, the
    id as text, with them); one that started before ``since`` and is already in ``main``
    (same connector and start) gets this part's end of it."""
    db.execute("CREATE TEMP TABLE txmap (old INTEGER PRIMARY KEY, new INTEGER)")
    next_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM main.transactions").fetchone()[0]
    cols = [r[1] for r in db.execute("PRAGMA part.table_info(transactions)")]
    rows = db.execute(
        "SELECT * FROM part.transactions WHERE start_time < ? "
        "AND (start_time >= ? OR stop_time IS NULL OR stop_time > ?) ORDER BY id",
        (until, since, since),
    ).fetchall()
    for row in rows:
        r = dict(zip(cols, row, strict=True))
        if r["start_time"] < since:
            found = db.execute(
                "SELECT id FROM main.transactions WHERE charger_id = ? AND connector_id = ? "
                "AND start_time = ?",
                (r["charger_id"], r["connector_id"], r["start_time"]),
            ).fetchone()
            if found is not None:
                sets = ", ".join(f"{c} = ?" for c in _TX_STOP_COLS)
                db.execute(
                    f"UPDATE main.transactions SET {sets} WHERE id = ?",
                    [r[c] for c in _TX_STOP_COLS] + [found[0]],
                )
                db.execute("INSERT INTO temp.txmap VALUES (?, ?)", (r["id"], found[0]))
                continue
        next_id += 1
        if r["ocpp_tx_id"] == str(r["id"]):
            r["ocpp_tx_id"] = str(next_id)
        old, r["id"] = r["id"], next_id
        db.execute(
            f"INSERT INTO main.transactions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [r[c] for c in cols],
        )
        db.execute("INSERT INTO temp.txmap VALUES (?, ?)", (old, next_id))


def _copy_with_tx(
    db: sqlite3.Connection, table: str, cols: str, ts_col: str, args: tuple[str, str]
) -> None:
    """Rows of ``table`` in the period, their ``transaction_id`` mapped through txmap."""
    src = ", ".join(f"t.{c.strip()}" for c in cols.split(","))
    db.execute(
        f"INSERT OR IGNORE INTO main.{table} ({cols}, transaction_id) SELECT {src}, m.new "
        f"FROM part.{table} t LEFT JOIN temp.txmap m ON m.old = t.transaction_id "
        f"WHERE t.{ts_col} >= ? AND t.{ts_col} < ?",
        args,
    )


def _copy_plans(db: sqlite3.Connection, args: tuple[str, str]) -> None:
    """Plans made in the period, and their set points (plan ids renumbered)."""
    off = db.execute("SELECT COALESCE(MAX(id), 0) FROM main.control_plans").fetchone()[0]
    db.execute(
        f"INSERT INTO main.control_plans (id, {_PLAN_COLS}) SELECT id + ?, {_PLAN_COLS} "
        "FROM part.control_plans WHERE created_at >= ? AND created_at < ?",
        (off, *args),
    )
    src = ", ".join(f"s.{c.strip()}" for c in _SETPOINT_COLS.split(","))
    db.execute(
        f"INSERT INTO main.control_setpoints (plan_id, transaction_id, {_SETPOINT_COLS}) "
        f"SELECT s.plan_id + ?, m.new, {src} FROM part.control_setpoints s "
        "LEFT JOIN temp.txmap m ON m.old = s.transaction_id "
        "WHERE s.created_at >= ? AND s.created_at < ?",
        (off, *args),
    )


__all__ = ["append_part"]
