"""Dispatch LP: hand-computed small cases, bad input, station helpers."""

from __future__ import annotations

import dataclasses
import re
import time
import tomllib
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.stats import lognorm

from megastation.control.needs import ExpectedDemand, KindDemand
from megastation.control.problem import expected_session_needs
from megastation.core.config import parse_station, seeds_dir
from megastation.dispatch import (
    BatteryState,
    GridState,
    Policy,
    PowerGroup,
    Problem,
    ProblemError,
    SessionNeed,
    TimeGrid,
    connector_limit_kw,
    solve,
    station_battery,
    station_grid_state,
    station_groups,
    validate,
)

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)


def grid_state(n: int, limit_kw: float = 500.0, price: float | list[float] = 100.0) -> GridState:
    return GridState(
        import_limit_kw=limit_kw,
        export_limit_kw=0.0,
        import_price_krw_per_kwh=np.broadcast_to(np.asarray(price, dtype=float), (n,)).copy(),
    )


def car(sid: str, kwh: float, kw: float, dep_h: float, arr_h: float = 0.0, **kw_) -> SessionNeed:
    return SessionNeed(
        session_id=sid,
        charger_id=kw_.pop("charger_id", "C1"),
        connector_id=kw_.pop("connector_id", 1),
        arrival=T0 + arr_h * H,
        departure=T0 + dep_h * H,
        energy_kwh=kwh,
        max_power_kw=kw,
        **kw_,
    )


def battery(**kw) -> BatteryState:
    base = dict(
        capacity_kwh=10.0,
        soc_frac=0.0,
        soc_min_frac=0.0,
        soc_max_frac=1.0,
        max_charge_kw=20.0,
        max_discharge_kw=20.0,
        charge_efficiency=1.0,
        discharge_efficiency=1.0,
        terminal_value_krw_per_kwh=0.0,
    )
    base.update(kw)
    return BatteryState(**base)


