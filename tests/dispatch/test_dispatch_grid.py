"""Uneven time grids: fine steps first, coarse steps late in the horizon."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from megastation.dispatch import (
    BatteryState,
    GridState,
    Policy,
    Problem,
    ProblemError,
    SessionNeed,
    TimeGrid,
    solve,
)

T0 = datetime(2026, 6, 15, 1, 0, tzinfo=UTC)  # 10:00 in Seoul


def test_aligned_coarse_layout_on_the_hour():
    g = TimeGrid.aligned(T0, 24, 900, coarse_after_h=6)
    assert g.n_steps == 24 + 18
    d = g.durations_s
    assert (d[:24] == 900).all() and (d[24:] == 3600).all()
    assert g.edges_s[-1] == 24 * 3600
    assert g.times[24] == T0 + timedelta(hours=6)


def test_aligned_coarse_layout_within_a_step():
    now = T0 + timedelta(minutes=7)
    g = TimeGrid.aligned(now, 24, 900, coarse_after_h=6)
    d = g.durations_s
    assert d[0] == 480  # 10:07-10:15, then the 15-minute clock
    k = g.n_fine
    # fine steps up to the first hour edge at or after now + 6 h (16:07 -> 17:00)
    assert g.times[k] == T0 + timedelta(hours=7)
    assert (d[1:k] == 900).all() and (d[k:] == 3600).all()
    # coarse steps start on the hour, the horizon ends on the hour at or after now + 24 h
    assert all(t.minute == 0 and t.second == 0 for t in g.times[k:])
    assert g.end == T0 + timedelta(hours=25)
    # energy bookkeeping: durations add up to the edges
    np.testing.assert_allclose(np.cumsum(d), g.edges_s[1:])


def test_aligned_without_coarse_is_the_fine_grid():
    now = T0 + timedelta(minutes=7)
    assert TimeGrid.aligned(now, 24, 900) == TimeGrid.aligned(now, 24, 900, coarse_after_h=None)
    assert TimeGrid.aligned(now, 4, 900, coarse_after_h=6).uniform  # fine part covers it


def test_fine_and_mean_of_fine():
    g = TimeGrid(T0 + timedelta(minutes=10), 4, 900, 300, 3600, 2)
    assert list(g.durations_s) == [300, 900, 3600, 3600]
    f = g.fine()
    assert f.n_steps == 2 + 8 and f.edges_s[-1] == g.edges_s[-1]
    vals = np.arange(f.n_steps, dtype=float)
    m = g.mean_of_fine(vals)
    np.testing.assert_allclose(m, [0, 1, np.mean([2, 3, 4, 5]), np.mean([6, 7, 8, 9])])


@pytest.mark.parametrize(
    "kwargs",
    [dict(coarse_step_s=1000, n_fine=1), dict(coarse_step_s=3600, n_fine=0), dict(n_fine=2)],
)
def test_bad_coarse_grids_are_refused(kwargs):
    with pytest.raises(ProblemError, match=r"grid\.(coarse_step_s|n_fine)"):
        TimeGrid(T0, 4, 900, **kwargs)


def _problem(grid: TimeGrid, sessions, *, pv_kw=0.0, limit_kw=100.0) -> Problem:
    n = grid.n_steps
    return Problem(
        grid=grid,
        pv_kw=np.full(n, pv_kw),
        site_load_kw=np.full(n, 5.0),
        grid_state=GridState(limit_kw, 0.0, np.full(n, 100.0)),
        sessions=tuple(sessions),
        battery=BatteryState(100.0, 0.5, 0.1, 0.9, 50.0, 50.0),
    )


def _car(sid, arr_h, dep_h, kwh, kw=50.0, **kw_args):
    return SessionNeed(
        sid, sid, 1, T0 + timedelta(hours=arr_h), T0 + timedelta(hours=dep_h), kwh, kw, **kw_args
    )


def test_car_leaving_inside_a_coarse_step_gets_only_its_share():
    # coarse steps from 1 h; the car leaves 15 min into the 2-3 h step and wants more than
    # it can get: at 10 kW it gets 1 h + 1 h + 0.25 h = 22.5 kWh, no more
    grid = TimeGrid(T0, 4 + 3, 900, None, 3600, 4)
    plan = solve(_problem(grid, [_car("a", -1, 2.25, 100.0, kw=10.0)]))
    e = plan.session_kw[0] * grid.durations_h
    np.testing.assert_allclose(e[:4].sum(), 10.0, atol=1e-6)
    np.testing.assert_allclose(e[4], 10.0, atol=1e-6)
    np.testing.assert_allclose(e[5], 2.5, atol=1e-6)  # 15 of 60 minutes plugged in
    assert e[6] <= 1e-9
    np.testing.assert_allclose(plan.delivered_kwh[0], 22.5, atol=1e-6)
    # the step's power is its average over the whole hour
    np.testing.assert_allclose(plan.session_kw[0][5], 2.5, atol=1e-6)


def test_energy_balance_with_uneven_durations():
    grid = TimeGrid(T0 + timedelta(minutes=5), 3 + 4, 900, 600, 3600, 3)
    plan = solve(_problem(grid, [_car("a", -1, 3.5, 60.0), _car("b", 0.5, 5.0, 40.0)], pv_kw=30.0))
    dt = grid.durations_h
    b = plan.problem.battery
    stored = plan.soc_frac * b.capacity_kwh
    delta = (
        b.charge_efficiency * plan.battery_charge_kw
        - plan.battery_discharge_kw / b.discharge_efficiency
    ) * dt
    np.testing.assert_allclose(np.diff(stored), delta, atol=1e-5)
    np.testing.assert_allclose(plan.delivered_kwh, plan.session_kw @ dt, atol=1e-9)
    np.testing.assert_allclose(plan.delivered_kwh, [60.0, 40.0], atol=1e-5)


def test_fine_and_coarse_grids_agree_on_the_first_step():
    # the demand is flat after the first hours: the coarse tail changes nothing now
    now = T0 + timedelta(minutes=7)
    cars = [
        _car("a", -1, 1.0, 30.0, current_power_kw=20.0),
        _car("b", -0.5, 8.0, 40.0),
        _car("c", -2, 20.0, 80.0, kw=22.0),
    ]
    fine = TimeGrid.aligned(now, 24, 900)
    coarse = TimeGrid.aligned(now, 24, 900, coarse_after_h=6)
    assert coarse.n_steps < fine.n_steps / 2
    pf = solve(_problem(fine, cars, limit_kw=60.0))
    pc = solve(_problem(coarse, cars, limit_kw=60.0))
    a, b = pf.first_step(), pc.first_step()
    assert a.duration_s == b.duration_s == 480
    for sid in a.session_kw:
        assert a.session_kw[sid] == pytest.approx(b.session_kw[sid], abs=1e-4)
    assert a.battery_net_charge_kw == pytest.approx(b.battery_net_charge_kw, abs=1e-4)
    assert a.grid_import_kw == pytest.approx(b.grid_import_kw, abs=1e-4)
    np.testing.assert_allclose(pf.delivered_kwh, pc.delivered_kwh, atol=1e-4)


# --------------------------------------------------------------------------- aligned grids


def test_aligned_horizon_on_the_clock_has_no_extra_step():
    g = TimeGrid.aligned(T0, 1.0)  # 10:00 exactly, 1 h: four 15-min steps to 11:00
    assert g.n_steps == 4 and g.end == T0 + timedelta(hours=1)
    one = TimeGrid.aligned(T0, 0.25)
    assert one.n_steps == 1 and one.end == T0 + timedelta(minutes=15)
    short = TimeGrid.aligned(T0 + timedelta(minutes=7), 0.1)  # shorter than the first step
    assert short.n_steps == 1 and short.durations_s.tolist() == [480.0]


def test_aligned_with_a_single_coarse_step():
    # fine to 12:00 (2 h), then one hourly step to 13:00
    g = TimeGrid.aligned(T0, 3.0, coarse_after_h=2.0, coarse_step_s=3600)
    assert g.n_steps == 9 and g.n_fine == 8
    assert g.durations_s.tolist() == [900.0] * 8 + [3600.0]


def test_aligned_refuses_a_coarse_step_off_the_fine_clock():
    with pytest.raises(ProblemError) as err:
        TimeGrid.aligned(T0, 6.0, coarse_after_h=2.0, coarse_step_s=1000)
    assert str(err.value) == "grid.coarse_step_s: must be a multiple of step_s=900, got 1000"


# --------------------------------------------------------------------------- step length


def _hourly_day(step_s: int, policy) -> Problem:
    """Four hours with everything in play (PV, load, cars, a part-green battery, export,
    wear, the demand charge above this month's peak), on steps of ``step_s``; inputs are
    constant within each hour."""
    k = 3600 // step_s
    hourly = lambda v: np.repeat(np.asarray(v, dtype=float), k)  # noqa: E731
    n = 4 * k
    gs = GridState(
        import_limit_kw=hourly([80.0, 80.0, 80.0, 70.0]),
        export_limit_kw=20.0,
        import_price_krw_per_kwh=hourly([60.0, 90.0, 150.0, 220.0]),
        export_price_krw_per_kwh=40.0,
        demand_charge_krw_per_kw=300.0,
        peak_so_far_kw=30.0,
    )
    cars = (
        _car("a", -1, 2, 70.0, kw=50.0),
        _car("b", 1, 4, 90.0, kw=40.0),
        SessionNeed("c", "c", 2, T0 + timedelta(hours=2), T0 + timedelta(hours=4), 30.0, 22.0),
        SessionNeed("d", "d", 3, T0 + timedelta(hours=3), T0 + timedelta(hours=4), 60.0, 60.0),
    )
    return Problem(
        grid=TimeGrid(T0, n, step_s),
        pv_kw=hourly([10.0, 90.0, 160.0, 0.0]),
        site_load_kw=hourly([45.0, 10.0, 25.0, 40.0]),
        grid_state=gs,
        sessions=cars,
        battery=BatteryState(150.0, 0.4, 0.1, 0.9, 60.0, 70.0, 0.92, 0.9, renewable_frac=0.5),
        policy=policy,
    )


@pytest.mark.parametrize("base", ["re100", "cost"])
@pytest.mark.parametrize("wear", [0.0, 25.0])
def test_the_same_hours_cost_the_same_on_15_min_and_hourly_steps(base, wear):
    # With inputs constant within each hour, averaging a 15-min plan over each hour gives
    # an hourly plan of the same cost, and an hourly plan is a 15-min one: both optima
    # are equal. Every term per kWh must therefore scale with the step length.
    pol = dataclasses.replace(
        Policy.of(base), early_weight_per_kwh=0.0, chatter_weight_per_kw=0.0,
        battery_wear_krw_per_kwh=wear,
    )  # fmt: skip
    hour = solve(_hourly_day(3600, pol))
    quarter = solve(_hourly_day(900, pol))
    assert quarter.objective_parts["objective"] == pytest.approx(
        hour.objective_parts["objective"], rel=1e-7
    )


def test_load_shed_costs_the_same_on_15_min_and_hourly_steps():
    # 50 kW of load on a 30 kW grid for an hour: 20 kWh shed, whatever the step length.
    def plan(step_s):
        n = 3600 // step_s
        gs = GridState(30.0, 0.0, np.full(n, 100.0))
        return solve(Problem(TimeGrid(T0, n, step_s), np.zeros(n), np.full(n, 50.0), gs))

    hour, quarter = plan(3600), plan(900)
    for p in (hour, quarter):
        assert p.objective_parts["load_shed_kwh"] == pytest.approx(20.0)
        assert p.objective_parts["energy_cost_krw"] == pytest.approx(30.0 * 100.0)
    assert quarter.objective_parts["objective"] == pytest.approx(
        hour.objective_parts["objective"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((4, 900, None, None, None), None),
        ((0, 900), "grid.n_steps: must be >= 1, got 0"),
        ((4, 0), "grid.step_s: must be > 0, got 0"),
        ((4, 900, 0), "grid.first_step_s: must be in (0, step_s=900], got 0"),
        ((4, 900, 901), "grid.first_step_s: must be in (0, step_s=900], got 901"),
        ((4, 900, 900), None),
        ((4, 1, 1), None),
        ((4, 900, None, 600, 2), "grid.coarse_step_s: must be a multiple of step_s=900, got 600"),
        ((4, 900, None, 1000, 2), "grid.coarse_step_s: must be a multiple of step_s=900, got 1000"),
        ((4, 900, None, 900, 2), None),
        (
            (4, 900, None, 3600, None),
            "grid.n_fine: must be in [1, n_steps=4] with coarse_step_s, got None",
        ),
        (
            (4, 900, None, 3600, 0),
            "grid.n_fine: must be in [1, n_steps=4] with coarse_step_s, got 0",
        ),
        (
            (4, 900, None, 3600, 5),
            "grid.n_fine: must be in [1, n_steps=4] with coarse_step_s, got 5",
        ),
        ((4, 900, None, 3600, 1), None),
        ((4, 900, None, 3600, 4), None),
        ((4, 900, None, None, 2), "grid.n_fine: needs coarse_step_s"),
    ],
)
def test_every_grid_rule_is_named(args, message):
    if message is None:
        assert TimeGrid(T0, *args).n_steps == 4
        return
    with pytest.raises(ProblemError) as err:
        TimeGrid(T0, *args)
    assert str(err.value) == message


def test_a_local_start_is_stored_as_utc():
    local = datetime(2026, 6, 15, 10, 0, tzinfo=timezone(timedelta(hours=9)))
    g = TimeGrid(local, 4)
    assert g.start == T0 and g.start.utcoffset() == timedelta(0)


@pytest.mark.parametrize("case", ["curtail", "old_grey_to_car"])
def test_more_terms_cost_the_same_on_15_min_and_hourly_steps(case):
    # PV that can go nowhere is curtailed (a chatter-weighted cost per kWh); grey energy
    # stored before the plan going into a car costs a tier-2 kWh. Per kWh, on any step.
    def plan(step_s):
        n = 3600 // step_s
        if case == "curtail":
            pol = Policy(chatter_weight_per_kw=1.0)
            return solve(Problem(TimeGrid(T0, n, step_s), np.full(n, 40.0), np.zeros(n),
                                 GridState(0.0, 0.0, np.full(n, 100.0)), policy=pol))  # fmt: skip
        pol = dataclasses.replace(
            Policy.re100(), early_weight_per_kwh=0.0, chatter_weight_per_kw=0.0
        )
        b = BatteryState(100.0, 0.5, 0.0, 1.0, 50.0, 50.0, 1.0, 1.0, terminal_value_krw_per_kwh=0.0)
        return solve(Problem(TimeGrid(T0, n, step_s), np.zeros(n), np.zeros(n),
                             GridState(0.0, 0.0, np.full(n, 100.0)), (_car("a", 0, 1, 20.0),),
                             battery=b, policy=pol))  # fmt: skip

    hour, quarter = plan(3600), plan(900)
    assert hour.objective_parts["objective"] > 0.0
    assert quarter.objective_parts["objective"] == pytest.approx(
        hour.objective_parts["objective"], rel=1e-9
    )
