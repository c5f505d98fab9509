"""What the control loop reads and writes in the store (03xx tables and settings).

- operator settings: live grid import limit (with an optional end), policy;
- plans (inputs summary, first-step set points, horizon) and every set point sent
  with its outcome;
- the profiles active on each charger, so a restarted loop does not send them again;
- which chargers accept profiles (controllable) and their configuration keys.

Power in kW, energy in kWh, times ISO UTC text in the store, tz-aware UTC here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from megastation.store import Store, dumps, iso, parse_iso, time_range
from megastation.store import records as _records

GRID_LIMIT_KEY = "control.grid_import_limit"  # {"kw": float, "until": iso | None}
POLICY_KEY = "control.policy"  # "re100" | "cost"
POLICIES = ("re100", "cost")


# --------------------------------------------------------------------------- operator settings


def set_grid_limit(
    store: Store,
    grid_kw: float | None,
    until: datetime | None = None,
    *,
    connection_kw: float | None = None,
    force: bool = False,
) -> None:
    """Set (or clear, with None) the operator's live grid import limit [kW] until ``until``.

    The one place its rules live (CLI, console and API call it): ``grid_kw`` finite and
    >= 0; above ``connection_kw`` (the site's ``grid_import_limit_kw``) only with
    ``force`` (the utility allows it); ``until`` in the future. A refusal is an
    :class:`~megastation.store.records.InvalidValue` naming ``grid_kw`` or ``until``.
    """
    if grid_kw is not None:
        if not (math.isfinite(grid_kw) and grid_kw >= 0):
            raise _records.InvalidValue("grid_kw", f"must be a finite number >= 0, got {grid_kw}")
        if connection_kw is not None and grid_kw > connection_kw and not force:
            raise _records.InvalidValue(
                "grid_kw",
                f"{grid_kw:g} kW is above the connection's {connection_kw:g} kW "
                "(site.grid_import_limit_kw): allowed only with force, if the utility agrees",
            )
        if until is not None and until <= store.now():
            raise _records.InvalidValue("until", f"{until.isoformat()} is in the past")
    store.set_setting(
        GRID_LIMIT_KEY,
        None if grid_kw is None else {"kw": float(grid_kw), "until": iso(until) if until else None},
    )


def grid_limit_kw(store: Store, configured_kw: float, now: datetime) -> tuple[float, str]:
    """The grid import limit in force [kW] and where it comes from ('operator' | 'config')."""
    value = store.get_setting(GRID_LIMIT_KEY)
    if value and (value.get("until") is None or parse_iso(value["until"]) > now):
        return float(value["kw"]), "operator"
    return configured_kw, "config"


def set_session_override(
    store: Store,
    transaction_id: int,
    *,
    departure: datetime | None,
    energy_kwh: float | None,
) -> None:
    """Record an operator's departure [UTC] and/or total energy [kWh] for a session
    (a None keeps what was set before)."""
    if energy_kwh is not None and not (math.isfinite(energy_kwh) and energy_kwh >= 0):
        raise _records.InvalidValue("energy_kwh", f"must be a finite number >= 0, got {energy_kwh}")
    with store.conn:
        store.conn.execute(
            "INSERT INTO control_session_overrides (transaction_id, departure, energy_kwh, set_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(transaction_id) DO UPDATE SET "
            "departure = COALESCE(excluded.departure, departure), "
            "energy_kwh = COALESCE(excluded.energy_kwh, energy_kwh), set_at = excluded.set_at",
            (transaction_id, iso(departure) if departure else None, energy_kwh, iso(store.now())),
        )


def session_overrides(store: Store) -> dict[int, tuple[datetime | None, float | None]]:
    """All operator overrides: transaction id -> (departure UTC, total energy kWh)."""
    rows = store.conn.execute(
        "SELECT transaction_id, departure, energy_kwh FROM control_session_overrides"
    ).fetchall()
    return {  # a non-finite energy (stored before it was checked) counts as not given
        int(t): (parse_iso(d) if d else None, e if e is None or math.isfinite(e) else None)
        for t, d, e in rows
    }


def set_policy(store: Store, policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
    store.set_setting(POLICY_KEY, policy)


def policy(store: Store, configured: str) -> str:
    """The policy in force: the operator's (store) over the station config."""
    return store.get_setting(POLICY_KEY) or configured


# --------------------------------------------------------------------------- cycle errors

CYCLE_ERROR_KEY = "control.cycle_error"  # {"error", "since", "last_at", "count"} or None


def record_cycle_error(store: Store, error: str, now: datetime) -> None:
    """A control cycle failed: keep the error text, since when cycles fail, and how often."""
    prev = store.get_setting(CYCLE_ERROR_KEY)
    store.set_setting(
        CYCLE_ERROR_KEY,
        {
            "error": error[:500],
            "since": prev["since"] if prev else iso(now),
            "last_at": iso(now),
            "count": (prev["count"] if prev else 0) + 1,
        },
    )


def clear_cycle_error(store: Store) -> None:
    """A cycle succeeded: cycles no longer fail (writes only when an error was recorded)."""
    if store.get_setting(CYCLE_ERROR_KEY) is not None:
        store.set_setting(CYCLE_ERROR_KEY, None)


def cycle_error(store: Store) -> dict[str, Any] | None:
    """The failing cycles' last error (``error``, ``since``, ``last_at``, ``count``) or None."""
    return store.get_setting(CYCLE_ERROR_KEY)


# --------------------------------------------------------------------------- plans and set points

# stores that keep only the latest plan's horizon: store -> [id of the latest plan, its
# horizon not yet written (a callable) or None]
_LATEST_HORIZON_ONLY: weakref.WeakKeyDictionary[Store, list[Any]] = weakref.WeakKeyDictionary()


def keep_plan_horizons(store: Store, keep: bool) -> None:
    """Keep every plan's per-step horizon (True, the default) or only the latest one's.

    A simulated year makes ~80,000 plans; their horizons (a few kB of JSON each) are
    most of the store. With ``keep=False`` a plan's ``horizon`` is ``{}`` except the
    latest plan's, which :func:`write_latest_horizon` writes (a simulation, at its end:
    a horizon that the next plan would blank is never built); inputs, first step and set
    points are written with every plan.
    """
    if keep:
        _LATEST_HORIZON_ONLY.pop(store, None)
    else:
        _LATEST_HORIZON_ONLY.setdefault(store, [None, None])


def write_latest_horizon(store: Store) -> None:
    """Write the latest plan's horizon where only the latest is kept (nothing otherwise)."""
    latest = _LATEST_HORIZON_ONLY.get(store)
    if latest is None or latest[1] is None:
        return
    plan_id, horizon = latest
    latest[1] = None
    with _records._tx(store):
        store.conn.execute(
            "UPDATE control_plans SET horizon = ? WHERE id = ?", (dumps(horizon()), plan_id)
        )


def record_plan(
    store: Store,
    *,
    created_at: datetime,
    reason: str,
    policy: str,
    grid_limit_kw: float,
    status: str,
    solve_ms: float,
    cycle_ms: float,
    grid_import_kw: float | None,
    pv_kw: float | None,
    battery_soc_frac: float | None,
    battery_kw: float | None,
    inputs: dict[str, Any],
    first_step: dict[str, Any],
    horizon: dict[str, Any] | Callable[[], dict[str, Any]],
) -> int:
    """Insert one plan; returns its id. ``horizon`` may be a callable that builds it:
    where only the latest horizon is kept (:func:`keep_plan_horizons`) it is called by
    :func:`write_latest_horizon`, if no later plan came, else never."""
    build = horizon if callable(horizon) else (lambda: horizon)
    latest = _LATEST_HORIZON_ONLY.get(store)
    stored = "{}" if latest is not None else dumps(build())
    with _records._tx(store):
        cur = store.conn.execute(
            "INSERT INTO control_plans (created_at, reason, policy, grid_limit_kw, status, "
            "solve_ms, cycle_ms, grid_import_kw, pv_kw, battery_soc_frac, battery_kw, inputs, "
            "first_step, horizon) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                iso(created_at),
                reason,
                policy,
                grid_limit_kw,
                status,
                solve_ms,
                cycle_ms,
                grid_import_kw,
                pv_kw,
                battery_soc_frac,
                battery_kw,
                dumps(inputs),
                dumps(first_step),
                stored,
            ),
        )
        plan_id = int(cur.lastrowid)
        if latest is not None:
            latest[0] = plan_id
            latest[1] = build
    return plan_id


