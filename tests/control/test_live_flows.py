"""The running control loop records the measured energy flows (a live store has them)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from megastation.control.controller import Controller
from megastation.core import events as ev
from megastation.core.devices import SimulatedBattery, SimulatedPVMeter, SimulatedSiteMeter
from megastation.sim.gateway import DirectGateway
from megastation.store import control as cr
from megastation.store import flows, records
from tests.conftest import T0


def flat_forecaster(kw: float):
    def forecast(station, start, n_steps, step_min, weather=None, measured_kw=None):
        idx = pd.date_range(
            pd.Timestamp(start).floor(f"{step_min}min"), periods=n_steps, freq=f"{step_min}min"
        )
        return pd.DataFrame({"pv_ac_kw": np.full(n_steps, kw)}, index=idx)

    return forecast


class _Car:
    def __init__(self, store, charger_id, arrive, leave, max_kw):
        self.charger_id, self.arrive, self.leave, self.max_kw = charger_id, arrive, leave, max_kw
        self.store = store
        self.tx: int | None = None
        self.kwh = 0.0  # the car's meter register
        self.kwh_at_1h = 0.0
        self.kw = 0.0


async def _run_hour(station, store, clock, *, with_site_meter: bool):
    """Three cars (one arrives and leaves within the hour), PV 80 kW, a simulated
    battery; the chargers report register and power every 30 s. Returns the cars."""
    station = dataclasses.replace(
        station, site=dataclasses.replace(station.site, dispatch_interval_s=300)
    )
    records.register_station_chargers(store, station)
    cr.set_policy(store, "re100")
    gw = DirectGateway(station, store, clock)
    for c in station.chargers:
        await gw.install_failsafe(c.id, grid_import_limit_kw=station.site.grid_import_limit_kw)
    cars = [
        _Car(store, "GJDG-DC-01", T0, T0 + timedelta(hours=2), 90.0),
        _Car(store, "GJDG-DC-02", T0, T0 + timedelta(hours=2), 60.0),
        _Car(store, "GJDG-AC-01", T0 + timedelta(minutes=20), T0 + timedelta(minutes=50), 7.0),
    ]
    battery = SimulatedBattery(station.battery, clock)
    pv = SimulatedPVMeter(lambda t: 80.0, clock)
    meter = None
    if with_site_meter:
        meter = SimulatedSiteMeter(
            clock,
            ev_kw=lambda: sum(c.kw for c in cars),
            pv=pv,
            battery=battery,
            base_load_kw=station.site.base_load_kw,
        )
    ctl = Controller(
        station, store, clock, gateway=gw, battery=battery, site_meter=meter, pv_meter=pv,
        forecaster=flat_forecaster(80.0), guard_interval_s=None, expect_arrivals=False,
    )  # fmt: skip
    ctl.solve_inline = True  # plans at the clock time they are due (no worker thread)
    task = asyncio.create_task(ctl.run())
    end = T0 + timedelta(minutes=61, seconds=30)
    try:
        while clock.now() < end:
            now = clock.now()
            if now == T0 + timedelta(hours=1):
                for car in cars:
                    car.kwh_at_1h = car.kwh
            for car in cars:
                if car.tx is None and car.arrive <= now < car.leave:
                    car.tx = records.start_transaction(
                        store, car.charger_id, connector_id=1, id_token="T",
                        auth_status="Accepted", meter_start_wh=0.0, ts=now,
                    ).transaction_id  # fmt: skip
                    ctl.notify(ev.TransactionStarted(car.charger_id, now, car.tx, 1, "T", 0.0))
                elif car.tx is not None and car.kw >= 0 and now >= car.leave:
                    records.stop_transaction(
                        store, car.charger_id, car.tx, meter_stop_wh=car.kwh * 1000, ts=now,
                        reason="EVDisconnected",
                    )  # fmt: skip
                    ctl.notify(ev.TransactionEnded(car.charger_id, now, car.tx, 1, car.kwh, None))
                    car.kw = -1.0  # gone
                if car.tx is None or car.kw < 0:
                    continue
                car.kw = min(car.max_kw, gw.limit_kw(car.charger_id, 1, car.tx, now))
                records.record_meter_values(
                    store, car.charger_id, 1,
                    [records.Sample(now, records.ENERGY_REGISTER, car.kwh, "kWh"),
                     records.Sample(now, records.POWER_IMPORT, car.kw, "kW")],
                    transaction_id=car.tx,
                )  # fmt: skip
                ctl.notify(
                    ev.MeterSampleReceived(car.charger_id, now, 1, car.tx, car.kw, car.kwh, None)
                )
            await ctl.wait_idle()
            await clock.advance(30)
            for car in cars:
                if car.tx is not None and car.kw > 0:
                    car.kwh += car.kw * 30 / 3600
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for car in cars:
        car.kw = max(car.kw, 0.0)
    return cars


@pytest.mark.slow
@pytest.mark.parametrize("with_site_meter", [True, False])
async def test_running_controller_records_one_flow_step_per_dispatch_step(
    station, store, clock, with_site_meter
):
    cars = await _run_hour(station, store, clock, with_site_meter=with_site_meter)
    f = flows.read_flows(store, T0, T0 + timedelta(hours=1))
    assert len(f) == 4
    assert (f["step_s"] == 900).all()
    h = f["step_s"] / 3600
    balance = (
        f["pv_kw"] + f["battery_discharge_kw"] + f["grid_import_kw"]
        - f["ev_kw"] - f["base_load_kw"] - f["battery_charge_kw"] - f["grid_export_kw"]
    )  # fmt: skip
    assert balance.abs().max() < 1e-6
    # the residual base load is what the site really drew besides cars and battery
    # (within the 10-s sampling of a battery that changes its set point between samples)
    assert f["base_load_kw"].to_numpy() == pytest.approx(station.site.base_load_kw, abs=1.0)
    assert f["base_load_kw"].mean() == pytest.approx(station.site.base_load_kw, abs=0.3)
    assert f["pv_kw"].to_numpy() == pytest.approx(80.0)
    assert f["pv_forecast_kw"].to_numpy() == pytest.approx(80.0)
    assert (f["grid_limit_kw"] == station.site.grid_import_limit_kw).all()
    assert f["soc_frac"].notna().all()
    # EV energy: the connectors' metered energy, in total and per session
    metered = {
        c.tx: records.get_transaction(store, c.tx)["energy_kwh"] for c in cars if c.tx is not None
    }
    got_kwh = float((f["ev_kw"] * h).sum())
    in_hour = sum(c.kwh_at_1h for c in cars)  # registers at 01:00
    assert got_kwh == pytest.approx(in_hour, abs=0.05)
    assert got_kwh > 50
    ac = next(c for c in cars if c.charger_id == "GJDG-AC-01")
    assert metered[ac.tx] == pytest.approx(ac.kwh)
    cf = flows.read_connector_flows(store, T0, T0 + timedelta(hours=1))
    per_tx = (cf["power_kw"] * 0.25).groupby(cf["transaction_id"]).sum()
    assert per_tx[ac.tx] == pytest.approx(metered[ac.tx], abs=1e-6)  # closed within the hour
    assert per_tx.sum() == pytest.approx(got_kwh, abs=1e-6)
    # the battery's recorded energy matches its SoC change (within efficiency losses)
    assert f["battery_charge_kw"].sum() + f["battery_discharge_kw"].sum() > 0


async def test_controller_without_recording_writes_no_flows(station, store, clock):
    gw = DirectGateway(station, store, clock)
    ctl = Controller(
        station, store, clock, gateway=gw, forecaster=flat_forecaster(0.0),
        guard_interval_s=None, record_flows=False, expect_arrivals=False,
    )  # fmt: skip
    task = asyncio.create_task(ctl.run())
    for _ in range(20):
        await clock.advance(60)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert flows.read_flows(store).empty


class _FailingBattery(SimulatedBattery):
    async def set_power_kw(self, power_kw: float) -> None:
        raise OSError("modbus: no response from unit 3")


async def test_battery_setpoint_that_fails_is_recorded_as_error(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    battery = _FailingBattery(station.battery, clock)
    ctl = Controller(
        station, store, clock, gateway=gw, battery=battery, forecaster=flat_forecaster(200.0),
        guard_interval_s=None, expect_arrivals=False,
    )  # fmt: skip
    await ctl.cycle("test")
    rows = store.conn.execute(
        "SELECT status, detail FROM control_setpoints WHERE target = 'battery'"
    ).fetchall()
    assert rows == [("error", "OSError: modbus: no response from unit 3")]
    # a battery that takes the set point is recorded as accepted
    ok = Controller(
        station, store, clock, gateway=gw, battery=SimulatedBattery(station.battery, clock),
        forecaster=flat_forecaster(200.0), guard_interval_s=None, expect_arrivals=False,
    )  # fmt: skip
    await ok.cycle("test")
    rows = store.conn.execute(
        "SELECT status FROM control_setpoints WHERE target = 'battery' ORDER BY id"
    ).fetchall()
    assert rows == [("error",), ("accepted",)]


def test_the_plans_demand_peak_is_the_metered_15_minute_peak_of_the_month(station, store, clock):
    # Before: the highest *planned* first-step import (113 kW in a simulated week whose
    # metered peak was 341 kW), so the plan spread cars out to protect a peak already
    # paid for, and they left with less energy.
    from megastation.store.flows import FlowStep

    ctl = Controller(station, store, clock, gateway=DirectGateway(station, store, clock))
    assert ctl._peak_so_far(T0) == 0.0  # nothing metered, nothing planned

    def step(ts, step_s, kw):
        return FlowStep(ts, step_s, 0.0, kw, 0.0, 0.0, kw, 0.0)

    last_month = T0 - timedelta(days=20)
    five_min = [
        step(T0 + timedelta(minutes=5 * i), 300, kw) for i, kw in enumerate((350, 250, 250))
    ]
    flows.record_flows(store, [step(last_month, 900, 390.0), *five_min])
    flows.record_flows(store, step(T0 + timedelta(minutes=15), 900, 120.0))
    # a window in progress does not count yet (its mean so far would understate it)
    assert ctl._peak_so_far(T0 + timedelta(minutes=10)) == 0.0
    now = T0 + timedelta(hours=1)
    # the 15-minute mean (350 + 250 + 250) / 3, not the 5-minute 350 nor last month's 390
    assert ctl._peak_so_far(now) == pytest.approx(850 / 3)