def test_one_car_on_sun_only_charges_from_pv_as_early_as_possible():
    # 2 h in 15-min steps; PV 10 kW from 0:30 to 1:30; the car wants 5 kWh by 2:00.
    pv = np.array([0, 0, 10, 10, 10, 10, 0, 0.0])
    p = Problem(TimeGrid(T0, 8), pv, np.zeros(8), grid_state(8), sessions=(car("a", 5, 20, 2),))
    plan = solve(p)
    assert plan.status == "optimal"
    np.testing.assert_allclose(plan.session_kw[0], [0, 0, 10, 10, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(plan.grid_import_kw, 0, atol=1e-6)
    assert plan.delivered_kwh[0] == pytest.approx(5)
    assert plan.renewable_frac[0] == pytest.approx(1)
    assert plan.first_step().session_kw == {"a": pytest.approx(0)}


def test_cost_policy_charges_car_in_cheap_hours_re100_waits_for_sun():
    # 4 one-hour steps; price 200, 50, 200, 200; sun only in the last hour.
    pv = np.array([0, 0, 0, 30.0])
    p = Problem(
        TimeGrid(T0, 4, 3600),
        pv,
        np.zeros(4),
        grid_state(4, price=[200, 50, 200, 200]),
        sessions=(car("a", 20, 30, 4),),
    )
    re = solve(p)
    np.testing.assert_allclose(re.session_kw[0], [0, 0, 0, 20], atol=1e-6)
    assert re.renewable_frac[0] == pytest.approx(1)
    cost = solve(Problem(**{**p.__dict__, "policy": "cost"}))
    np.testing.assert_allclose(cost.session_kw[0], [0, 0, 0, 20], atol=1e-6)  # PV is free
    dear_sun = Problem(**{**p.__dict__, "pv_kw": np.zeros(4), "policy": "cost"})
    np.testing.assert_allclose(solve(dear_sun).session_kw[0], [0, 20, 0, 0], atol=1e-6)
    assert solve(dear_sun).objective_parts["energy_cost_krw"] == pytest.approx(20 * 50)


def test_battery_arbitrage_against_two_price_tariff():
    # 1-h steps, site load 10 kW; price 50 then 150. A 10 kWh lossless battery, empty.
    p = Problem(
        TimeGrid(T0, 4, 3600),
        np.zeros(4),
        np.full(4, 10.0),
        grid_state(4, price=[50, 50, 150, 150]),
        battery=battery(),
        policy="cost",
    )
    plan = solve(p)
    # Buy 20 + 10 kWh cheap, 20 - 10 kWh dear: 1500 + 1500 KRW instead of 4000.
    assert plan.objective_parts["energy_cost_krw"] == pytest.approx(3000)
    assert plan.battery_charge_kw[:2].sum() == pytest.approx(10)
    assert plan.battery_discharge_kw[2:].sum() == pytest.approx(10)
    np.testing.assert_allclose(plan.soc_frac[[0, 2, 4]], [0, 1, 0], atol=1e-6)
    # With 90 % each way a 50 -> 55 spread does not pay (50 / 0.81 > 55): battery idle.
    lossy = Problem(
        **{
            **p.__dict__,
            "grid_state": grid_state(4, price=[50, 50, 55, 55]),
            "battery": battery(charge_efficiency=0.9, discharge_efficiency=0.9),
        }
    )
    plan = solve(lossy)
    np.testing.assert_allclose(plan.battery_charge_kw, 0, atol=1e-6)
    assert plan.objective_parts["energy_cost_krw"] == pytest.approx(20 * 50 + 20 * 55)


def test_re100_does_not_fill_the_battery_from_the_night_grid_for_money():
    # Night 50 KRW, evening 150 KRW, an evening car and no PV. `cost` stores night energy
    # for the car; re100 buys it when the car comes: the same grid kWh into the car, and
    # a battery full of night energy is no room for PV the forecast missed.
    def plan(policy):
        return solve(
            Problem(
                TimeGrid(T0, 4, 3600),
                np.zeros(4),
                np.zeros(4),
                grid_state(4, price=[50, 50, 150, 150]),
                sessions=(car("ev", 10.0, 10.0, 4.0, arr_h=2.0),),
                battery=battery(),
                policy=policy,
            )
        )

    cost, re100 = plan("cost"), plan("re100")
    assert cost.battery_charge_kw[:2].sum() == pytest.approx(10)
    assert cost.objective_parts["energy_cost_krw"] == pytest.approx(500)
    np.testing.assert_allclose(re100.battery_charge_kw, 0, atol=1e-6)
    assert re100.objective_parts["energy_cost_krw"] == pytest.approx(1500)
    for p in (cost, re100):  # the car gets its energy either way, all from the grid
        assert p.delivered_kwh[0] == pytest.approx(10)
        assert p.objective_parts["grid_to_ev_kwh"] == pytest.approx(10)
    # a Policy without the premium is indifferent in tier 2 and arbitrages like cost
    flat = plan(dataclasses.replace(Policy.re100(), grid_to_battery_premium=0.0))
    assert flat.battery_charge_kw[:2].sum() == pytest.approx(10)


def test_an_uncertain_departure_charges_now_what_waiting_for_the_sun_would_risk():
    # Sun from the third hour. A car that surely stays 5 h waits for it (re100). A car
    # whose stay is lognormal with a 1 h median (sigma 0.5) is gone by then with 92 %
    # chance: its energy (priority 0.05: 5e4 points per kWh) is worth more now than the
    # grid kWh it costs (1e4), so it charges now.
    def plan(**stay):
        sess = car("ev", 10.0, 10.0, 5.0, priority=0.05, **stay)
        pv = np.array([0.0, 0.0, 50.0, 50.0, 50.0])
        return solve(Problem(TimeGrid(T0, 5, 3600), pv, np.zeros(5), grid_state(5), (sess,)))

    sure = plan()
    np.testing.assert_allclose(sure.session_kw[0, :2], 0.0, atol=1e-6)
    assert sure.objective_parts["grid_to_ev_kwh"] == pytest.approx(0.0, abs=1e-6)
    unsure = plan(stay_median_s=3600.0, stay_sigma=0.5)
    assert unsure.session_kw[0, 0] == pytest.approx(10.0)  # all of it in the first hour
    assert unsure.objective_parts["grid_to_ev_kwh"] == pytest.approx(10.0)
    # a car that is nearly sure to stay (median 50 h) waits for the sun again
    long = plan(stay_median_s=50 * 3600.0, stay_sigma=0.5)
    assert long.objective_parts["grid_to_ev_kwh"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ProblemError, match=r"sessions\[0\]\.stay_sigma"):
        plan(stay_median_s=3600.0, stay_sigma=-1.0)


def test_grid_limit_binds_and_plan_reports_what_the_car_gets():
    # 1 h, import limit 40 kW, site load 10 kW: the 50 kW car can only take 30 kW.
    sessions = (car("a", 40, 50, 1),)
    p = Problem(TimeGrid(T0, 4), np.zeros(4), np.full(4, 10.0), grid_state(4, 40), sessions)
    plan = solve(p)
    np.testing.assert_allclose(plan.session_kw[0], 30, atol=1e-6)
    np.testing.assert_allclose(plan.grid_import_kw, 40, atol=1e-6)
    assert plan.delivered_kwh[0] == pytest.approx(30)
    assert plan.unmet_kwh[0] == pytest.approx(10)
    assert plan.renewable_frac[0] == pytest.approx(0)


def test_shared_dc_cabinet_limits_the_sum_of_its_chargers():
    cab = PowerGroup("cabinet:A", (("DC1", 1), ("DC2", 1)), 150.0)
    sessions = (
        car("a", 30, 100, 1, charger_id="DC1"),
        car("b", 30, 100, 1, charger_id="DC2"),
    )
    p = Problem(TimeGrid(T0, 4), np.zeros(4), np.zeros(4), grid_state(4), sessions, groups=(cab,))
    plan = solve(p)
    total = plan.session_kw.sum(axis=0)
    assert (total <= 150 + 1e-6).all()
    assert total[0] == pytest.approx(150)  # as early as the cabinet allows
    np.testing.assert_allclose(plan.delivered_kwh, [30, 30], atol=1e-6)


def test_battery_renewable_content_follows_what_charged_it():
    # Sun in hour 0 charges the battery; the car comes at night and gets battery energy.
    pv = np.array([10.0, 0, 0, 0])
    sessions = (car("a", 8, 20, 4, arr_h=2),)
    p = Problem(
        TimeGrid(T0, 4, 3600),
        pv,
        np.zeros(4),
        grid_state(4),
        sessions,
        battery=battery(charge_efficiency=0.9, discharge_efficiency=1.0),
    )
    plan = solve(p)
    assert plan.battery_renewable_kwh[1] >= 8 - 1e-6  # PV in, at 90 %
    assert plan.delivered_kwh[0] == pytest.approx(8)
    assert plan.renewable_frac[0] == pytest.approx(1)
    assert plan.objective_parts["grid_to_ev_kwh"] == pytest.approx(0, abs=1e-6)
    # A battery full of grid energy counts as grid when it feeds the car.
    grey = Problem(
        **{**p.__dict__, "pv_kw": np.zeros(4), "battery": battery(soc_frac=1.0, renewable_frac=0.0)}
    )
    plan = solve(grey)
    assert plan.delivered_kwh[0] == pytest.approx(8)
    assert plan.renewable_frac[0] == pytest.approx(0, abs=1e-6)
    assert plan.objective_parts["grid_to_ev_kwh"] == pytest.approx(8)


def test_demand_charge_spreads_charging_below_the_months_peak():
    # Two cars, 20 kWh each over 2 h; demand charge makes a flat 20 kW import best.
    sessions = (car("a", 20, 50, 2), car("b", 20, 50, 2, charger_id="C2"))
    gs = GridState(500.0, 0.0, np.full(8, 100.0), 0.0, 2580.0, peak_so_far_kw=10.0)
    plan = solve(Problem(TimeGrid(T0, 8), np.zeros(8), np.zeros(8), gs, sessions, policy="cost"))
    assert plan.grid_import_kw.max() == pytest.approx(20, abs=1e-5)
    assert plan.objective_parts["demand_charge_krw"] == pytest.approx(2580 * 10, rel=1e-5)
    np.testing.assert_allclose(plan.delivered_kwh, [20, 20], atol=1e-6)


def test_departure_after_horizon_only_requires_what_cannot_wait():
    # Horizon 1 h; car leaves in 3 h at 10 kW max wanting 25 kWh: 5 kWh must come now.
    # No sun, grid only: re100 delivers just the 5 kWh it must.
    p = Problem(TimeGrid(T0, 4), np.zeros(4), np.zeros(4), grid_state(4), (car("a", 25, 10, 3),))
    plan = solve(p)
    assert plan.delivered_kwh[0] == pytest.approx(5, abs=1e-6)


def test_first_step_may_be_shorter_to_align_with_the_clock():
    now = T0 + timedelta(minutes=7)
    grid = TimeGrid.aligned(now, horizon_h=1)
    assert grid.first_step_s == 480
    np.testing.assert_allclose(grid.durations_h * 60, [8, 15, 15, 15, 15])  # covers 1 h
    assert grid.times[1] == T0 + timedelta(minutes=15)
    # A car plugged in for the remaining 8 min + 15 min wants 20 kWh at 40 kW max.
    s = SessionNeed("a", "C1", 1, T0, T0 + timedelta(minutes=30), 20.0, 40.0)
    plan = solve(Problem(grid, np.zeros(5), np.zeros(5), grid_state(5), (s,)))
    assert plan.first_step().duration_s == 480
    assert plan.delivered_kwh[0] == pytest.approx(40 * 23 / 60)


def test_min_power_rounds_in_first_step():
    s = car("a", 1.0, 7.0, 1, min_power_kw=4.0)  # 1 kWh over 1 h: any profile works
    plan = solve(Problem(TimeGrid(T0, 4), np.zeros(4), np.zeros(4), grid_state(4), (s,)))
    v = plan.first_step().session_kw["a"]
    assert v == 0 or v >= 4.0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(pv_kw=np.array([0, 1, np.nan, 0])), "pv_kw[2]"),
        (dict(site_load_kw=np.zeros(3)), "site_load_kw"),
        (dict(battery=battery(capacity_kwh=-1)), "battery.capacity_kwh"),
        (dict(battery=battery(soc_frac=0.05, soc_min_frac=0.1)), "battery.soc_frac"),
        (dict(sessions=(car("a", 5, 10, -0.5, arr_h=-1),)), "sessions[0].departure"),
        (dict(sessions=(car("a", -5, 10, 1),)), "sessions[0].energy_kwh"),
        (dict(policy="greenest"), "policy"),
    ],
)
def test_bad_input_names_the_field(change, field):
    base = dict(
        grid=TimeGrid(T0, 4),
        pv_kw=np.zeros(4),
        site_load_kw=np.zeros(4),
        grid_state=grid_state(4),
    )
    with pytest.raises(ProblemError, match=re.escape(field)):
        solve(Problem(**{**base, **change}))


