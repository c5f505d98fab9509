"""The evening reserve (megastation.control.reserve; dispatch.md, "Session 7"): sized by the
evening's need and capped by the room the forecast PV surplus leaves; kept by the plan
against money, given up for a car's energy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from megastation.control.needs import ExpectedDemand, KindDemand
from megastation.control.reserve import (
    burst_hours,
    cars_mean_kw,
    evening_reserve,
    reserve_floor_kwh,
    reserve_weight_per_kwh,
)
from megastation.dispatch import BatteryState, GridState, Problem, SessionNeed, TimeGrid, solve

TZ = "Asia/Seoul"
# 00:00 local (UTC+9) on a summer day; hourly steps over 24 h
START = datetime(2026, 6, 29, 15, 0, tzinfo=UTC)
GRID = TimeGrid(START, 24, step_s=3600)
HOURS = np.arange(24)
LOAD = np.full(24, 10.0)


def battery(soc: float = 0.5) -> BatteryState:
    return BatteryState(
        capacity_kwh=500.0, soc_frac=soc, soc_min_frac=0.1, soc_max_frac=0.9,
        max_charge_kw=250.0, max_discharge_kw=250.0,
        charge_efficiency=1.0, discharge_efficiency=1.0,
    )  # fmt: skip


def pv(kw: float) -> np.ndarray:
    """Sun 08:00-16:00 local at ``kw``."""
    return np.where((HOURS >= 8) & (HOURS < 16), kw, 0.0)


def evening_cars(kwh: float) -> list[SessionNeed]:
    """Cars expected 19:00-21:00 local."""
    a = START + timedelta(hours=19)
    return [SessionNeed("expected:dc:19", "expected:dc:19", 0, a, a + timedelta(hours=2), kwh, 300)]


def test_a_surplus_smaller_than_the_battery_leaves_room_for_a_reserve():
    r = evening_reserve(GRID, pv(45.0), LOAD, evening_cars(300.0), battery(0.5), TZ)
    assert r.until == START + timedelta(hours=16)  # the last sunny hour ends at 16:00
    assert r.surplus_kwh == pytest.approx(35.0 * 8)
    assert r.room_kwh == pytest.approx(400.0 - 280.0)  # usable 0.1-0.9 of 500 kWh
    # the evening's cars come as one 300 kW burst (+ the site load): above a level of 0
    # all of their energy is needed; above the month's peak so far, part of it
    assert r.evening_kwh == pytest.approx(300.0)
    paid = evening_reserve(GRID, pv(45.0), LOAD, evening_cars(300.0), battery(), TZ, level_kw=155)
    assert paid.evening_kwh == pytest.approx(300.0 * (1 - 155 / 310))
    assert r.kwh == pytest.approx(120.0)
    floor = reserve_floor_kwh(GRID, r, battery(0.5))
    assert floor[:16] == pytest.approx(50.0 + 120.0)  # kept until the sun is gone
    assert floor[16:] == pytest.approx(50.0)  # then free for the evening


def test_a_surplus_that_fills_the_battery_holds_no_reserve():
    r = evening_reserve(GRID, pv(150.0), LOAD, evening_cars(300.0), battery(0.5), TZ)
    assert r.surplus_kwh > 400.0
    assert r.kwh == 0.0  # PV is never spilled to keep it


def test_the_reserve_is_no_more_than_the_evening_needs_nor_than_is_stored():
    small = evening_reserve(GRID, pv(20.0), LOAD, evening_cars(30.0), battery(0.5), TZ)
    assert small.kwh == pytest.approx(30.0)  # the evening's need
    low = evening_reserve(GRID, pv(20.0), LOAD, evening_cars(300.0), battery(0.2), TZ)
    assert low.kwh == pytest.approx(50.0)  # kept, never bought: 0.2 x 500 - the floor


def test_only_cars_plugged_in_count_against_the_surplus():
    # a car here now wanting 400 kWh by 16:00 takes 25 kW of the sun; cars merely
    # expected during the day may not come (bursts, not a mean): they leave the surplus
    here = [SessionNeed("a", "c1", 1, START, START + timedelta(hours=16), 400.0, 100.0)]
    day = START + timedelta(hours=8)
    expected = [SessionNeed("expected:dc:8", "expected:dc:8", 0, day, day + timedelta(hours=8),
                            400.0, 300.0, priority=0.005)]  # fmt: skip
    alone = evening_reserve(GRID, pv(55.0), LOAD, evening_cars(300.0), battery(), TZ)
    fed = evening_reserve(GRID, pv(55.0), LOAD, here + evening_cars(300.0), battery(), TZ)
    hoped = evening_reserve(GRID, pv(55.0), LOAD, expected + evening_cars(300.0), battery(), TZ)
    assert alone.surplus_kwh == pytest.approx(45.0 * 8)
    assert fed.surplus_kwh == pytest.approx(20.0 * 8) and fed.kwh > alone.kwh
    assert hoped.surplus_kwh == pytest.approx(alone.surplus_kwh)
    assert cars_mean_kw(GRID, here)[:16] == pytest.approx(25.0)


def test_no_reserve_after_the_sun_is_gone_today():
    late = TimeGrid(START + timedelta(hours=19), 24, step_s=3600)
    r = evening_reserve(late, np.roll(pv(45.0), -19), LOAD, [], battery(), TZ)
    assert r.until is None and r.kwh == 0.0


def test_the_weight_is_the_demand_charge_a_kwh_saves_in_a_burst():
    dc = KindDemand((1.0,) * 24, dwell_min=30.0, energy_kwh=40.0, car_power_kw=150.0,
                    max_power_kw=600.0)  # fmt: skip
    ac = KindDemand((1.0,) * 24, dwell_min=300.0, energy_kwh=20.0, car_power_kw=7.0,
                    max_power_kw=42.0)  # fmt: skip
    assert burst_hours(ExpectedDemand({"ac": ac, "dc": dc}, "test")) == 0.5
    assert burst_hours(None) == 0.0
    assert reserve_weight_per_kwh(0.1, 2580.0, 0.5) == pytest.approx(516.0)


def night_problem(floor: np.ndarray | None, weight: float, need_kwh: float, limit_kw: float):
    """A night car (00:00-02:00 local) and a battery at SoC 0.5 under re100 in a fresh month:
    without a reserve the battery shaves the car's import (a new demand peak)."""
    from megastation.dispatch import Policy

    g = TimeGrid(START, 8, step_s=900)
    car = SessionNeed("car", "c1", 1, START, START + timedelta(hours=2), need_kwh, 200.0)
    return Problem(
        grid=g, pv_kw=np.zeros(8), site_load_kw=np.zeros(8),
        grid_state=GridState(
            import_limit_kw=limit_kw, export_limit_kw=0.0,
            import_price_krw_per_kwh=np.full(8, 70.0), demand_charge_krw_per_kw=2580.0,
        ),
        sessions=(car,), battery=battery(0.5), soc_floor_kwh=floor,
        policy=Policy(**{**Policy.re100().__dict__, "reserve_short_weight_per_kwh": weight}),
    )  # fmt: skip


