"""Simulated car visits: seeded, physical, never two cars on one connector."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from megastation.core.fleet import CarVisit, generate_visits, load_fleet_profile

# Midnight in Seoul on a Monday.
DAY0 = datetime(2026, 6, 14, 15, 0, tzinfo=UTC)


def test_same_seed_same_visits_other_seed_other_visits(station):
    a = generate_visits(station, DAY0, DAY0 + timedelta(days=1), seed=7)
    b = generate_visits(station, DAY0, DAY0 + timedelta(days=1), seed=7)
    c = generate_visits(station, DAY0, DAY0 + timedelta(days=1), seed=8)
    assert a == b
    assert a != c
    assert all(isinstance(v, CarVisit) for v in a)


def test_no_two_visits_overlap_on_a_connector(station):
    visits = generate_visits(station, DAY0, DAY0 + timedelta(days=7), seed=1)
    by_connector = defaultdict(list)
    for v in visits:
        assert v.arrival < v.departure
        by_connector[(v.charger_id, v.connector_id)].append(v)
    for vs in by_connector.values():
        vs.sort(key=lambda v: v.arrival)
        for prev, nxt in itertools.pairwise(vs):
            assert prev.departure <= nxt.arrival


def test_visits_use_real_connectors_and_lie_in_the_window(station):
    end = DAY0 + timedelta(days=2)
    visits = generate_visits(station, DAY0, end, seed=3)
    connectors = {(c.id, n) for c in station.chargers for n in c.connector_ids}
    assert visits == sorted(visits, key=lambda v: v.arrival)
    for v in visits:
        assert (v.charger_id, v.connector_id) in connectors
        assert DAY0 <= v.arrival < end
        assert v.arrival.tzinfo is not None and v.arrival.utcoffset() == timedelta(0)


def test_daily_counts_are_plausible(station):
    days = 14
    visits = generate_visits(station, DAY0, DAY0 + timedelta(days=days), seed=11)
    kind = {c.id: c.kind for c in station.chargers}
    dc = [v for v in visits if kind[v.charger_id] == "DC"]
    ac = [v for v in visits if kind[v.charger_id] == "AC"]
    # 4 DC connectors at ~8-14 sessions a day each; 6 AC connectors at ~1-3 a day each.
    assert 4 * 6 <= len(dc) / days <= 4 * 15
    assert 6 * 0.8 <= len(ac) / days <= 6 * 3.5
    # Fast-charger stays are short, AC stays long.
    dc_dwell = sorted(v.dwell_min for v in dc)[len(dc) // 2]
    ac_dwell = sorted(v.dwell_min for v in ac)[len(ac) // 2]
    assert 20 <= dc_dwell <= 60
    assert 120 <= ac_dwell <= 720
    # Few cars arrive between 2 and 5 in the morning (local time).
    tz = station.site.tz
    night = [v for v in visits if 2 <= v.arrival.astimezone(tz).hour < 5]
    assert len(night) < 0.05 * len(visits)


def test_energy_wanted_fits_in_the_battery(station):
    visits = generate_visits(station, DAY0, DAY0 + timedelta(days=7), seed=5)
    assert visits
    for v in visits:
        assert 0 < v.energy_wanted_kwh <= v.battery_kwh * (1 - v.soc_arrival_frac) + 1e-6
        assert 0 < v.soc_arrival_frac < 1
        assert v.car_max_power_kw > 0


def test_car_power_is_ac_or_dc_limit_by_connector_kind(station):
    profile = load_fleet_profile()
    models = {m.model: m for m in profile.models}
    kind = {c.id: c.kind for c in station.chargers}
    for v in generate_visits(station, DAY0, DAY0 + timedelta(days=2), seed=2, profile=profile):
        m = models[v.car_model]
        expected = m.dc_max_kw if kind[v.charger_id] == "DC" else m.ac_max_kw
        assert v.car_max_power_kw == expected


def test_some_cars_send_charging_needs_and_some_do_not(station):
    visits = generate_visits(station, DAY0, DAY0 + timedelta(days=3), seed=9)
    needs = [v.sends_charging_needs for v in visits]
    assert any(needs) and not all(needs)


def test_profile_is_data_and_rejects_bad_rates(tmp_path):
    profile = load_fleet_profile()
    assert {"AC", "DC"} <= set(profile.kinds)
    assert abs(sum(m.share for m in profile.models) - 1) < 1e-9
    assert any("Ioniq 5" in m.model for m in profile.models)
    bad = tmp_path / "fleet.toml"
    bad.write_text("[dc]\narrivals_per_connector_per_h = [1, 2]\n")
    (tmp_path / "ev_models.csv").write_text(
        "model,battery_kwh,ac_max_kw,dc_max_kw,share\nX,50,7,50,1\n"
    )
    with pytest.raises(ValueError, match="arrivals_per_connector_per_h"):
        load_fleet_profile(bad)


def test_empty_window_gives_no_visits(station):
    assert generate_visits(station, DAY0, DAY0, seed=1) == []