def test_naive_start_is_refused():
    with pytest.raises(ProblemError, match=r"grid\.start"):
        TimeGrid(datetime(2026, 6, 15), 4)


def test_station_helpers_build_groups_prices_and_battery(station):
    groups = {g.name: g for g in station_groups(station)}
    assert groups["cabinet:CAB-A"].members == (("GJDG-DC-01", 1), ("GJDG-DC-02", 1))
    assert groups["cabinet:CAB-A"].max_power_kw == 300
    assert "charger:GJDG-AC-01" not in groups  # 2 x 7 kW fit its 14 kW
    assert connector_limit_kw(station, "GJDG-AC-01", 2) == 7
    grid = TimeGrid(T0, 96)  # 09:00 Seoul, summer
    gs = station_grid_state(station, grid)
    assert gs.import_price_krw_per_kwh[0] == pytest.approx(103.2)  # mid
    assert gs.import_price_krw_per_kwh[4] == pytest.approx(124.5)  # 10:00 peak
    assert gs.demand_charge_krw_per_kw == 2580
    b = station_battery(station, soc_frac=0.5)
    assert b.capacity_kwh == 500
    # An afternoon with three cars on the real station solves.
    sessions = (
        SessionNeed("s1", "GJDG-DC-01", 1, T0, T0 + H, 40, 200),
        SessionNeed("s2", "GJDG-DC-02", 1, T0, T0 + H, 40, 200),
        SessionNeed("s3", "GJDG-AC-01", 1, T0, T0 + 4 * H, 20, 7),
    )
    pv = np.clip(150 * np.sin(np.linspace(0, np.pi, 96)), 0, None)
    p = Problem(grid, pv, np.full(96, 8.0), gs, sessions, b, tuple(groups.values()))
    plan = solve(p)
    assert plan.status == "optimal"
    assert (plan.session_kw[:2].sum(axis=0) <= 300 + 1e-6).all()
    np.testing.assert_allclose(plan.delivered_kwh, [40, 40, 20], atol=1e-5)


@pytest.mark.parametrize("policy", ["re100", "cost"])
def test_grey_energy_stored_before_the_plan_is_not_dumped_into_export(policy):
    # Half full of grid energy, no cars, export allowed at price 0, stored energy worth
    # something at the end: exporting it gains nothing renewable, so it stays.
    n = 8
    gs = GridState(500.0, 100.0, np.full(n, 100.0), export_price_krw_per_kwh=0.0)
    p = Problem(
        TimeGrid(T0, n, 3600),
        np.zeros(n),
        np.full(n, 0.0),
        gs,
        (),
        battery=battery(soc_frac=0.5, renewable_frac=0.0, terminal_value_krw_per_kwh=50.0),
        policy=policy,
    )
    plan = solve(p)
    assert plan.grid_export_kw.max() == pytest.approx(0, abs=1e-6)
    assert plan.battery_discharge_kw.max() == pytest.approx(0, abs=1e-6)
    assert plan.soc_frac[-1] == pytest.approx(0.5)
    # ... nor into the site load when the grid is cheaper than what it is worth later
    later = battery(soc_frac=0.5, renewable_frac=0.0, terminal_value_krw_per_kwh=150.0)
    p2 = Problem(**{**p.__dict__, "site_load_kw": np.full(n, 2.0), "battery": later})
    assert solve(p2).battery_discharge_kw.max() == pytest.approx(0, abs=1e-6)


def test_grey_energy_stored_before_the_plan_counts_as_grid_into_a_car():
    # A car later in the plan: the old grey energy serves it, but is reported as grid
    # energy and is no better for tier 2 than importing.
    n = 4
    p = Problem(
        TimeGrid(T0, n, 3600),
        np.zeros(n),
        np.zeros(n),
        grid_state(n, price=[100.0, 100.0, 200.0, 200.0]),
        (car("a", 5, 10, 4, arr_h=2),),
        battery=battery(soc_frac=0.5, renewable_frac=0.0, terminal_value_krw_per_kwh=50.0),
    )
    plan = solve(p)
    assert plan.delivered_kwh[0] == pytest.approx(5)
    assert plan.objective_parts["grid_to_ev_kwh"] == pytest.approx(5)
    assert plan.battery_discharge_kw.sum() == pytest.approx(5)  # cheaper than evening import
    assert plan.grid_export_kw.max() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(
    ("policy", "price", "exports"),
    [("re100", 0.0, False), ("re100", 300.0, False), ("cost", 0.0, False), ("cost", 300.0, True)],
)
def test_stored_energy_goes_to_the_grid_only_when_export_pays_and_money_comes_first(
    policy, price, exports
):
    # A battery full of PV energy, no cars, no load: at a positive export price (above
    # what the energy is worth at the end) cost sells it; re100 never gives it away (#11)
    n = 8
    gs = GridState(500.0, 100.0, np.full(n, 100.0), export_price_krw_per_kwh=price)
    p = Problem(
        TimeGrid(T0, n, 3600),
        np.zeros(n),
        np.zeros(n),
        gs,
        (),
        battery=battery(soc_frac=0.9, renewable_frac=1.0, terminal_value_krw_per_kwh=50.0),
        policy=policy,
    )
    plan = solve(p)
    assert (plan.grid_export_kw.max() > 1.0) == exports
    if not exports:
        assert plan.battery_discharge_kw.max() == pytest.approx(0, abs=1e-6)


