"""Stage 4 of a cycle, set points: a solved plan -> one power schedule per car.

The plan's session powers are step averages, firm and extra apart. Per transaction
(:func:`tx_powers`) they are added up and turned into the power the car gets *while it is
there* (a car that leaves within a step gets average / share of the step it is plugged
in); :func:`fit_headroom` keeps that raise within the grid's headroom (a car that stays
longer than planned would draw it for the whole step). :func:`connector_setpoints`
makes each schedule, capped at the connector and, after the lease, at the charger's
fail-safe share. Powers in kW, energy in kWh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from megastation.control.gather import TxReading
from megastation.control.needs import EXPECTED_PREFIX
from megastation.control.problem import EXTRA_SUFFIX
from megastation.core.config import Station
from megastation.core.gateway import ConnectorSetpoint
from megastation.core.schedules import FailSafe, KwSchedule
from megastation.dispatch import Plan, SetPoints

MIN_SHARE = 1e-6  # a step share below this: the car is not there (no power)


@dataclass
class TxPowers:
    """A plan's powers per transaction (firm + extra), keyed by session id."""

    kw: dict[str, np.ndarray] = field(default_factory=dict)  # while there, per step [kW]
    avg: dict[str, np.ndarray] = field(default_factory=dict)  # the plan's step averages [kW]
    first: dict[str, float] = field(default_factory=dict)  # first step, while there [kW]
    delivered: dict[str, float] = field(default_factory=dict)  # over the horizon [kWh]
    unmet: dict[str, float] = field(default_factory=dict)  # firm energy the plan misses [kWh]


def tx_powers(plan: Plan, first: SetPoints) -> TxPowers:
    """The plan's car powers per transaction (expected cars left out); ``first`` is
    ``plan.first_step()``."""
    problem = plan.problem
    grid = problem.grid
    edges = grid.edges_s
    out = TxPowers()
    cars = [i for i, pid in enumerate(plan.session_ids) if not pid.startswith(EXPECTED_PREFIX)]
    if not cars:
        return out
    sessions = [problem.sessions[i] for i in cars]
    # the plan's powers are step averages; a car that leaves within a step gets the power
    # while it is there (average / share of the step plugged in): one row per session
    dep_s = np.array([(s.departure - grid.start).total_seconds() for s in sessions])
    share = np.clip((dep_s[:, None] - edges[:-1]) / np.diff(edges), 0.0, 1.0)
    avg = plan.session_kw[cars]
    kw = np.divide(avg, share, out=np.zeros(avg.shape), where=share > MIN_SHARE)
    kw = np.minimum(kw, np.array([s.max_power_kw for s in sessions])[:, None])
    for j, (i, s) in enumerate(zip(cars, sessions, strict=True)):
        pid = plan.session_ids[i]
        sid = pid.removesuffix(EXTRA_SUFFIX)
        out.kw[sid] = out.kw.get(sid, 0.0) + kw[j]
        out.avg[sid] = out.avg.get(sid, 0.0) + avg[j]
        share0 = share[j, 0]
        out.first[sid] = out.first.get(sid, 0.0) + float(
            min(first.session_kw[pid] / share0, s.max_power_kw) if share0 > MIN_SHARE else 0.0
        )
        out.delivered[sid] = out.delivered.get(sid, 0.0) + float(plan.delivered_kwh[i])
        if not pid.endswith(EXTRA_SUFFIX):
            out.unmet[sid] = float(plan.unmet_kwh[i])  # firm energy the plan misses
    return out


def fit_headroom(p: TxPowers, plan: Plan, first: SetPoints, limit_kw: float | np.ndarray) -> None:
    """Scale the raise above the plan's averages (in place) to the grid headroom of each
    step: ``limit_kw`` [kW] minus the plan's import (``first``: ``plan.first_step()``)."""
    if not p.kw:
        return
    n = plan.problem.grid.n_steps
    raise_kw = sum(np.maximum(p.kw[k] - p.avg[k], 0.0) for k in p.kw)
    first_raise = sum(
        max(p.first[k] - float(first.session_kw.get(k, 0.0) + first.session_kw.get(
            k + EXTRA_SUFFIX, 0.0)), 0.0)
        for k in p.first
    )  # fmt: skip
    room = np.maximum(np.asarray(limit_kw, dtype=float) - plan.grid_import_kw, 0.0)
    f = np.divide(room, raise_kw, out=np.ones(n), where=raise_kw > room)
    f0 = min(1.0, float(room[0]) / first_raise) if first_raise > room[0] else 1.0
    for k in p.kw:
        p.kw[k] = p.avg[k] + np.maximum(p.kw[k] - p.avg[k], 0.0) * f
        base0 = float(p.avg[k][0])
        p.first[k] = base0 + max(p.first[k] - base0, 0.0) * f0


def connector_setpoints(
    p: TxPowers,
    plan: Plan,
    controlled: Mapping[str, TxReading],
    station: Station,
    failsafe: Mapping[str, FailSafe],
    *,
    lease_end: datetime,
    force: bool,
) -> list[ConnectorSetpoint]:
    """One set point per controlled car: the plan's schedule capped at the connector, and
    after ``lease_end`` at the charger's fail-safe share. ``p.first`` becomes the capped
    first-step power (what is recorded as sent)."""
    grid = plan.problem.grid
    starts = grid.starts  # once per cycle, not per car
    out = []
    for sid, r in controlled.items():
        t = r.tx
        cap_kw = station.charger(t.charger_id).connector_power_kw
        limits = np.minimum(np.array(p.kw[sid], dtype=float), cap_kw)
        limits[0] = p.first[sid] = min(p.first[sid], cap_kw)
        sched = KwSchedule(starts, tuple(limits.tolist()), grid.end)
        sched = sched.capped_after(lease_end, failsafe[t.charger_id].connector_kw)
        out.append(
            ConnectorSetpoint(
                charger_id=t.charger_id,
                connector_id=int(t.connector_id),
                transaction_id=t.transaction_id,
                ocpp_tx_id=r.ocpp_tx_id,
                schedule=sched,
                power_kw=p.first[sid],
                force=force,
                lease_end=lease_end,
            )
        )
    return out
