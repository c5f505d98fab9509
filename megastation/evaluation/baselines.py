"""Baselines and the limit the online loop is scored against, on a common Scenario.

- :func:`uncontrolled`: each car at full power from arrival until it has what it
  wanted (hardware limits still split a cabinet), battery idle.
- :func:`uncontrolled_self_consumption`: the same cars, the battery in a hybrid
  inverter's self-consumption mode (store PV surplus, cover import, down to its reserve).
- :func:`pv_surplus_greedy`: the rule of popular home PV chargers (evcc "min+PV"),
  :func:`greedy_power_kw`: share the measured surplus equally between the cars, never
  below each car's minimum; switch a car to full power when it can only just finish by
  its departure; the battery stores surplus and covers deficits (self-consumption).
  ``megastation simulate --policy greedy`` applies the same rule every minute.
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


# The PV-surplus greedy rule's minimum power of a plugged-in car: 6 A on one 230 V phase
# (evcc's minimum current), or this share of the car's maximum if that is more (DC).
GREEDY_MIN_KW = 1.4
GREEDY_MIN_FRAC = 0.10
GREEDY_TOL_KW = 1e-9  # room or surplus below this is none


def greedy_floor_kw(max_kw: np.ndarray) -> np.ndarray:
    """Each car's minimum under the greedy rule: max(GREEDY_MIN_KW, GREEDY_MIN_FRAC x its
    maximum), never above its maximum [kW]."""
    max_kw = np.asarray(max_kw, dtype=float)
    return np.minimum(np.maximum(GREEDY_MIN_KW, GREEDY_MIN_FRAC * max_kw), max_kw)


def greedy_power_kw(
    max_kw: np.ndarray,
    floor_kw: np.ndarray,
    *,
    pv_kw: float,
    site_load_kw: float,
    remaining_kwh: np.ndarray,
    hours_left_h: np.ndarray,
    step_h: float,
) -> np.ndarray:
    """The PV-surplus greedy rule (evcc "Min+PV" with a departure guard): power per car [kW].

    For the cars plugged in now (one value per car; ``max_kw`` what each can take now):

    1. every car gets its floor (``floor_kw``, see :func:`greedy_floor_kw`);
    2. the surplus, ``pv_kw - site_load_kw - sum(floors)`` as the meter sees it, is shared
       equally (water-filled, capped by each car's maximum);
    3. departure guard: a car that can only just get its ``remaining_kwh`` in the
       ``hours_left_h`` of its stay at full power from the next step on
       (``remaining >= max x (hours_left - step_h)``) gets its maximum now.

    The battery is not part of the rule: it stores what the cars leave of the PV and
    covers what they draw beyond it (self-consumption), in the caller's physics.
    """
    max_kw = np.asarray(max_kw, dtype=float)
    power = np.minimum(np.asarray(floor_kw, dtype=float), max_kw)
    left = pv_kw - site_load_kw - float(power.sum())
    room = max_kw - power
    while left > GREEDY_TOL_KW:
        free = room > GREEDY_TOL_KW
        if not free.any():
            break
        add = np.minimum(room, left / free.sum()) * free
        power += add
        room -= add
        left -= float(add.sum())
    urgent = np.asarray(remaining_kwh) >= max_kw * (np.asarray(hours_left_h) - step_h)
    return np.where(urgent, max_kw, power)


def pv_surplus_greedy(sc: Scenario) -> Outcome:
    """:func:`greedy_power_kw` every step, on the PV and site load metered in the step
    before; the battery stores surplus and covers deficits (self-consumption)."""
    sim = Simulator(sc)
    floor = greedy_floor_kw(sim.max_kw) if len(sc.visits) else np.zeros(0)
    dep = np.array([(v.departure - sc.grid.start).total_seconds() / 3600 for v in sc.visits])
    seen_pv = seen_load = 0.0  # the meter's last step (nothing before the first)
    for k in range(sc.n_steps):
        now_h = sc.grid.edges_s[k] / 3600
        plugged = np.flatnonzero((sim.avail[:, k] > 0) & (sim.remaining_kwh > GREEDY_TOL_KW))
        ev = np.zeros(len(sc.visits))
        ev[plugged] = greedy_power_kw(
            sim.max_kw[plugged],
            floor[plugged],
            pv_kw=seen_pv,
            site_load_kw=seen_load,
            remaining_kwh=sim.remaining_kwh[plugged],
            hours_left_h=np.clip(dep[plugged] - now_h, GREEDY_TOL_KW, None),
            step_h=float(sim.dt[k]),
        )
        pv = float(sc.pv_actual_kw[k])
        load = float(sc.site_load_kw[k])
        bat = 0.0
        if sc.battery is not None:  # self-consumption: store surplus, cover deficit
            bat = pv - load - float(np.minimum(ev, sim.max_kw * sim.avail[:, k]).sum())
        sim.step(ev, bat)
        seen_pv, seen_load = pv, load
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
