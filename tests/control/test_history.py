"""Expected cars from history by weekday/weekend, hour and kind; a mean for heavy tails."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from megastation.control import history
from megastation.control.needs import expected_sessions
from megastation.core.clock import SimClock
from megastation.store import Store, records

TZ = "Asia/Seoul"
MONDAY = datetime(2026, 6, 14, 15, 0, tzinfo=UTC)  # Monday 2026-06-15 00:00 in Seoul
H = timedelta(hours=1)
D = timedelta(days=1)


def _week(weekday_cars=4, weekend_cars=1, energy=30.0):
    """Two weeks of DC cars at 09:00 local: ``weekday_cars`` a weekday, ``weekend_cars``
    on Saturdays and Sundays."""
    out = []
    for d in range(14):
        day = MONDAY + d * D
        n = weekend_cars if d % 7 >= 5 else weekday_cars
        out += [("dc", day + 9 * H, day + 9 * H + 30 * timedelta(minutes=1), energy)] * n
    return out


def test_weekday_and_weekend_arrivals_are_learned_apart(station):
    got = history.learn_expected_demand_by_daytype(_week(), station, MONDAY + 14 * D)
    kd = got.kinds["dc"]
    assert got.source == "history"
    assert kd.arrivals_per_h[9] == pytest.approx(4.0)
    assert kd.weekend_arrivals_per_h[9] == pytest.approx(1.0)
    assert sum(kd.arrivals_per_h) == pytest.approx(4.0)
    # the plan uses the weekend profile on a Saturday, the weekday one on a Monday
    sat = MONDAY + 5 * D
    edges = [sat + i * H for i in range(13)]
    (s,) = expected_sessions(got, edges, TZ)
    assert s[4] == pytest.approx(30.0)  # 1 car x 30 kWh
    mon = MONDAY + 7 * D
    (s,) = expected_sessions(got, [mon + i * H for i in range(13)], TZ)
    assert s[4] == pytest.approx(120.0)


def test_history_of_weekdays_only_serves_weekends_too(station):
    hist = [s for s in _week() if (s[1] - MONDAY).days % 7 < 5]
    got = history.learn_expected_demand_by_daytype(hist, station, MONDAY + 5 * D)
    assert got.kinds["dc"].weekend_arrivals_per_h == got.kinds["dc"].arrivals_per_h


def test_energy_per_car_is_the_mean_not_the_median_on_heavy_tails():
    rng = np.random.default_rng(3)
    e = np.exp(rng.normal(np.log(8.0), 0.9, 400))
    est = history.energy_per_car_kwh(e)
    assert statistics.median(e) < 0.75 * e.mean()  # the median under-states the total
    assert est == pytest.approx(e.mean(), rel=0.03)  # winsorised at q99: within 3 %
    assert est <= e.mean()
    assert history.energy_per_car_kwh([1.0, 2.0, 30.0]) == pytest.approx(11.0)  # n < 100
    assert history.energy_per_car_kwh([]) == 0.0


def test_too_little_history_falls_back(station, tmp_path):
    assert history.learn_expected_demand_by_daytype(_week()[:3], station, MONDAY + D) is None
    store = Store(tmp_path / "h.db", SimClock(MONDAY + 14 * D))
    records.register_station_chargers(store, station)
    sentinel = object()
    assert (
        history.expected_demand_for_station(store, station, MONDAY, fallback=lambda: sentinel)
        is sentinel
    )
    # with history in the store it is learned from it
    for _, a, b, e in _week():
        tx = records.start_transaction(
            store, "GJDG-DC-01", connector_id=1, id_token="T", auth_status="Accepted",
            meter_start_wh=0.0, ts=a,
        )  # fmt: skip
        records.stop_transaction(
            store, "GJDG-DC-01", tx.transaction_id, meter_stop_wh=e * 1000, ts=b, reason="Local"
        )
    got = history.expected_demand_for_station(
        store, station, MONDAY + 14 * D, fallback=lambda: sentinel
    )
    store.close()
    assert got.source == "history" and got.kinds["dc"].energy_kwh == pytest.approx(30.0)


def _stored(store, sessions):
    for charger, a, b, e in sessions:
        tx = records.start_transaction(
            store, charger, connector_id=1, id_token="T", auth_status="Accepted",
            meter_start_wh=0.0, ts=a,
        )  # fmt: skip
        records.stop_transaction(
            store, charger, tx.transaction_id, meter_stop_wh=e * 1000, ts=b, reason="Local"
        )


def test_one_read_of_history_learns_what_two_did(station, tmp_path):
    """Demand reads the history once per relearn (records.closed_sessions, along its
    partial index) and learns the same defaults and expected cars as two reads did: the
    newest n of a longer read are the read of n, also where n cuts through sessions that
    started at the same time."""
    from megastation.control.demand import Demand
    from megastation.control.needs import learn_defaults_from_store

    store = Store(tmp_path / "h.db", SimClock(MONDAY + 14 * D))
    records.register_station_chargers(store, station)
    rng = np.random.default_rng(5)
    chargers = [c.id for c in station.chargers]
    sessions = []
    for i in range(300):
        a = MONDAY + timedelta(minutes=int(rng.integers(0, 14 * 24 * 60)))
        stay = timedelta(minutes=int(rng.integers(10, 300)))
        sessions.append((chargers[i % len(chargers)], a, a + stay, float(rng.uniform(2, 60))))
    sessions.append((chargers[0], sessions[7][1], sessions[7][2], 11.0))  # a tie in start
    _stored(store, sessions)
    newest = records.closed_sessions(store, limit=1000)
    tie = next(i for i in range(len(newest) - 1) if newest[i][1] == newest[i + 1][1])
    for limit in (1, 50, tie + 1, 299, 301, 400):
        assert newest[:limit] == records.closed_sessions(store, limit=limit)
    now = MONDAY + 14 * D
    kind = {c.id: c.kind.lower() for c in station.chargers}
    demand = Demand(store, station)
    assert demand.learned(now) == learn_defaults_from_store(store, kind, TZ)
    assert demand.expected(now) == history.expected_demand_for_station(store, station, now)
    store.close()
