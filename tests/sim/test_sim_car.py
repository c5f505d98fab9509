"""Car physics on a connector: limits obeyed, taper, stop at the driver's target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from megastation.core.fleet import CarVisit
from megastation.sim.car import ConnectorSim

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)


def visit(**kw) -> CarVisit:
    base = dict(
        charger_id="DC-1",
        connector_id=1,
        arrival=T0,
        departure=T0 + timedelta(hours=1),
        energy_wanted_kwh=50.0,
        car_model="Test",
        battery_kwh=80.0,
        car_max_power_kw=150.0,
        soc_arrival_frac=0.2,
        sends_charging_needs=False,
        id_token="TAG",
    )
    base.update(kw)
    return CarVisit(**base)


def run(sim: ConnectorSim, limit_kw: float, minutes: float, step_s: float = 60.0) -> list[float]:
    out, t = [], sim.visit.arrival
    while t < sim.visit.arrival + timedelta(minutes=minutes):
        out.append(sim.step(t, step_s, limit_kw))
        t += timedelta(seconds=step_s)
    return out


def test_power_is_the_min_of_limit_car_and_connector():
    sim = ConnectorSim(visit(), connector_max_kw=100.0)
    assert sim.step(T0, 60, 1000.0) == 100.0
    assert sim.step(T0 + timedelta(minutes=1), 60, 40.0) == 40.0
    small = ConnectorSim(visit(car_max_power_kw=50.0), connector_max_kw=200.0)
    assert small.step(T0, 60, 1000.0) == 50.0
    assert sim.energy_kwh == pytest.approx((100 + 40) / 60)


def test_energy_integrates_and_stops_at_the_target():
    sim = ConnectorSim(visit(energy_wanted_kwh=10.0), connector_max_kw=100.0)
    powers = run(sim, 100.0, 30)
    assert sim.energy_kwh == pytest.approx(10.0)
    assert sim.full and powers[-1] == 0.0
    assert sim.soc_frac == pytest.approx(0.2 + 10 / 80)


def test_dc_tapers_above_80_percent():
    sim = ConnectorSim(
        visit(soc_arrival_frac=0.85, energy_wanted_kwh=10.0, departure=T0 + timedelta(hours=3)),
        connector_max_kw=200.0,
    )
    first = sim.step(T0, 60, 1000.0)
    assert first == pytest.approx(150.0 * 0.15 / 0.2, rel=1e-6)
    run(sim, 1000.0, 120)
    assert sim.power_kw < first


def test_ac_car_does_not_charge_below_six_amps():
    sim = ConnectorSim(
        visit(car_max_power_kw=7.0), connector_max_kw=7.0, kind="AC", phases=1, voltage_v=220.0
    )
    assert sim.step(T0, 60, 1.0) == 0.0
    assert sim.step(T0, 60, 2.0) == 2.0


def test_no_power_outside_the_visit_and_not_past_departure():
    sim = ConnectorSim(visit(), connector_max_kw=100.0)
    assert sim.step(T0 - timedelta(minutes=1), 60, 100.0) == 0.0
    dep = sim.visit.departure
    sim.step(dep - timedelta(seconds=30), 60, 100.0)
    assert sim.energy_kwh == pytest.approx(100.0 * 30 / 3600)
    assert sim.step(dep, 60, 100.0) == 0.0
