"""Cars still to come: expected demand from history or the fleet profile, in the plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from megastation.control.needs import (
    EXPECTED_PRIORITY,
    ExpectedDemand,
    KindDemand,
    expected_demand_from_profile,
    expected_sessions,
    learn_expected_demand,
)
from megastation.dispatch import (
    BatteryState,
    GridState,
    Policy,
    Problem,
    SessionNeed,
    TimeGrid,
    solve,
)

TZ = "Asia/Seoul"
NOON = datetime(2026, 6, 15, 3, 0, tzinfo=UTC)  # 12:00 in Seoul, a Monday
H = timedelta(hours=1)


def evening_dc(cars: float = 2.0) -> ExpectedDemand:
    rates = [0.0] * 24
    rates[18] = cars
    return ExpectedDemand({"dc": KindDemand(tuple(rates), 30.0, 40.0, 100.0, 400.0)}, "test")


def test_expected_sessions_per_kind_and_hour_after_the_first_step():
    edges = [NOON + i * H for i in range(13)]  # 12:00 .. 24:00 local, hourly steps
    got = expected_sessions(evening_dc(), edges, TZ)
    assert len(got) == 1
    sid, kind, arr, dep, kwh, kw, prio = got[0]
    assert kind == "dc" and sid.startswith("expected:dc:")
    assert arr == NOON + 6 * H and dep == NOON + 7 * H + timedelta(minutes=30)
    assert kwh == pytest.approx(80.0) and kw == pytest.approx(200.0)  # 2 cars x 40 kWh
    # re100 counts on a share of it (a hedge against cars that do not come)
    share = Policy.re100().expected_share
    assert 0 < share < 1 and Policy.cost().expected_share == 1.0
    got = expected_sessions(evening_dc(), edges, TZ, share=share)
    assert got[0][4] == pytest.approx(80.0 * share)
    assert prio == EXPECTED_PRIORITY
    # a car expected within the first step is not planned (it is seen when it plugs in)
    assert expected_sessions(evening_dc(), [NOON + 6 * H, NOON + 7 * H, NOON + 8 * H], TZ) == []


def test_learned_from_history_and_from_the_fleet_profile(station):
    day = timedelta(days=1)
    start = NOON + 6 * H  # 18:00 local
    hist = [("dc", start - k * day, start - k * day + 40 * timedelta(minutes=1), 30.0)
            for k in range(1, 5) for _ in range(3)]  # fmt: skip
    got = learn_expected_demand(hist, station, NOON)
    assert got is not None and got.source == "history"
    assert got.kinds["dc"].arrivals_per_h[18] == pytest.approx(12 / 3.75)  # 12 cars, 3.75 days
    assert got.kinds["dc"].energy_kwh == 30.0 and got.kinds["dc"].dwell_min == 40.0
    assert learn_expected_demand(hist[:3], station, NOON) is None  # too little history

    from megastation.core.fleet import load_fleet_profile

    profile = load_fleet_profile()
    prof = expected_demand_from_profile(station, profile)
    assert prof.source == "fleet profile" and set(prof.kinds) == {"ac", "dc"}
    assert prof == expected_demand_from_profile(station, profile)  # seeded: the same
    dc = prof.kinds["dc"]
    n_dc = sum(c.connectors for c in station.chargers if c.kind.lower() == "dc")
    rates = sum(profile.kinds["DC"].arrivals_per_connector_per_h) * n_dc
    # busy connectors turn cars away: fewer arrive than the rates say, but most do
    assert 0.6 * rates < sum(dc.arrivals_per_h) < rates
    # what cars can take by departure, not what drivers want (station default 43 kWh)
    assert 10.0 < dc.energy_kwh < station.defaults["dc"].energy_kwh
    assert dc.dwell_min == pytest.approx(profile.kinds["DC"].dwell_median_min, rel=0.15)


def _problem(sessions, export_kw=100.0):
    n = 12
    pv = np.zeros(n)
    pv[:3] = 100.0  # sunny noon, nothing plugged in
    gs = GridState(500.0, export_kw, np.full(n, 100.0))
    bat = BatteryState(200.0, 0.1, 0.1, 0.9, 100.0, 100.0, 1.0, 1.0, 0.0, 0.0)
    return Problem(TimeGrid(NOON, n, 3600), pv, np.zeros(n), gs, tuple(sessions), bat)


def _expected(demand):
    edges = [NOON + i * H for i in range(13)]
    return [
        SessionNeed(sid, sid, 0, a, d, kwh, kw, priority=p)
        for sid, _k, a, d, kwh, kw, p in expected_sessions(demand, edges, TZ)
    ]


def test_pv_is_stored_for_expected_evening_cars_instead_of_exported():
    alone = solve(_problem([]))
    assert alone.grid_export_kw.sum() > 250  # nothing stored is worth anything
    plan = solve(_problem(_expected(evening_dc())))
    assert plan.battery_charge_kw[:3].sum() == pytest.approx(80.0, abs=1e-3)
    assert plan.objective_parts["grid_to_ev_kwh"] == pytest.approx(0, abs=1e-6)  # no grid


def test_expected_cars_never_take_energy_a_real_car_needs():
    real = SessionNeed("a", "C1", 1, NOON + 6 * H, NOON + 8 * H, 80.0, 100.0)
    plan = solve(_problem([real, *_expected(evening_dc())]))
    i = plan.session_ids.index("a")
    assert plan.delivered_kwh[i] == pytest.approx(80.0)
    assert plan.renewable_frac[i] == pytest.approx(1.0)  # the stored PV goes to the real car
