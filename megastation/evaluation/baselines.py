"""Baselines and the limit the online loop is scored against, on a common Scenario.

- :func:`uncontrolled`: each car at full power from arrival until it has what it
  wanted (hardware limits still split a cabinet), battery idle.
- :func:`uncontrolled_self_consumption`: the same cars, the battery in a hybrid
  inverter's self-consumption mode (store PV surplus, cover import, down to its reserve).
- :func:`pv_surplus_greedy`: the rule of popular home PV chargers (evcc "min+PV"):
  share the measured surplus equally between the cars, never below each car's minimum,
  with hysteresis; switch a car to full power when it can only just finish by its
  departure; the battery stores surplus and covers deficits (self-consumption).
- :func:`perfect_foresight`: :func:`megastation.dispatch.solve` over the whole period
  with the actual PV and every arrival known: the physical limit.

The receding-horizon online loop is :func:`megastation.evaluation.replay.replay`.
"""

from __future__ import annotations

import numpy as np

from megastation.dispatch import Problem, SessionNeed, solve
from megastation.evaluation.scenario import Outcome, Scenario, Simulator


def uncontrolled(sc: Scenario) -> Outcome:
    """Every car at full power on arrival; battery idle."""
    sim = Simulator(sc)
    for _ in range(sc.n_steps):
        sim.step(sim.max_kw.copy(), 0.0)
    return sim.outcome("uncontrolled")


def uncontrolled_self_consumption(sc: Scenario) -> Outcome:
    """Every car at full power on arrival; the battery stores the PV surplus and
    discharges to cover the import (the Scenario's simulator keeps it within its SoC
    limits: the reserve is ``soc_min``)."""
    sim = Simulator(sc)
    for k in range(sc.n_steps):
        ev = sim.max_kw.copy()
        bat = 0.0
        if sc.battery is not None:  # + charge: PV left after site load and cars
            drawn = np.minimum(ev * sim.avail[:, k], sim.remaining_kwh / sim.dt[k])
            for mask, lim in sim.group_masks:  # shared cabinets, as the step applies them
                tot = drawn[mask].sum()
                if tot > lim[k] > -1:
                    drawn[mask] *= lim[k] / tot
            bat = float(sc.pv_actual_kw[k]) - float(sc.site_load_kw[k]) - float(drawn.sum())
        sim.step(ev, bat)
    return sim.outcome("uncontrolled, self-consumption battery")


def pv_surplus_greedy(
    sc: Scenario,
    *,
    min_frac: float = 0.1,
    min_kw: float = 1.4,
    enable_steps: int = 1,
    disable_steps: int = 1,
) -> Outcome:
    """PV-surplus charging with a minimum, hysteresis and a departure guard.

    Each plugged-in car gets at least ``max(min_kw, min_frac x its max)``; the surplus
    measured in the previous step (PV - site load - cars' minimum) is shared equally
    while it has lasted ``enable_steps``; a car is released after ``disable_steps``
    without surplus. A car that needs full power for the rest of its stay gets it.
    """
    sim = Simulator(sc)
    m = len(sc.visits)
    floor = np.maximum(min_kw, min_frac * sim.max_kw) if m else np.zeros(0)
    floor = np.minimum(floor, sim.max_kw)
    dep = np.array([(v.departure - sc.grid.start).total_seconds() / 3600 for v in sc.visits])
    above = below = 0
    enabled = False
    last_surplus = 0.0
    b = sc.battery
    for k in range(sc.n_steps):
        now_h = sc.grid.edges_s[k] / 3600
        plugged = (sim.avail[:, k] > 0) & (sim.remaining_kwh > 1e-9)
        base = np.where(plugged, floor, 0.0)
        # hysteresis on the measured surplus (previous step, as a meter sees it)
        if last_surplus > 0:
            above, below = above + 1, 0
        else:
            above, below = 0, below + 1
        enabled = above >= enable_steps if not enabled else below < disable_steps
        ev = base.copy()
        if enabled and plugged.any():
            room = np.where(plugged, sim.max_kw - base, 0.0)
            share = last_surplus
            # water-fill the surplus equally, capped by each car's room
            for _ in range(4):
                free = room > 1e-9
                if not free.any() or share <= 1e-9:
                    break
                each = share / free.sum()
                add = np.minimum(room, each) * free
                ev += add
                room -= add
                share -= add.sum()
        # departure guard: full power when the rest of the stay only just suffices
        hours_left = np.clip(dep - now_h, 1e-9, None)
        urgent = plugged & (sim.remaining_kwh >= sim.max_kw * (hours_left - sim.dt[k]))
        ev = np.where(urgent, sim.max_kw, ev)
        pv = float(sc.pv_actual_kw[k])
        load = float(sc.site_load_kw[k])
        bat = 0.0
        if b is not None:  # self-consumption: store surplus, cover deficit
            bat = pv - load - float(np.minimum(ev, sim.max_kw * sim.avail[:, k]).sum())
        sim.step(ev, bat)
        last_surplus = pv - load - float(base.sum())
    return sim.outcome("pv-surplus greedy")


def perfect_foresight(sc: Scenario, *, name: str = "perfect foresight") -> Outcome:
    """The dispatch LP over the whole period with actual PV and all arrivals known."""
    sim = Simulator(sc)
    sessions = tuple(
        SessionNeed(
            session_id=str(i),
            charger_id=v.charger_id,
            connector_id=v.connector_id,
            arrival=v.arrival,
            departure=v.departure,
            energy_kwh=float(v.energy_wanted_kwh),
            max_power_kw=float(sim.max_kw[i]),
        )
        for i, v in enumerate(sc.visits)
        if v.departure > sc.grid.start
    )
    plan = solve(
        Problem(
            grid=sc.grid,
            pv_kw=np.asarray(sc.pv_actual_kw, dtype=float),
            site_load_kw=np.asarray(sc.site_load_kw, dtype=float),
            grid_state=sc.grid_state,
            sessions=sessions,
            battery=sc.resolved_battery(),
            groups=sc.groups,
            policy=sc.policy,
        )
    )
    idx = np.array([int(s.session_id) for s in sessions], dtype=int)
    net_bat = plan.battery_charge_kw - plan.battery_discharge_kw
    for k in range(sc.n_steps):
        ev = np.zeros(len(sc.visits))
        ev[idx] = plan.session_kw[:, k]
        sim.step(ev, float(net_bat[k]), {n: float(v[k]) for n, v in plan.flows_kw.items()})
    return sim.outcome(name, plan.build_time_s + plan.solve_time_s, 1)