@dataclass(frozen=True)
class SetpointRecord:
    """One set point sent (or deliberately not sent) and its outcome."""

    charger_id: str | None  # None for the battery
    connector_id: int | None
    transaction_id: int | None
    target: str  # tx | max | tx_default | battery
    power_kw: float | None  # first-step set point [kW]
    payload: dict[str, Any] | None
    status: str  # accepted | rejected | timeout | offline | error | deadband | uncontrollable
    detail: str | None = None


def record_setpoints(
    store: Store, plan_id: int | None, records: Iterable[SetpointRecord], now: datetime
) -> None:
    created_at = iso(now)
    rows = [
        (
            plan_id,
            r.charger_id,
            r.connector_id,
            r.transaction_id,
            r.target,
            r.power_kw,
            dumps(r.payload) if r.payload is not None else None,
            r.status,
            r.detail,
            created_at,
        )
        for r in records
    ]
    if not rows:
        return
    with _records._tx(store):
        store.conn.executemany(
            "INSERT INTO control_setpoints (plan_id, charger_id, connector_id, transaction_id, "
            "target, power_kw, payload, status, detail, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def max_planned_import_kw(store: Store, since: datetime) -> float | None:
    """The highest finite grid import [kW] recorded with a plan made at or after ``since``."""
    row = store.conn.execute(
        "SELECT MAX(grid_import_kw) FROM control_plans WHERE created_at >= ? "
        "AND grid_import_kw BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308",
        (iso(since),),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def latest_plan(store: Store) -> dict[str, Any] | None:
    row = store.conn.execute(
        "SELECT id, created_at, reason, policy, grid_limit_kw, status, solve_ms, cycle_ms, "
        "grid_import_kw, pv_kw, battery_soc_frac, battery_kw, inputs, first_step, horizon "
        "FROM control_plans ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    keys = [
        "id",
        "created_at",
        "reason",
        "policy",
        "grid_limit_kw",
        "status",
        "solve_ms",
        "cycle_ms",
        "grid_import_kw",
        "pv_kw",
        "battery_soc_frac",
        "battery_kw",
        "inputs",
        "first_step",
        "horizon",
    ]
    out = dict(zip(keys, row, strict=True))
    for k in ("inputs", "first_step", "horizon"):
        out[k] = json.loads(out[k])
    return out


# --------------------------------------------------------------------------- active profiles


@dataclass(frozen=True)
class ActiveProfile:
    charger_id: str
    connector_id: int
    purpose: str  # tx | max | tx_default
    transaction_id: int | None
    schedule: dict[str, Any]  # KwSchedule.to_json()
    payload: dict[str, Any]
    sent_at: datetime


def save_active_profile(store: Store, p: ActiveProfile) -> None:
    with store.conn:
        store.conn.execute(
            "INSERT INTO control_profiles_active (charger_id, connector_id, purpose, "
            "transaction_id, schedule, payload, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(charger_id, connector_id, purpose) DO UPDATE SET "
            "transaction_id = excluded.transaction_id, schedule = excluded.schedule, "
            "payload = excluded.payload, sent_at = excluded.sent_at",
            (
                p.charger_id,
                p.connector_id,
                p.purpose,
                p.transaction_id,
                dumps(p.schedule),
                dumps(p.payload),
                iso(p.sent_at),
            ),
        )


def active_profile(
    store: Store, charger_id: str, connector_id: int, purpose: str
) -> ActiveProfile | None:
    row = store.conn.execute(
        "SELECT transaction_id, schedule, payload, sent_at FROM control_profiles_active "
        "WHERE charger_id = ? AND connector_id = ? AND purpose = ?",
        (charger_id, connector_id, purpose),
    ).fetchone()
    if row is None:
        return None
    return ActiveProfile(
        charger_id, connector_id, purpose, row[0], json.loads(row[1]), json.loads(row[2]),
        parse_iso(row[3]),
    )  # fmt: skip


def forget_active_profiles(store: Store, charger_id: str, purpose: str | None = None) -> None:
    """A charger rebooted (profiles may be gone) or a transaction ended."""
    with store.conn:
        if purpose is None:
            store.conn.execute(
                "DELETE FROM control_profiles_active WHERE charger_id = ?", (charger_id,)
            )
        else:
            store.conn.execute(
                "DELETE FROM control_profiles_active WHERE charger_id = ? AND purpose = ?",
                (charger_id, purpose),
            )


def list_active_profiles(store: Store) -> list[ActiveProfile]:
    rows = store.conn.execute(
        "SELECT charger_id, connector_id, purpose, transaction_id, schedule, payload, sent_at "
        "FROM control_profiles_active ORDER BY charger_id, connector_id, purpose"
    ).fetchall()
    return [
        ActiveProfile(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), parse_iso(r[6]))
        for r in rows
    ]


# --------------------------------------------------------------------------- chargers


def set_charger_control(
    store: Store,
    charger_id: str,
    *,
    controllable: bool | None = None,
    reason: str | None = None,
    config_keys: dict[str, str] | None = None,
) -> None:
    with store.conn:
        store.conn.execute(
            "INSERT INTO control_chargers (charger_id, config_keys, controllable, reason, "
            "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(charger_id) DO UPDATE SET "
            "config_keys = COALESCE(excluded.config_keys, config_keys), "
            "controllable = CASE WHEN ? IS NULL THEN controllable ELSE excluded.controllable END, "
            "reason = CASE WHEN ? IS NULL THEN reason ELSE excluded.reason END, "
            "updated_at = excluded.updated_at",
            (
                charger_id,
                dumps(config_keys) if config_keys is not None else None,
                1 if controllable is None else int(controllable),
                reason,
                iso(store.now()),
                controllable,
                controllable,
            ),
        )


def charger_config_keys(store: Store, charger_id: str) -> dict[str, str] | None:
    row = store.conn.execute(
        "SELECT config_keys FROM control_chargers WHERE charger_id = ?", (charger_id,)
    ).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def open_ocpp_tx_ids(store: Store) -> dict[int, str | None]:
    """The charger's transaction id of each open transaction (id -> ``ocpp_tx_id``): one
    query for the loop's whole gather, not a row per transaction (#15)."""
    rows = store.conn.execute(
        "SELECT id, ocpp_tx_id FROM transactions WHERE state = 'open'"
    ).fetchall()
    return dict(rows)


def uncontrollable_chargers(store: Store) -> dict[str, str]:
    """Chargers that reject profiles: id -> reason."""
    rows = store.conn.execute(
        "SELECT charger_id, reason FROM control_chargers WHERE controllable = 0"
    ).fetchall()
    return {r[0]: r[1] or "" for r in rows}


# --------------------------------------------------------------------------- export


DISPATCH_COLUMNS = (
    "plan_id",
    "time",
    "reason",
    "policy",
    "status",
    "grid_limit_kw",
    "grid_import_measured_kw",
    "pv_measured_kw",
    "battery_soc_frac",
    "planned_grid_import_kw",
    "planned_battery_kw",
    "planned_pv_kw",
    "planned_ev_kw",
    "solve_ms",
    "cycle_ms",
    "charger_id",
    "connector_id",
    "transaction_id",
    "setpoint_kw",
    "setpoint_status",
)


def dispatch_rows(
    store: Store, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per plan and connector set point (a plan without set points gives one row)."""
    where, args = time_range("p.created_at", start, end)
    sql = (
        "SELECT p.id, p.created_at, p.reason, p.policy, p.status, p.grid_limit_kw, "
        "p.grid_import_kw, p.pv_kw, p.battery_soc_frac, p.first_step, p.solve_ms, p.cycle_ms, "
        "s.charger_id, s.connector_id, s.transaction_id, s.power_kw, s.status "
        "FROM control_plans p LEFT JOIN control_setpoints s ON s.plan_id = p.id "
        "AND s.target = 'tx'"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    out = []
    for r in store.conn.execute(sql + " ORDER BY p.id, s.id", args):
        fs = json.loads(r[9])
        out.append(
            dict(
                zip(
                    DISPATCH_COLUMNS,
                    (
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        r[4],
                        r[5],
                        r[6],
                        r[7],
                        r[8],
                        fs.get("grid_import_kw"),
                        fs.get("battery_kw"),
                        fs.get("pv_kw"),
                        fs.get("ev_kw"),
                        r[10],
                        r[11],
                        r[12],
                        r[13],
                        r[14],
                        r[15],
                        r[16],
                    ),
                    strict=True,
                )
            )
        )
    return out


def export_dispatch_csv(
    store: Store,
    path: str | os.PathLike[str],
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Write :func:`dispatch_rows` to a CSV file with unit-suffixed headers; return row count."""
    rows = dispatch_rows(store, start, end)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=DISPATCH_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return len(rows)