# --------------------------------------------------------------------------- station helpers


def _station_with(edit):
    """The seed station's TOML with ``edit(data)`` applied (a dict from tomllib)."""
    path = seeds_dir() / "gwangju-donggu.toml"
    data = tomllib.loads(path.read_text())
    edit(data)
    return parse_station(data, str(path))


def test_an_ac_charger_smaller_than_its_connectors_shares_its_limit():
    def edit(data):
        ac = next(c for c in data["chargers"] if c["id"] == "GJDG-AC-01")
        ac["max_power_kw"] = 10.0  # two 7 kW connectors on a 10 kW charger

    st = _station_with(edit)
    groups = {g.name: g for g in station_groups(st)}
    assert groups["charger:GJDG-AC-01"].members == (("GJDG-AC-01", 1), ("GJDG-AC-01", 2))
    assert groups["charger:GJDG-AC-01"].max_power_kw == 10.0
    assert "charger:GJDG-AC-02" not in groups
    cars = tuple(
        car(f"s{k}", 20.0, connector_limit_kw(st, "GJDG-AC-01", k), 4, charger_id="GJDG-AC-01",
            connector_id=k)
        for k in (1, 2)
    )  # fmt: skip
    p = Problem(TimeGrid(T0, 4, 3600), np.full(4, 50.0), np.zeros(4), grid_state(4),
                cars, groups=tuple(groups.values()))  # fmt: skip
    plan = solve(p)
    assert plan.ev_kw.max() <= 10.0 + 1e-6
    np.testing.assert_allclose(plan.delivered_kwh, [20.0, 20.0], atol=1e-6)


def test_unknown_connector_is_named(station):
    with pytest.raises(KeyError) as err:
        connector_limit_kw(station, "GJDG-AC-01", 3)
    assert f"no connector GJDG-AC-01/3 in {station.source}" in str(err.value)
    with pytest.raises(KeyError, match="no connector NOPE/1"):
        connector_limit_kw(station, "NOPE", 1)


def test_station_grid_state_and_battery_take_the_stations_figures():
    def edit(data):
        data["tariff"]["export_price_krw_per_kwh"] = 55.0
        data["battery"].update(charge_efficiency=0.9, discharge_efficiency=0.85)

    st = _station_with(edit)
    grid = TimeGrid(T0, 4)
    gs = station_grid_state(st, grid)
    # a month with no peak yet bills the first kW; a known peak is passed through
    assert gs.peak_so_far_kw == 0.0 and gs.export_price_krw_per_kwh == 55.0
    assert station_grid_state(st, grid, peak_so_far_kw=120.0).peak_so_far_kw == 120.0
    b = station_battery(st)
    assert (b.charge_efficiency, b.discharge_efficiency) == (0.9, 0.85)
    assert b.soc_frac == st.battery.initial_soc_frac == 0.5
    assert b.renewable_frac == 0.0  # stored energy of unknown origin counts as grey
    b = station_battery(st, soc_frac=0.2, renewable_frac=0.6)
    assert (b.soc_frac, b.renewable_frac) == (0.2, 0.6)
    assert station_battery(_station_with(lambda d: d.pop("battery"))) is None


# --------------------------------------------------------------------------- loads, set points


