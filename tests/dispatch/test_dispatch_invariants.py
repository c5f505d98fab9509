"""Dispatch invariants on random problems (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megastation.dispatch import (
    BatteryState,
    GridState,
    Plan,
    PowerGroup,
    Problem,
    SessionNeed,
    TimeGrid,
    solve,
)

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
TOL = 1e-5


@st.composite
def problems(draw) -> Problem:
    n = draw(st.integers(2, 12))
    first = draw(st.sampled_from([None, 300, 600]))
    coarse = draw(st.sampled_from([None, 1800, 3600]))  # uneven grids: coarse steps late
    n_fine = draw(st.integers(1, n)) if coarse else None
    grid = TimeGrid(T0, n, 900, first, coarse, n_fine)
    horizon_s = float(grid.edges_s[-1])
    kw = st.floats(0, 100, allow_nan=False)
    pv = np.array(draw(st.lists(kw, min_size=n, max_size=n)))
    load = np.array(draw(st.lists(st.floats(0, 20), min_size=n, max_size=n)))
    price = np.array(draw(st.lists(st.floats(40, 200), min_size=n, max_size=n)))
    gs = GridState(
        import_limit_kw=draw(st.floats(0, 150)),
        export_limit_kw=draw(st.floats(0, 50)),
        import_price_krw_per_kwh=price,
        export_price_krw_per_kwh=draw(st.floats(0, 30)),
        demand_charge_krw_per_kw=draw(st.sampled_from([0.0, 2580.0])),
        peak_so_far_kw=draw(st.floats(0, 100)),
    )
    battery = None
    if draw(st.booleans()):
        lo = draw(st.floats(0, 0.3))
        hi = draw(st.floats(0.6, 1.0))
        battery = BatteryState(
            capacity_kwh=draw(st.floats(1, 200)),
            soc_frac=draw(st.floats(lo, hi)),
            soc_min_frac=lo,
            soc_max_frac=hi,
            max_charge_kw=draw(st.floats(0, 100)),
            max_discharge_kw=draw(st.floats(0, 100)),
            charge_efficiency=draw(st.floats(0.8, 1.0)),
            discharge_efficiency=draw(st.floats(0.8, 1.0)),
            renewable_frac=draw(st.floats(0, 1)),
        )
    sessions = []
    for i in range(draw(st.integers(0, 6))):
        arr = draw(st.floats(-3600, horizon_s - 60))
        dep = draw(st.floats(max(arr, 0) + 60, horizon_s + 7200))
        p_max = draw(st.floats(1, 100))
        sessions.append(
            SessionNeed(
                session_id=f"s{i}",
                charger_id=f"C{i % 3}",
                connector_id=1,
                arrival=T0 + timedelta(seconds=arr),
                departure=T0 + timedelta(seconds=dep),
                energy_kwh=draw(st.floats(0, 60)),
                max_power_kw=p_max,
                priority=draw(st.floats(0.5, 2)),
                current_power_kw=draw(st.floats(0, p_max)),
            )
        )
    groups = ()
    if draw(st.booleans()):
        groups = (PowerGroup("cab", (("C0", 1), ("C1", 1)), draw(st.floats(0, 80))),)
    policy = draw(st.sampled_from(["re100", "cost"]))
    return Problem(grid, pv, load, gs, tuple(sessions), battery, groups, policy=policy)


def check(plan: Plan) -> None:
    p = plan.problem
    dt = p.grid.durations_h
    gs = p.grid_state
    ev = plan.session_kw.sum(axis=0)
    # power balance each step: sources = sinks
    sources = plan.pv_used_kw + plan.grid_import_kw + plan.battery_discharge_kw
    sinks = ev + p.site_load_kw - plan.load_shed_kw + plan.battery_charge_kw + plan.grid_export_kw
    np.testing.assert_allclose(sources, sinks, atol=TOL)
    np.testing.assert_allclose(plan.pv_used_kw + plan.curtailed_kw, p.pv_kw, atol=TOL)
    # no limit exceeded
    assert (plan.grid_import_kw <= gs.import_limit_kw + TOL).all()
    assert (plan.grid_export_kw <= gs.export_limit_kw + TOL).all()
    assert (plan.session_kw >= -TOL).all()
    for i, s in enumerate(p.sessions):
        assert (plan.session_kw[i] <= s.max_power_kw + TOL).all()
        on = (p.grid.times + pd_td(p.grid.durations_s) > s.arrival) & (p.grid.times < s.departure)
        assert (plan.session_kw[i][~np.asarray(on)] <= TOL).all()
        # energy of a step at most max power x the time plugged in within it (a car that
        # leaves inside a long step gets nothing after it leaves)
        e = p.grid.edges_s
        t0 = p.grid.start
        a = (s.arrival - t0).total_seconds()
        d = (s.departure - t0).total_seconds()
        plugged_h = np.clip(np.minimum(e[1:], d) - np.maximum(e[:-1], a), 0.0, None) / 3600
        assert (plan.session_kw[i] * dt <= s.max_power_kw * plugged_h + TOL).all()
    for g in p.groups:
        members = [
            i for i, s in enumerate(p.sessions) if (s.charger_id, s.connector_id) in g.members
        ]
        assert (plan.session_kw[members].sum(axis=0) <= g.max_power_kw + TOL).all()
    b = p.battery
    if b is not None:
        assert (plan.soc_frac >= b.soc_min_frac - TOL).all()
        assert (plan.soc_frac <= b.soc_max_frac + TOL).all()
        assert (plan.battery_charge_kw <= b.max_charge_kw + TOL).all()
        assert (plan.battery_discharge_kw <= b.max_discharge_kw + TOL).all()
        stored = plan.soc_frac * b.capacity_kwh
        assert (plan.battery_renewable_kwh >= -TOL).all()
        assert (plan.battery_renewable_kwh <= stored + TOL).all()
        # stored energy follows charge and discharge
        delta = (
            b.charge_efficiency * plan.battery_charge_kw
            - plan.battery_discharge_kw / b.discharge_efficiency
        ) * dt
        np.testing.assert_allclose(np.diff(stored), delta, atol=1e-4)
    # energy never above the request; delivered + unmet = request
    want = np.array([s.energy_kwh for s in p.sessions])
    assert (plan.delivered_kwh <= want + TOL).all()
    np.testing.assert_allclose(plan.delivered_kwh + plan.unmet_kwh, want, atol=TOL)
    # renewable accounting adds up
    np.testing.assert_allclose(plan.ev_renewable_kw + plan.ev_grid_kw, ev, atol=TOL)
    assert ((plan.renewable_frac >= -TOL) & (plan.renewable_frac <= 1 + TOL)).all()
    np.testing.assert_allclose(
        plan.renewable_frac @ plan.delivered_kwh, plan.ev_renewable_kw @ dt, atol=1e-4
    )
    parts = plan.objective_parts
    np.testing.assert_allclose(
        parts["renewable_to_ev_kwh"] + parts["grid_to_ev_kwh"], ev @ dt, atol=1e-4
    )


def pd_td(seconds: np.ndarray):
    import pandas as pd

    return pd.to_timedelta(seconds, unit="s")


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_invariants_hold_on_random_problems(problem: Problem):
    plan = solve(problem)
    assert plan.status == "optimal"
    check(plan)


@settings(max_examples=25, deadline=None)
@given(problems())
def test_no_grid_means_no_grid_energy_into_cars(problem: Problem):
    gs = problem.grid_state
    no_grid = GridState(0.0, gs.export_limit_kw, gs.import_price_krw_per_kwh)
    battery = problem.battery
    if battery is not None:  # a battery holding only PV energy
        battery = BatteryState(**{**battery.__dict__, "renewable_frac": 1.0})
    plan = solve(Problem(**{**problem.__dict__, "grid_state": no_grid, "battery": battery}))
    check(plan)
    np.testing.assert_allclose(plan.ev_grid_kw, 0, atol=TOL)
    np.testing.assert_allclose(plan.renewable_frac[plan.delivered_kwh > 1e-6], 1, atol=1e-5)