def test_the_plan_keeps_the_reserve_against_a_peak_worth_less_than_a_burst():
    free = solve(night_problem(None, 0.0, 100.0, 400.0))
    assert free.battery_discharge_kw.sum() > 1.0  # it shaves the night car's peak
    w = reserve_weight_per_kwh(0.1, 2580.0, 0.5)  # a burst of 30 min is worth more
    held = solve(night_problem(np.full(8, 250.0), w, 100.0, 400.0))
    assert held.soc_frac.min() * 500.0 == pytest.approx(250.0, abs=1e-3)
    assert held.objective_parts["reserve_short_kwh"] == pytest.approx(0.0, abs=1e-6)
    assert held.unmet_kwh.sum() == pytest.approx(0.0, abs=1e-6)


def test_the_reserve_gives_way_to_a_cars_energy():
    # the grid gives 20 kW: the car's 100 kWh in 2 h need 30 kW more from the battery
    plan = solve(night_problem(np.full(8, 250.0), 2e4, 100.0, 20.0))
    assert plan.unmet_kwh.sum() == pytest.approx(0.0, abs=1e-6)
    assert plan.objective_parts["reserve_short_kwh"] == pytest.approx(60.0, abs=1e-3)


def built(station, policy: str, sun_kw: float, soc: float = 0.5):
    """The problem of a plan at 00:00 local on the seed station (500 kWh, SoC 0.5) with
    ``sun_kw`` of PV 08:00-16:00 and the fleet profile's cars to come."""
    from megastation.control.gather import SiteReadings
    from megastation.control.needs import profile_demand
    from megastation.control.problem import (
        CarSessions,
        build_problem,
        controller_policy,
        plan_grid,
    )
    from megastation.control.pv import PvForecast
    from megastation.core.devices import BatteryReading

    grid = plan_grid(START, station, 6.0, 3600)
    local_h = np.array([(t.hour + 9) % 24 for t in grid.times.to_pydatetime()])
    sun = np.where((local_h >= 8) & (local_h < 16), sun_kw, 0.0)
    site = SiteReadings(BatteryReading(soc, 0.0, START), None, None, 400.0, "config", policy)
    cars = CarSessions([], [], {}, np.zeros(grid.n_steps), [], 0.0)
    return build_problem(
        grid=grid, station=station, site=site, pv=PvForecast(sun, None, None), cars=cars,
        ev_kw_total=0.0, policy=controller_policy(policy), expected=profile_demand(station),
        green_frac=0.0, peak_kw=0.0,
    )  # fmt: skip


def test_a_plan_keeps_the_reserve_only_where_the_forecast_surplus_leaves_room(station):
    cap = station.battery.capacity_kwh
    floor_kwh = station.battery.soc_min_frac * cap
    dull = built(station, "re100", 40.0)  # ~250 kWh of surplus: 175 kWh of room
    r = dull.reserve
    assert r is not None and 0 < r.kwh <= r.room_kwh + 1e-9
    assert r.room_kwh == pytest.approx(
        (station.battery.soc_max_frac - station.battery.soc_min_frac) * cap - r.surplus_kwh
    )
    floor = dull.problem.soc_floor_kwh
    assert floor is not None and floor.max() == pytest.approx(floor_kwh + r.kwh)
    pol = dull.problem.policy
    assert 0 < pol.reserve_short_weight_per_kwh < pol.grid_to_ev_weight_per_kwh
    plan = solve(dull.problem)  # the cars before the evening do not get it
    held = plan.soc_frac[1:][floor > floor_kwh + 1e-9] * cap
    assert held.size and held.min() >= floor_kwh + r.kwh - 1e-6
    sunny = built(station, "re100", 200.0)  # a surplus that fills the battery
    assert sunny.reserve.kwh == 0.0 and sunny.problem.soc_floor_kwh is None
    cost = built(station, "cost", 40.0).problem  # both policies keep it (session 8)
    assert cost.soc_floor_kwh is not None and cost.soc_floor_kwh.max() == pytest.approx(floor.max())
    # a stored kWh for the burst weighs what it saves in demand charge, in each policy's
    # points: 10 x re100's under cost (1 point per KRW against 0.1)
    assert cost.policy.reserve_short_weight_per_kwh == pytest.approx(
        10.0 * pol.reserve_short_weight_per_kwh
    )