def test_uncontrolled_loads_add_to_the_site_load():
    p = Problem(TimeGrid(T0, 2, 3600), np.array([0.0, 30.0]), np.array([10.0, 10.0]),
                grid_state(2), uncontrolled_kw=np.array([20.0, 5.0]))  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.grid_import_kw, [30.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(plan.pv_used_kw, [0.0, 15.0], atol=1e-6)
    assert plan.soc_frac.tolist() == [0.0, 0.0, 0.0]  # no battery: empty, not NaN


def test_first_step_set_points_are_step_zero_in_the_device_convention():
    # Step 0: 40 kW of load at 200 KRW/kWh, served by the battery. Step 1: 100 kW of PV,
    # 20 kW into the battery (its limit), 30 kW exported (the limit), 50 kW curtailed.
    gs = GridState(import_limit_kw=500.0, export_limit_kw=30.0,
                   import_price_krw_per_kwh=np.array([200.0, 50.0]))  # fmt: skip
    b = battery(
        capacity_kwh=100.0, soc_frac=0.5, max_discharge_kw=100.0, terminal_value_krw_per_kwh=50.0
    )
    p = Problem(TimeGrid(T0, 2, 3600), np.array([0.0, 100.0]), np.array([40.0, 0.0]), gs,
                battery=b, policy="cost")  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.battery_discharge_kw, [40.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(plan.battery_charge_kw, [0.0, 20.0], atol=1e-6)
    np.testing.assert_allclose(plan.grid_export_kw, [0.0, 30.0], atol=1e-6)
    np.testing.assert_allclose(plan.curtailed_kw, [0.0, 50.0], atol=1e-6)
    assert plan.unmet_kwh.shape == (0,) and plan.objective_parts["new_peak_kw"] == 0.0
    sp = plan.first_step()
    assert sp.session_kw == {}
    assert sp.battery_net_charge_kw == pytest.approx(-40.0, abs=1e-6)
    assert sp.battery_setpoint_kw == pytest.approx(40.0, abs=1e-6)  # + discharge
    assert (sp.grid_import_kw, sp.grid_export_kw, sp.curtailed_kw) == pytest.approx(
        (0.0, 0.0, 0.0), abs=1e-6
    )


def test_first_step_keeps_power_of_a_car_without_a_minimum():
    p = Problem(TimeGrid(T0, 2, 3600), np.zeros(2), np.zeros(2), grid_state(2),
                (car("a", 2.0, 2.0, 2), car("b", 2.0, 2.0, 2, connector_id=2, min_power_kw=1.4)))  # fmt: skip
    plan = solve(p)
    plan = dataclasses.replace(plan, session_kw=np.array([[0.5, 1.5], [3.0, 1.5]]))
    assert plan.first_step().session_kw == {"a": 0.5, "b": 3.0}  # above its minimum: kept
    plan = dataclasses.replace(plan, session_kw=np.array([[0.5, 1.5], [0.5, 1.5]]))
    assert plan.first_step().session_kw == {"a": 0.5, "b": 0.0}


# --------------------------------------------------------------------------- tiers 4 and 1b

#: Only tier 4 (a kWh later in the stay costs more) and the unmet penalty.
EARLY_ONLY = Policy(grid_to_ev_weight_per_kwh=0.0, cost_weight_per_krw=0.0,
                    early_weight_per_kwh=1.0, chatter_weight_per_kw=0.0)  # fmt: skip


@pytest.mark.parametrize(
    ("arr_h", "dep_h", "kwh", "cost"),
    [
        # arrives 1:00, leaves 5:00: step 1's midpoint 1:30 is 1/8 through the stay
        (1.0, 5.0, 10.0, 1.0 * (0.5 + 0.125) * 10.0),
        # arrives 0:45: 2.5 kWh fit in step 0, whose midpoint is before the arrival (0)
        (0.75, 4.75, 2.5, 1.0 * (0.5 + 0.0) * 2.5),
        # plugged 2:00-2:06 only: step 2's midpoint is after the departure (1, not 5)
        (2.0, 2.1, 0.5, 1.0 * (0.5 + 1.0) * 0.5),
    ],
)
def test_early_charging_costs_the_progress_through_the_stay_at_the_step_midpoint(
    arr_h, dep_h, kwh, cost
):
    p = Problem(TimeGrid(T0, 6, 3600), np.zeros(6), np.zeros(6), grid_state(6),
                (car("s", kwh, 10.0, dep_h, arr_h),), policy=EARLY_ONLY)  # fmt: skip
    plan = solve(p)
    assert plan.delivered_kwh[0] == pytest.approx(kwh)
    assert plan.objective_parts["objective"] == pytest.approx(cost, rel=1e-9)


def test_uncertain_stay_costs_each_kwh_its_chance_that_the_car_has_left():
    # Only the unmet penalty (1 per kWh) and the leave risk: the unsure car (plugged in an
    # hour before the plan, lognormal stay, median 3 h, sigma 0.5) takes its 15 kWh as
    # early as it can; cars with a known departure cost nothing whatever their fields.
    pol = Policy(unmet_weight_per_kwh=1.0, grid_to_ev_weight_per_kwh=0.0,
                 cost_weight_per_krw=0.0, early_weight_per_kwh=0.0, chatter_weight_per_kw=0.0)  # fmt: skip
    cars = (
        car("unsure", 15.0, 10.0, 4, -1, stay_median_s=3 * 3600.0, stay_sigma=0.5),
        car("sure", 5.0, 10.0, 4, -1, connector_id=2),
        car("sigma_only", 5.0, 10.0, 4, -1, connector_id=3, stay_sigma=0.5),
        car("median_only", 5.0, 10.0, 4, -1, connector_id=4, stay_median_s=1800.0),
    )
    p = Problem(TimeGrid(T0, 8, 1800), np.zeros(8), np.zeros(8), grid_state(8), cars, policy=pol)
    plan = solve(p)
    np.testing.assert_allclose(plan.delivered_kwh, [15.0, 5.0, 5.0, 5.0], atol=1e-6)
    np.testing.assert_allclose(plan.session_kw[0, :3], [10.0, 10.0, 10.0], atol=1e-6)
    stay = lognorm(s=0.5, scale=3.0)  # hours
    # half-hour steps: 5 kWh in each of the first three, at midpoints 0:15, 0:45, 1:15
    risk = [1.0 - stay.sf(1.0 + 0.5 * t + 0.25) / stay.sf(1.0) for t in (0, 1, 2)]
    assert plan.objective_parts["objective"] == pytest.approx(5 * sum(risk), rel=1e-6)


# --------------------------------------------------------------------------- named policies


@pytest.mark.parametrize(("gain_krw_per_kwh", "green"), [(0.5, False), (0.08, True)])
def test_cost_policy_puts_money_first_and_the_green_label_second(gain_krw_per_kwh, green):
    # A car plugged 0-2 h wants 10 kWh; 10 kW of PV in hour 0 can go into it or be
    # exported at the import price of hour 1 plus a small gain. Half a won per kWh is
    # money: export and charge from the grid later; under a tenth of a won (the
    # tier-2 weight of a grid kWh under cost), the green kWh wins the near-tie.
    gs = GridState(import_limit_kw=500.0, export_limit_kw=50.0,
                   import_price_krw_per_kwh=np.array([100.0, 100.0]),
                   export_price_krw_per_kwh=100.0 + gain_krw_per_kwh)  # fmt: skip
    p = Problem(TimeGrid(T0, 2, 3600), np.array([10.0, 0.0]), np.zeros(2), gs,
                (car("s", 10.0, 10.0, 2),), policy="cost")  # fmt: skip
    plan = solve(p)
    assert plan.renewable_frac[0] == pytest.approx(1.0 if green else 0.0, abs=1e-6)
    assert plan.grid_export_kw[0] == pytest.approx(0.0 if green else 10.0, abs=1e-6)


def test_re100_counts_on_less_of_the_expected_cars_than_cost():
    # re100 hedges against expected cars that do not come; cost plans for all of them.
    rates = [0.0] * 24
    rates[18] = 2.0  # two DC cars expected at 18:00 local
    demand = ExpectedDemand({"dc": KindDemand(tuple(rates), 30.0, 40.0, 100.0, 400.0)}, "test")
    grid = TimeGrid(T0 + 3 * H, 12, 3600)  # 12:00 .. 24:00 in Seoul
    kwh = {
        name: expected_session_needs(demand, grid, "Asia/Seoul", Policy.of(name).expected_share)[1]
        for name in ("re100", "cost")
    }
    assert 0.0 < kwh["re100"] < kwh["cost"]


# --------------------------------------------------------------------------- battery size, chatter


def test_a_one_kwh_battery_takes_part_and_a_zero_kwh_one_does_not():
    # Load 1 kW for an hour at 200 KRW/kWh: a full 1 kWh battery serves 0.95 kWh of it.
    tiny = battery(capacity_kwh=1.0, soc_frac=1.0, discharge_efficiency=0.95)
    p = Problem(TimeGrid(T0, 1, 3600), np.zeros(1), np.ones(1), grid_state(1, price=200.0),
                battery=tiny, policy="cost")  # fmt: skip
    plan = solve(p)
    assert plan.battery_discharge_kw[0] == pytest.approx(0.95, rel=1e-6)
    assert plan.grid_import_kw[0] == pytest.approx(0.05, rel=1e-6)
    # At a negative price, cycling grid energy through a battery would burn it for money;
    # a battery of 0 kWh holds nothing and takes no part.
    none = battery(capacity_kwh=0.0, max_charge_kw=50.0, max_discharge_kw=50.0,
                   charge_efficiency=0.9, discharge_efficiency=0.9)  # fmt: skip
    p = Problem(TimeGrid(T0, 2, 3600), np.zeros(2), np.full(2, 10.0), grid_state(2, price=-50.0),
                battery=none, policy="cost")  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.grid_import_kw, [10.0, 10.0], atol=1e-6)
    assert plan.battery_charge_kw.max() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("per_session", "chatter_kw"), [(False, 20.0 + 15.0), (True, 20.0)])
