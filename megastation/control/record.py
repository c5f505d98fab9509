"""Stage 6 of a cycle, record: the plan, its inputs and every set point, in the store.

``control_plans`` gets one row per cycle with three JSON documents:

- ``inputs``: what the plan was made from (each car's need, battery, meters, limit source,
  chargers that take no profiles, expected energy, steps);
- ``first_step``: what was applied now (per session kW, battery kW > 0 discharge, grid);
- ``horizon``: the plan's path per step (rounded: :data:`KW_DECIMALS`, :data:`SOC_DECIMALS`).

``control_setpoints`` gets every outcome, and the battery's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from megastation.control.apply import Applied
from megastation.control.gather import SiteReadings
from megastation.control.problem import BuiltProblem
from megastation.control.pv import PvForecast
from megastation.control.setpoints import TxPowers
from megastation.core.gateway import ApplyOutcome
from megastation.dispatch import Plan, SetPoints, TimeGrid
from megastation.store import Store
from megastation.store import control as cr

KW_DECIMALS = 3  # kW and kWh in the recorded horizon
SOC_DECIMALS = 4


def _r(a: Any, nd: int = KW_DECIMALS) -> list[float]:
    return np.round(np.asarray(a, dtype=float).ravel(), nd).tolist()


def setpoint_record(o: ApplyOutcome) -> cr.SetpointRecord:
    """A gateway outcome as the store records it."""
    return cr.SetpointRecord(
        o.charger_id, o.connector_id, o.transaction_id, o.target, o.power_kw, o.payload, o.status,
        o.detail,
    )  # fmt: skip


def first_step_record(
    p: TxPowers, first: SetPoints, battery_kw: float, pv: PvForecast, built: BuiltProblem
) -> dict[str, Any]:
    """What was applied now [kW]."""
    return {
        "session_kw": p.first,
        "battery_kw": battery_kw,  # > 0 discharge (device convention)
        "grid_import_kw": first.grid_import_kw,
        "grid_export_kw": first.grid_export_kw,
        "pv_kw": float(pv.p50_kw[0]),
        "ev_kw": float(sum(p.first.values())),
        "uncontrolled_kw": float(built.cars.uncontrolled_kw[0]),
        "curtailed_kw": first.curtailed_kw,
    }


def iso_times(grid: TimeGrid) -> list[str]:
    """Each step start as ``Timestamp.isoformat`` gives it (UTC), from integer seconds
    when every start is a whole second (#15: a plan's records in a fraction of the time)."""
    us = grid.times_us
    if (us % 1_000_000).any():
        return [ts.isoformat() for ts in grid.times]
    text = np.datetime_as_string((us // 1_000_000).view("M8[s]"), unit="s")
    return [t + "+00:00" for t in text.tolist()]


def horizon_record(plan: Plan, p: TxPowers, pv: PvForecast) -> dict[str, Any]:
    """The plan's path per step (times ISO UTC, powers kW, energies kWh)."""
    return {
        "times": iso_times(plan.problem.grid),
        "pv_kw": _r(pv.p50_kw),
        "grid_import_kw": _r(plan.grid_import_kw),
        "battery_kw": _r(plan.battery_discharge_kw - plan.battery_charge_kw),
        "soc_frac": _r(plan.soc_frac, SOC_DECIMALS),
        "ev_kw": _r(plan.ev_kw),
        "session_kw": {sid: _r(v) for sid, v in p.kw.items()},
        "delivered_kwh": {sid: round(v, KW_DECIMALS) for sid, v in p.delivered.items()},
        "unmet_kwh": {sid: round(v, KW_DECIMALS) for sid, v in p.unmet.items()},
    }


def inputs_record(
    site: SiteReadings,
    built: BuiltProblem,
    uncontrollable: Iterable[str],
    rejected: set[str],
    warnings: list[str],
) -> dict[str, Any]:
    """What the plan was made from (``warnings``: bad stored values skipped)."""
    batt = site.battery
    return {
        "grid_limit_source": site.limit_source,
        "sessions": built.cars.summary,
        "battery": None
        if batt is None
        else {"soc_frac": batt.soc_frac, "power_kw": batt.power_kw, "fault": batt.fault},
        "pv_now_kw": site.pv_kw,
        "grid_import_measured_kw": None if site.grid is None else site.grid.net_import_kw,
        "unexplained_load_kw": built.unexplained_kw,
        "uncontrollable": sorted(set(uncontrollable) | rejected),
        "expected_kwh": round(built.expected_kwh, KW_DECIMALS),
        # the evening reserve the plan keeps (megastation.control.reserve), if any
        "reserve": None
        if built.reserve is None or built.reserve.until is None
        else {
            "kwh": round(built.reserve.kwh, KW_DECIMALS),
            "until": built.reserve.until.isoformat(),
            "evening_kwh": round(built.reserve.evening_kwh, KW_DECIMALS),
            "room_kwh": round(built.reserve.room_kwh, KW_DECIMALS),
        },
        "n_steps": built.problem.grid.n_steps,
        "warnings": warnings,  # bad stored values skipped
    }


def record_cycle(
    store: Store,
    *,
    now: datetime,
    reason: str,
    site: SiteReadings,
    pv: PvForecast,
    built: BuiltProblem,
    plan: Plan,
    first: SetPoints,
    powers: TxPowers,
    applied: Applied,
    uncontrollable: Mapping[str, str],
    warnings: list[str],
    started_s: float,
) -> tuple[int, float]:
    """Record one cycle; returns the plan's id and the cycle's wall time [s] (from
    ``started_s``, a :func:`time.perf_counter` value)."""
    inputs = inputs_record(site, built, uncontrollable, applied.rejected, warnings)
    first_step = first_step_record(powers, first, applied.battery_kw, pv, built)
    batt = site.battery
    cycle_s = time.perf_counter() - started_s
    plan_id = cr.record_plan(
        store,
        created_at=now,
        reason=reason,
        policy=site.policy,
        grid_limit_kw=site.limit_kw,
        status=plan.status,
        solve_ms=(plan.build_time_s + plan.solve_time_s) * 1000,
        cycle_ms=cycle_s * 1000,
        grid_import_kw=site.grid.net_import_kw if site.grid else built.computed_import_kw,
        pv_kw=site.pv_kw,
        battery_soc_frac=batt.soc_frac if batt and not batt.fault else None,
        battery_kw=batt.power_kw if batt else None,
        inputs=inputs,
        first_step=first_step,
        # built when written: a simulation that keeps only the latest plan's horizon
        # builds none of the others (store.control.keep_plan_horizons)
        horizon=lambda: horizon_record(plan, powers, pv),
    )
    rows = [setpoint_record(o) for o in applied.outcomes]
    if applied.battery is not None:
        status, detail = applied.battery
        rows.append(
            cr.SetpointRecord(None, None, None, "battery", applied.battery_kw, None, status, detail)
        )
    cr.record_setpoints(store, plan_id, rows, now)  # the cars', then the battery's
    return plan_id, cycle_s
