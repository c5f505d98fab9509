"""Receding-horizon replay: step through a scenario as the online control loop would.

At each step the loop knows the cars plugged in (their remaining energy and departure),
optionally the arrivals expected within the horizon, the battery state and the PV
forecast issued now; it solves :func:`megastation.dispatch.solve` and applies only the
first step against the actual PV (:class:`megastation.evaluation.scenario.Simulator`).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from megastation.control.needs import ExpectedDemand, expected_sessions
from megastation.dispatch import (
    BatteryState,
    GridState,
    Policy,
    Problem,
    SessionNeed,
    TimeGrid,
    WarmStart,
    solve,
)
from megastation.evaluation.scenario import Outcome, Scenario, Simulator


def step_problem(
    sc: Scenario,
    sim: Simulator,
    horizon_steps: int | None,
    arrivals_known: bool,
    expected: ExpectedDemand | None = None,
    timezone: str = "Asia/Seoul",
) -> tuple[Problem, np.ndarray]:
    """The problem the online loop solves at the simulator's current step, and the
    visit index of each of its sessions (expected cars, when ``expected`` is given and
    arrivals are not known, come after them: :func:`megastation.control.needs.expected_sessions`)."""
    k = sim.k
    n = sc.n_steps - k if horizon_steps is None else min(horizon_steps, sc.n_steps - k)
    start = sc.grid.start + timedelta(seconds=float(sc.grid.edges_s[k]))
    first = sc.grid.first_step_s if k == 0 else None
    grid = TimeGrid(start, n, sc.grid.step_s, first)
    end = grid.end
    # The real loop re-solves every minute, so a car arriving during this 15-min step
    # is seen within it: treat it as known.
    step_end = start + timedelta(seconds=float(grid.durations_s[0]))
    remaining = sim.remaining_kwh
    idx = []
    sessions = []
    for i, v in enumerate(sc.visits):
        if v.departure <= start or remaining[i] <= 1e-9:
            continue
        if v.arrival >= step_end and (not arrivals_known or v.arrival >= end):
            continue
        idx.append(i)
        sessions.append(
            SessionNeed(
                session_id=str(i),
                charger_id=v.charger_id,
                connector_id=v.connector_id,
                arrival=v.arrival,
                departure=v.departure,
                energy_kwh=float(remaining[i]),
                max_power_kw=float(sim.max_kw[i]),
                current_power_kw=float(sim.last_kw[i]) if v.arrival <= start else 0.0,
            )
        )
    if expected is not None and not arrivals_known:
        edges = [start + timedelta(seconds=float(x)) for x in grid.edges_s]
        share = Policy.of(sc.policy).expected_share
        for sid, _kind, arr, dep, kwh, kw, prio in expected_sessions(
            expected, edges, timezone, share=share
        ):
            sessions.append(SessionNeed(sid, sid, 0, arr, dep, kwh, kw, priority=prio))
    gs = sc.grid_state
    sl = slice(k, k + n)
    lim = np.broadcast_to(np.asarray(gs.import_limit_kw, dtype=float), (sc.n_steps,))[sl]
    grid_state = GridState(
        import_limit_kw=lim,
        export_limit_kw=gs.export_limit_kw,
        import_price_krw_per_kwh=np.asarray(gs.import_price_krw_per_kwh)[sl],
        export_price_krw_per_kwh=gs.export_price_krw_per_kwh,
        demand_charge_krw_per_kw=gs.demand_charge_krw_per_kw,
        peak_so_far_kw=sim.peak_kw,
    )
    battery = None
    if sc.battery is not None:
        b = sc.resolved_battery()
        soc = sim.energy_kwh / b.capacity_kwh if b.capacity_kwh else 0.0
        battery = BatteryState(
            **{
                **b.__dict__,
                "soc_frac": min(max(soc, b.soc_min_frac), b.soc_max_frac),
                "renewable_frac": sim.green_kwh / sim.energy_kwh if sim.energy_kwh > 1e-9 else 0.0,
            }
        )
    problem = Problem(
        grid=grid,
        pv_kw=np.clip(sc.forecast(k, grid), 0.0, None),
        site_load_kw=np.asarray(sc.site_load_kw, dtype=float)[sl],
        grid_state=grid_state,
        sessions=tuple(sessions),
        battery=battery,
        groups=tuple(
            g
            if np.ndim(g.max_power_kw) == 0
            else type(g)(g.name, g.members, np.asarray(g.max_power_kw)[sl])
            for g in sc.groups
        ),
        policy=sc.policy,
    )
    return problem, np.array(idx, dtype=int)


def replay(
    sc: Scenario,
    *,
    horizon_steps: int | None = 96,
    arrivals_known: bool = False,
    expected: ExpectedDemand | None = None,
    timezone: str = "Asia/Seoul",
    name: str = "receding horizon",
) -> Outcome:
    """Play ``sc`` step by step, re-solving with the forecast issued at each step.

    ``horizon_steps=None`` plans to the end of the scenario (a shrinking horizon);
    ``arrivals_known=True`` tells the loop every arrival within the horizon in advance
    (with perfect PV forecasts this reproduces the perfect-foresight optimum);
    ``expected`` plans the cars still to come as aggregate expected sessions (local
    hours of ``timezone``), as the control loop does.
    """
    sim = Simulator(sc)
    solve_s = 0.0
    warm = WarmStart()  # each step starts from the last step's basis, as the control loop
    for _ in range(sc.n_steps):
        problem, idx = step_problem(sc, sim, horizon_steps, arrivals_known, expected, timezone)
        plan = solve(problem, warm)
        solve_s += plan.build_time_s + plan.solve_time_s
        ev = np.zeros(len(sc.visits))
        first = plan.first_step()
        if idx.size:
            ev[idx] = [first.session_kw[str(i)] for i in idx]
        sim.step(
            ev, first.battery_net_charge_kw, {k: float(v[0]) for k, v in plan.flows_kw.items()}
        )
    return sim.outcome(name, solve_s, sc.n_steps)