def test_chatter_reports_each_cars_move_from_its_current_power(per_session, chatter_kw):
    # Two cars that need full power for both steps: one charging at 10 kW now goes to 30,
    # the other at 20 kW now goes to 5. Per car, the first step moves 20 and 15 kW; per
    # session, only rises count (20 kW, then none).
    pol = dataclasses.replace(Policy.re100(), chatter_per_session=per_session)
    cars = (
        car("a", 60.0, 30.0, 2, current_power_kw=10.0),
        car("b", 10.0, 5.0, 2, connector_id=2, current_power_kw=20.0),
    )
    p = Problem(TimeGrid(T0, 2, 3600), np.zeros(2), np.zeros(2), grid_state(2), cars, policy=pol)
    plan = solve(p)
    np.testing.assert_allclose(plan.session_kw, [[30.0, 30.0], [5.0, 5.0]], atol=1e-6)
    assert plan.objective_parts["chatter_kw"] == pytest.approx(chatter_kw, abs=1e-6)
    # without a chatter weight there is nothing to report
    quiet = dataclasses.replace(pol, chatter_weight_per_kw=0.0)
    plan = solve(dataclasses.replace(p, policy=quiet))
    assert plan.objective_parts["chatter_kw"] == 0.0


# --------------------------------------------------------------------------- tier 5 (chatter)

#: Only chatter (weight 1 per kW of change) and the unmet penalty.
CHATTER_ONLY = Policy(grid_to_ev_weight_per_kwh=0.0, cost_weight_per_krw=0.0,
                      early_weight_per_kwh=0.0, chatter_weight_per_kw=1.0)  # fmt: skip


@pytest.mark.parametrize(("per_session", "per_car_kw"), [(False, 15.0), (True, 10.0)])
def test_chatter_costs_every_change_of_total_car_power(per_session, per_car_kw):
    # The import limit forces the car to 10, 20, 10 kW (40 kWh in 3 h) from 25 kW now:
    # total car power moves 15 + 10 + 10 kW. Per car: the first step's move (15 kW), or
    # per session every rise (10 kW).
    lim = np.array([10.0, 20.0, 10.0])
    gs = GridState(import_limit_kw=lim, export_limit_kw=0.0, import_price_krw_per_kwh=np.zeros(3))
    pol = dataclasses.replace(CHATTER_ONLY, chatter_per_session=per_session)
    p = Problem(TimeGrid(T0, 3, 3600), np.zeros(3), np.zeros(3), gs,
                (car("s", 40.0, 30.0, 3, current_power_kw=25.0),), policy=pol)  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.session_kw[0], lim, atol=1e-6)
    assert plan.objective_parts["objective"] == pytest.approx(35.0 + per_car_kw, abs=1e-6)


@pytest.mark.parametrize(
    ("load", "moves_kw"), [([10.0, 0.0], 10.0), ([10.0, 0.0, 10.0, 5.0], 10.0 + 10.0 + 5.0)]
)
def test_chatter_costs_every_change_of_battery_power(load, moves_kw):
    # No grid: a full battery serves the load, so its power follows the load exactly;
    # each kWh discharged also costs the chatter weight (as wear of the set point).
    n = len(load)
    gs = GridState(import_limit_kw=0.0, export_limit_kw=0.0, import_price_krw_per_kwh=np.zeros(n))
    p = Problem(TimeGrid(T0, n, 3600), np.zeros(n), np.array(load), gs,
                battery=battery(capacity_kwh=100.0, soc_frac=1.0), policy=CHATTER_ONLY)  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.battery_discharge_kw, load, atol=1e-6)
    assert plan.objective_parts["objective"] == pytest.approx(moves_kw + sum(load), abs=1e-6)


# --------------------------------------------------------------------------- priority, horizon


def test_priority_decides_who_gets_scarce_energy():
    cars = (car("low", 10.0, 10.0, 1), car("high", 10.0, 10.0, 1, connector_id=2, priority=2.0))
    p = Problem(TimeGrid(T0, 1, 3600), np.zeros(1), np.zeros(1), grid_state(1, limit_kw=10.0),
                cars)  # fmt: skip
    np.testing.assert_allclose(solve(p).delivered_kwh, [0.0, 10.0], atol=1e-6)


@pytest.mark.parametrize("policy", ["re100", "cost"])
def test_pv_now_goes_to_the_car_that_matters_more_even_if_both_could_wait(policy):
    # Both cars stay long after the 1 h horizon (nothing is due within it): 10 kWh of PV
    # now is still worth giving away, to the car with the higher priority.
    cars = (car("low", 40.0, 10.0, 6), car("high", 40.0, 10.0, 6, connector_id=2, priority=2.0))
    gs = GridState(import_limit_kw=0.0, export_limit_kw=10.0,
                   import_price_krw_per_kwh=np.full(1, 100.0), export_price_krw_per_kwh=10.0)  # fmt: skip
    p = Problem(TimeGrid(T0, 1, 3600), np.full(1, 10.0), np.zeros(1), gs, cars, policy=policy)
    plan = solve(p)
    np.testing.assert_allclose(plan.delivered_kwh, [0.0, 10.0], atol=1e-6)


def test_cost_policy_buys_now_for_a_car_that_could_wait_only_below_the_mean_price():
    # The car may finish after the horizon; a kWh it still wants then is valued at half a
    # grid kWh at the mean price (0.5 x 100 KRW): 40 KRW now is worth it, 160 is not.
    p = Problem(TimeGrid(T0, 2, 3600), np.zeros(2), np.zeros(2),
                grid_state(2, price=[40.0, 160.0]), (car("s", 20.0, 10.0, 10),), policy="cost")  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.session_kw[0], [10.0, 0.0], atol=1e-6)


def test_green_terminal_value_keeps_pv_in_the_battery_instead_of_exporting_it():
    # 50 kWh of PV in the last step: exported at 100 KRW (10 points under re100), or
    # stored (45 kWh at 0.9) for 0.5 x a tier-2 kWh x 0.95 each (4,750 points).
    pol = dataclasses.replace(Policy.re100(), green_terminal_frac=0.5)
    gs = GridState(import_limit_kw=0.0, export_limit_kw=50.0,
                   import_price_krw_per_kwh=np.full(1, 100.0), export_price_krw_per_kwh=100.0)  # fmt: skip
    b = battery(capacity_kwh=100.0, max_charge_kw=50.0, charge_efficiency=0.9,
                discharge_efficiency=0.95)  # fmt: skip
    p = Problem(TimeGrid(T0, 1, 3600), np.full(1, 50.0), np.zeros(1), gs, battery=b, policy=pol)
    plan = solve(p)
    assert plan.battery_charge_kw[0] == pytest.approx(50.0, abs=1e-6)
    assert plan.objective_parts["objective"] == pytest.approx(-45.0 * 1e4 * 0.5 * 0.95, rel=1e-9)


