"""What the control loop delivers: short simulated scenarios through the real Controller."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from megastation.control.controller import BATTERY_GREEN_KEY, Controller
from megastation.core.devices import SimulatedBattery
from megastation.core.fleet import CarVisit
from megastation.sim.gateway import DirectGateway
from megastation.sim.simulator import read_weather, simulate, weather_start
from megastation.store import control as cr
from megastation.store import records


def _visit(station, charger_id, arrival, minutes, energy_kwh, car_kw, needs=False):
    return CarVisit(
        charger_id=charger_id,
        connector_id=1,
        arrival=arrival,
        departure=arrival + timedelta(minutes=minutes),
        energy_wanted_kwh=energy_kwh,
        car_model="test",
        battery_kwh=64.0,
        car_max_power_kw=car_kw,
        soc_arrival_frac=0.3,
        sends_charging_needs=needs,
        id_token="T",
    )


@pytest.mark.slow
def test_car_without_charging_needs_gets_its_energy_before_an_early_departure(station):
    """A DC car on a 1.6 charger (no ChargingNeeds) leaves after 20 min, well before the
    median dwell (35 min). It is planned against an early departure, so it gets its
    energy while PV is still rising (re100 would rather wait for the sun)."""
    wx = read_weather("clear-day")
    day = weather_start(wx, station.site.timezone)
    start = day + timedelta(hours=8)  # 08:00 local: the sun is rising
    cars = [
        _visit(station, "GJDG-DC-03", start + timedelta(minutes=2), 20, 30.0, 100.0),
        _visit(station, "GJDG-DC-04", start + timedelta(minutes=3), 18, 25.0, 100.0),
    ]
    res = simulate(
        station,
        start=start,
        hours=1.0,
        policy="re100",
        weather=wx,
        visits=cars,
        plan_interval_s=300,
        with_perfect_foresight=False,
    )
    got = res.sessions.set_index("charger_id")["energy_kwh"]
    # 100 kW for 20 (18) minutes could give 33 (30) kWh: the wish is within reach
    assert got["GJDG-DC-03"] >= 30.0 - 1.0
    assert got["GJDG-DC-04"] >= 25.0 - 1.0
    assert res.kpis.steps_over_limit == 0


def _night_controller(station, store, clock, policy):
    """21:00 local, no sun; a full battery of solar energy; one AC car staying 11 h."""
    records.register_station_chargers(store, station)
    cr.set_policy(store, policy)
    store.set_setting(BATTERY_GREEN_KEY, 1.0)  # the battery holds PV energy

    def no_sun(station, start, n_steps, step_min, weather=None, measured_kw=None):
        idx = pd.date_range(
            pd.Timestamp(start).floor(f"{step_min}min"), periods=n_steps, freq=f"{step_min}min"
        )
        return pd.DataFrame({"pv_ac_kw": np.zeros(n_steps)}, index=idx)

    gw = DirectGateway(station, store, clock)
    battery = SimulatedBattery(station.battery, clock)
    ctl = Controller(
        station, store, clock, gateway=gw, battery=battery, forecaster=no_sun,
        guard_interval_s=None,
    )  # fmt: skip
    return ctl, gw


@pytest.mark.parametrize("policy", ["re100", "cost"])
async def test_policy_changes_the_plan_under_a_two_price_tariff(station, store, clock, policy):
    """Summer: 21:00-23:00 mid price (103.2 KRW/kWh), 23:00-09:00 light (63.1). re100
    charges the car now from the solar energy in the battery; cost waits for the light
    load hours and buys cheap grid energy (the stored kWh are worth more than that)."""
    from megastation.control.needs import set_override

    # energy prices only (no demand charge), so the time of use decides
    station = dataclasses.replace(
        station, tariff=dataclasses.replace(station.tariff, demand_charge_krw_per_kw_month=0.0)
    )
    now = clock.now().replace(hour=12)  # 21:00 KST
    clock.set(now)
    ctl, _ = _night_controller(station, store, clock, policy)
    res = records.start_transaction(
        store, "GJDG-AC-01", connector_id=1, id_token="T", auth_status="Accepted",
        meter_start_wh=0.0, ts=now,
    )  # fmt: skip
    tx = res.transaction_id
    set_override(store, tx, departure=now + timedelta(hours=11), energy_kwh=20.0)
    await ctl.cycle("test")
    plan = cr.latest_plan(store)
    assert plan["policy"] == policy
    kw = np.array(plan["horizon"]["session_kw"][str(tx)])
    times = pd.DatetimeIndex(plan["horizon"]["times"])
    light = (times.tz_convert("Asia/Seoul").hour >= 23) | (times.tz_convert("Asia/Seoul").hour < 9)
    ends = times[1:].append(pd.DatetimeIndex([times[-1] + pd.Timedelta(minutes=15)]))
    dt_h = (ends - times).total_seconds().to_numpy() / 3600.0
    in_light = float((kw * dt_h)[light].sum())
    total = float((kw * dt_h).sum())
    assert total == pytest.approx(20.0, abs=0.1)  # the car gets its energy either way
    if policy == "re100":
        assert plan["first_step"]["session_kw"][str(tx)] > 6.0  # now, from the battery
        assert in_light < 0.5 * total
    else:
        assert plan["first_step"]["session_kw"][str(tx)] < 1.0  # waits for cheap hours
        assert in_light > 0.95 * total