# --------------------------------------------------------------------------- every precondition


def _valid(**change) -> Problem:
    """A problem that reaches every check of validate (battery, two cars, a group)."""
    gs = change.pop("gs", {})
    b = change.pop("bat", {})
    cars = change.pop("cars", (car("a", 5.0, 10.0, 1.0), car("b", 5.0, 10.0, 2.0, connector_id=2)))
    base = dict(
        grid=TimeGrid(T0, 4),
        pv_kw=np.zeros(4),
        site_load_kw=np.zeros(4),
        grid_state=dataclasses.replace(grid_state(4), **gs),
        sessions=cars,
        battery=battery(**{"soc_min_frac": 0.1, "soc_max_frac": 0.9, "soc_frac": 0.5, **b}),
        groups=(PowerGroup("g", (("C1", 1), ("C1", 2)), 15.0),),
    )
    return Problem(**{**base, **change})


def _bad_car(**kw) -> tuple[SessionNeed, SessionNeed]:
    arr, dep = kw.pop("arr_h", 0.0), kw.pop("dep_h", 2.0)
    b = dataclasses.replace(car("b", 5.0, 10.0, dep, arr_h=arr, connector_id=2), **kw)
    return (car("a", 5.0, 10.0, 1.0), b)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(pv_kw=np.zeros(3)), "pv_kw: must have one value per step (4), got shape (3,)"),
        (dict(pv_kw=np.array([0, 1, NAN, 0])), "pv_kw[2]: must be finite, got nan"),
        (dict(pv_kw=[0.0, None, 0.0, 0.0]), "pv_kw[1]: must be finite, got nan"),
        (dict(site_load_kw=np.array([0, -2, 0, 0])), "site_load_kw[1]: must be >= 0, got -2"),
        (dict(pv_p10_kw=np.array([0, 0, 0, INF])), "pv_p10_kw[3]: must be finite, got inf"),
        (dict(uncontrolled_kw=np.array([-1, 0, 0, 0])), "uncontrolled_kw[0]: must be >= 0, got -1"),
        (
            dict(gs=dict(import_limit_kw=-5.0)),
            "grid_state.import_limit_kw[0]: must be >= 0, got -5",
        ),
        (dict(gs=dict(export_limit_kw=-1.0)), "grid_state.export_limit_kw: must be >= 0, got -1"),
        (
            dict(gs=dict(import_price_krw_per_kwh=np.array([100, NAN, 100, 100]))),
            "grid_state.import_price_krw_per_kwh[1]: must be finite, got nan",
        ),
        (
            dict(gs=dict(export_price_krw_per_kwh=INF)),
            "grid_state.export_price_krw_per_kwh: must be finite, got inf",
        ),
        (
            dict(gs=dict(demand_charge_krw_per_kw=-1.0)),
            "grid_state.demand_charge_krw_per_kw: must be >= 0, got -1",
        ),
        (dict(gs=dict(peak_so_far_kw=-3.0)), "grid_state.peak_so_far_kw: must be >= 0, got -3"),
        (dict(bat=dict(capacity_kwh=-1.0)), "battery.capacity_kwh: must be >= 0, got -1"),
        (dict(bat=dict(soc_min_frac=1.5)), "battery.soc_min_frac: must be <= 1, got 1.5"),
        (dict(bat=dict(soc_min_frac=-0.1)), "battery.soc_min_frac: must be >= 0, got -0.1"),
        (dict(bat=dict(soc_max_frac=1.2)), "battery.soc_max_frac: must be <= 1, got 1.2"),
        (
            dict(bat=dict(soc_min_frac=0.6, soc_max_frac=0.4)),
            "battery.soc_min_frac: must not exceed soc_max_frac",
        ),
        (dict(bat=dict(soc_frac=1.1)), "battery.soc_frac: must be <= 1, got 1.1"),
        (
            dict(bat=dict(soc_frac=0.05)),
            "battery.soc_frac: must lie in [soc_min_frac, soc_max_frac] = [0.1, 0.9], got 0.05",
        ),
        (
            dict(bat=dict(soc_frac=0.95)),
            "battery.soc_frac: must lie in [soc_min_frac, soc_max_frac] = [0.1, 0.9], got 0.95",
        ),
        (dict(bat=dict(max_charge_kw=-1.0)), "battery.max_charge_kw: must be >= 0, got -1"),
        (dict(bat=dict(max_discharge_kw=-2.0)), "battery.max_discharge_kw: must be >= 0, got -2"),
        (dict(bat=dict(charge_efficiency=0.0)), "battery.charge_efficiency: must be > 0, got 0"),
        (
            dict(bat=dict(discharge_efficiency=1.05)),
            "battery.discharge_efficiency: must be <= 1, got 1.05",
        ),
        (dict(bat=dict(renewable_frac=1.5)), "battery.renewable_frac: must be <= 1, got 1.5"),
        (
            dict(bat=dict(terminal_value_krw_per_kwh=NAN)),
            "battery.terminal_value_krw_per_kwh: must be finite, got nan",
        ),
        (
            dict(cars=(car("a", 5.0, 10.0, 1.0), car("a", 5.0, 10.0, 1.0, connector_id=2))),
            "sessions[1].session_id: duplicate 'a'",
        ),
        (
            dict(cars=_bad_car(arr_h=-1.0, dep_h=-0.5)),
            "sessions[1].departure: 2026-06-14T23:30:00+00:00 is not after the grid start "
            "2026-06-15T00:00:00+00:00",
        ),
        (
            dict(cars=_bad_car(arr_h=-1.0, dep_h=0.0)),
            "sessions[1].departure: 2026-06-15T00:00:00+00:00 is not after the grid start "
            "2026-06-15T00:00:00+00:00",
        ),
        (
            dict(cars=_bad_car(arr_h=2.0, dep_h=1.0)),
            "sessions[1].departure: must be after arrival 2026-06-15T02:00:00+00:00",
        ),
        (
            dict(cars=_bad_car(arr_h=1.0, dep_h=1.0)),
            "sessions[1].departure: must be after arrival 2026-06-15T01:00:00+00:00",
        ),
        (dict(cars=_bad_car(energy_kwh=-5.0)), "sessions[1].energy_kwh: must be >= 0, got -5"),
        (dict(cars=_bad_car(max_power_kw=-1.0)), "sessions[1].max_power_kw: must be >= 0, got -1"),
        (dict(cars=_bad_car(min_power_kw=11.0)), "sessions[1].min_power_kw: must be <= 10, got 11"),
        (dict(cars=_bad_car(min_power_kw=-1.0)), "sessions[1].min_power_kw: must be >= 0, got -1"),
        (dict(cars=_bad_car(priority=-1.0)), "sessions[1].priority: must be >= 0, got -1"),
        (
            dict(cars=_bad_car(current_power_kw=-1.0)),
            "sessions[1].current_power_kw: must be >= 0, got -1",
        ),
        (dict(cars=_bad_car(stay_sigma=-0.5)), "sessions[1].stay_sigma: must be >= 0, got -0.5"),
        (
            dict(cars=_bad_car(stay_median_s=0.5)),
            "sessions[1].stay_median_s: must be >= 1, got 0.5",
        ),
        (
            dict(groups=(PowerGroup("g", (), 1.0), PowerGroup("h", (), np.array([5, 5, -1, 5])))),
            "groups[1].max_power_kw[2]: must be >= 0, got -1",
        ),
        (dict(policy="greenest"), "policy: must be 're100', 'cost' or a Policy, got 'greenest'"),
    ],
)
def test_every_bad_field_is_named_with_its_rule(change, message):
    with pytest.raises(ProblemError) as err:
        solve(_valid(**change))
    assert str(err.value) == message


def test_a_naive_arrival_is_named():
    naive = dataclasses.replace(car("b", 5.0, 10.0, 2.0), arrival=datetime(2026, 6, 15))
    with pytest.raises(ProblemError, match=r"^sessions\[1\]\.arrival/departure: "):
        solve(_valid(cars=(car("a", 5.0, 10.0, 1.0), naive)))


@pytest.mark.parametrize(
    "change",
    [
        dict(gs=dict(import_price_krw_per_kwh=np.array([-20.0, 0.0, 100.0, 100.0]))),
        dict(gs=dict(export_price_krw_per_kwh=-5.0, export_limit_kw=0.0, import_limit_kw=0.0)),
        dict(bat=dict(terminal_value_krw_per_kwh=-10.0)),
        dict(bat=dict(soc_frac=0.1 - 1e-10)),
        dict(bat=dict(soc_frac=0.9 + 1e-10)),
        dict(bat=dict(soc_min_frac=0.0, soc_max_frac=1.0, soc_frac=1.0, renewable_frac=1.0)),
        dict(bat=dict(soc_min_frac=0.5, soc_max_frac=0.5, soc_frac=0.5, capacity_kwh=0.0)),
        dict(bat=dict(charge_efficiency=1.0, discharge_efficiency=1.0)),
        dict(cars=_bad_car(min_power_kw=10.0, stay_median_s=1.0, stay_sigma=0.0, energy_kwh=0.0)),
        dict(cars=_bad_car(arr_h=-1.0, dep_h=0.25)),
        dict(policy=Policy.cost()),
    ],
)
def test_values_on_the_edge_of_each_rule_are_accepted(change):
    assert solve(_valid(**change)).status == "optimal"


def test_a_group_with_no_car_plugged_in_does_not_hide_the_next_group():
    idle = PowerGroup("idle", (("C9", 1),), 5.0)
    busy = PowerGroup("busy", (("C1", 1), ("C1", 2)), 15.0)
    cars = (car("a", 20.0, 10.0, 2), car("b", 20.0, 10.0, 2, connector_id=2))
    p = Problem(TimeGrid(T0, 2, 3600), np.zeros(2), np.zeros(2), grid_state(2), cars,
                groups=(idle, busy))  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.ev_kw, [15.0, 15.0], atol=1e-6)
    np.testing.assert_allclose(plan.delivered_kwh.sum(), 30.0, atol=1e-6)


@pytest.mark.parametrize(
    ("policy", "price", "exports"),
    [
        ("cost", 0.0, False),  # a gift, even when the stored energy is "worth" less than 0
        ("cost", 0.5, True),  # half a won pays
        (Policy(grid_to_ev_weight_per_kwh=1.0, cost_weight_per_krw=1.0), 30.0, True),
    ],
)
def test_stored_energy_export_rule_at_its_edges(policy, price, exports):
    # Money weighs as much as the green label: it comes first, and stored energy may be
    # sold. At a zero export price it never leaves, even valued at -10 KRW per kWh.
    n = 2
    gs = GridState(500.0, 100.0, np.full(n, 100.0), export_price_krw_per_kwh=price)
    b = battery(soc_frac=0.9, renewable_frac=1.0, terminal_value_krw_per_kwh=-10.0)
    p = Problem(TimeGrid(T0, n, 3600), np.zeros(n), np.zeros(n), gs, battery=b, policy=policy)
    plan = solve(p)
    assert (plan.grid_export_kw.max() > 1.0) == exports
    if not exports:
        assert plan.battery_discharge_kw.max() == pytest.approx(0, abs=1e-6)


def test_the_plan_reports_its_flows_and_timings():
    p = Problem(TimeGrid(T0, 2, 3600), np.array([0.0, 30.0]), np.array([10.0, 10.0]),
                grid_state(2))  # fmt: skip
    t0 = time.perf_counter()
    plan = solve(p)
    wall_s = time.perf_counter() - t0
    assert plan.build_time_s > 0.0 and plan.solve_time_s > 0.0
    assert plan.build_time_s + plan.solve_time_s <= wall_s
    np.testing.assert_allclose(plan.flows_kw["gr_load"], [10.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(plan.flows_kw["pv_load"], [0.0, 10.0], atol=1e-6)
    np.testing.assert_allclose(plan.flows_kw["curt"], [0.0, 20.0], atol=1e-6)


def test_validate_returns_the_sessions_figures_in_order():
    seoul = timezone(timedelta(hours=9))
    a = car("a", 5.0, 10.0, 1.0, current_power_kw=3.0)
    b = dataclasses.replace(
        car(
            "b", 7.0, 11.0, 2.0, connector_id=2, priority=2.0, stay_median_s=3600.0, stay_sigma=0.5
        ),
        arrival=(T0 - H).astimezone(seoul),
    )
    figs = validate(_valid(cars=(a, b)))
    assert figs.arrival_s.tolist() == [T0.timestamp(), (T0 - H).timestamp()]
    assert figs.departure_s.tolist() == [(T0 + H).timestamp(), (T0 + 2 * H).timestamp()]
    assert figs.energy_kwh.tolist() == [5.0, 7.0]
    assert figs.max_power_kw.tolist() == [10.0, 11.0]
    assert figs.priority.tolist() == [1.0, 2.0]
    assert figs.current_power_kw.tolist() == [3.0, 0.0]
    assert figs.stay_sigma.tolist() == [0.0, 0.5]
    assert np.isnan(figs.stay_median_s[0]) and figs.stay_median_s[1] == 3600.0


def test_a_nan_stay_median_is_named():
    with pytest.raises(ProblemError, match=r"^sessions\[1\]\.stay_median_s: must be finite"):
        validate(_valid(cars=_bad_car(stay_median_s=NAN)))
