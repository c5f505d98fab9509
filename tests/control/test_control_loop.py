"""The control loop without sockets: DirectGateway, simulated battery and meters, SimClock."""

from __future__ import annotations

import asyncio
import math
import statistics
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from megastation.control.controller import Controller
from megastation.control.needs import (
    DWELL_SIGMA,
    FIRM_DWELL_QUANTILE,
    estimate_need,
    learn_defaults,
)
from megastation.control.pv import forecast_on_grid
from megastation.control.supervisor import ControlSupervisor
from megastation.core.devices import SimulatedBattery, SimulatedPVMeter, SimulatedSiteMeter
from megastation.sim.gateway import DirectGateway
from megastation.store import control as cr
from megastation.store import records
from tests.conftest import T0


def flat_forecaster(kw: float):
    def forecast(station, start, n_steps, step_min, weather=None, measured_kw=None):
        idx = pd.date_range(
            pd.Timestamp(start).floor(f"{step_min}min"), periods=n_steps, freq=f"{step_min}min"
        )
        return pd.DataFrame({"pv_ac_kw": np.full(n_steps, kw)}, index=idx)

    return forecast


def start_tx(store, charger_id, connector_id, ts, soc=None):
    res = records.start_transaction(
        store, charger_id, connector_id=connector_id, id_token="T", auth_status="Accepted",
        meter_start_wh=0.0, ts=ts,
    )  # fmt: skip
    return res.transaction_id


def make_controller(station, store, clock, gateway, *, pv_kw=0.0, extra=None):
    battery = SimulatedBattery(station.battery, clock)
    pv = SimulatedPVMeter(lambda t: pv_kw, clock)
    gw = gateway
    meter = SimulatedSiteMeter(
        clock,
        ev_kw=lambda: sum(gw.limit_kw(c, k, tx, clock.now()) for (c, k), (tx, _) in gw.tx.items()),
        pv=pv,
        battery=battery,
        base_load_kw=station.site.base_load_kw,
    )
    ctl = Controller(
        station, store, clock, gateway=gateway, battery=battery, site_meter=meter, pv_meter=pv,
        forecaster=flat_forecaster(pv_kw),
    )  # fmt: skip
    return ctl, meter, battery


async def test_cycle_plans_within_limit_and_records(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    ids = [start_tx(store, c, 1, T0) for c in ("GJDG-DC-01", "GJDG-DC-02", "GJDG-DC-03")]
    ctl, meter, _ = make_controller(station, store, clock, gw)
    for c in station.chargers:
        await gw.install_failsafe(c.id, grid_import_limit_kw=400)
    res = await ctl.cycle("test")
    assert res.status == "optimal"
    assert len(res.outcomes) == 3 and all(o.status == "accepted" for o in res.outcomes)
    plan = cr.latest_plan(store)
    fs = plan["first_step"]
    assert fs["grid_import_kw"] <= 400 + 1e-6
    # the cars get power; the site holds its limit with the battery's help
    ev_kw = sum(
        gw.limit_kw(c, 1, t, clock.now())
        for c, t in zip(("GJDG-DC-01", "GJDG-DC-02", "GJDG-DC-03"), ids, strict=True)
    )
    assert ev_kw > 100
    assert (await meter.read()).net_import_kw <= 400 + 1e-6


async def test_operator_limit_and_policy_win(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    start_tx(store, "GJDG-DC-01", 1, T0)
    ctl, _, battery = make_controller(station, store, clock, gw)
    battery.fault = "test: battery offline"  # no battery help
    cr.set_grid_limit(store, 50.0, until=T0 + timedelta(hours=1))
    cr.set_policy(store, "cost")
    await ctl.cycle("test")
    plan = cr.latest_plan(store)
    assert plan["grid_limit_kw"] == 50.0 and plan["policy"] == "cost"
    assert plan["first_step"]["grid_import_kw"] <= 50.0 + 1e-6
    assert plan["first_step"]["ev_kw"] <= 50.0 - station.site.base_load_kw + 1e-6
    clock.set(T0 + timedelta(hours=2))
    await ctl.cycle("test")
    assert cr.latest_plan(store)["grid_limit_kw"] == station.site.grid_import_limit_kw


async def test_guard_cuts_within_one_second(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    for c in ("GJDG-DC-01", "GJDG-DC-02", "GJDG-DC-03", "GJDG-DC-04"):
        start_tx(store, c, 1, T0)
    ctl, meter, battery = make_controller(station, store, clock, gw)
    battery.fault = "off"
    task = asyncio.create_task(ctl.run())
    await asyncio.sleep(0)
    await ctl.wait_idle()
    assert (await meter.read()).net_import_kw <= 400 + 1e-6
    cycles = ctl.cycles
    meter.extra_kw = 300.0  # a surprise load appears
    t_surprise = clock.now()
    assert (await meter.read()).net_import_kw > 400
    while (await meter.read()).net_import_kw > 400 + 1e-6:
        await clock.advance(0.1)
        await ctl.wait_idle()
        assert clock.now() - t_surprise <= timedelta(seconds=1), "not cut within 1 s"
    assert ctl.cycles > cycles and ctl.guard_trips >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_supervisor_restarts_a_crashed_loop(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    made = []

    def make():
        ctl, _, _ = make_controller(station, store, clock, gw)
        if not made:

            async def boom(reason="x"):
                raise RuntimeError("solver exploded")

            ctl.cycle = boom
        made.append(ctl)
        return ctl

    sup = ControlSupervisor(make, clock, backoff_s=(1,))
    task = asyncio.create_task(sup.run())
    for _ in range(5):
        await asyncio.sleep(0)
    await clock.advance(2)
    await sup.controller.wait_idle()
    assert sup.restarts == 1 and len(made) == 2 and made[1].cycles >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_needs_sources(station):
    d = station.defaults  # seed: DC median dwell 35 min, median energy 43 kWh
    kw = dict(
        kind="dc",
        started_at=T0,
        delivered_kwh=10.0,
        now=T0 + timedelta(minutes=10),
        timezone="Asia/Seoul",
        defaults=d,
    )
    n = estimate_need(**kw)
    assert n.source == "default" and n.energy_kwh == pytest.approx(33.0)
    # firm energy by a pessimistic departure (10 % dwell quantile), more by the median
    z = statistics.NormalDist().inv_cdf(FIRM_DWELL_QUANTILE)
    early = T0 + timedelta(minutes=35 * math.exp(z * DWELL_SIGMA["dc"]))
    assert abs((n.departure - early).total_seconds()) < 1
    # the extra may come until the stay's 95th percentile, weighed by the chance the car
    # is still there: a lognormal stay with the default's median and the kind's sigma
    assert (n.stay_median_s, n.stay_sigma) == (35 * 60.0, DWELL_SIGMA["dc"])
    q95 = T0 + timedelta(minutes=35 * math.exp(1.645 * DWELL_SIGMA["dc"]))
    assert n.extra_departure == q95 and not n.departure_known
    assert n.extra_energy_kwh == pytest.approx(1.6 * 43 - 10 - 33)
    # a car that took more than all we guessed (80 kWh > 1.6 x 43) may want more yet: a
    # top-up stays on offer (a full car shows it by drawing nothing)
    n = estimate_need(**dict(kw, delivered_kwh=80.0))
    assert n.energy_kwh == 0.0 and n.extra_energy_kwh == pytest.approx(0.25 * 43)
    n = estimate_need(**kw, soc_frac=0.5)
    assert n.source == "soc" and n.energy_kwh == pytest.approx(0.3 * 64)
    assert n.extra_energy_kwh == pytest.approx(0.2 * 64)  # up to full
    n = estimate_need(**kw, needs_energy_kwh=50.0, needs_departure=T0 + timedelta(hours=2))
    assert (n.source, n.energy_kwh, n.extra_departure, n.extra_energy_kwh, n.departure_known) == (
        "charging_needs",
        40.0,
        T0 + timedelta(hours=2),
        0.0,
        True,
    )
    # a known departure is planned with a margin of 15 % of the stay
    assert n.departure == T0 + timedelta(hours=2) - timedelta(minutes=18)
    assert n.stay_median_s is None  # the car said when it leaves: no guessing
    # what the driver said is firm, not a cap (#11): once it is in, a top-up stays on offer
    n = estimate_need(**dict(kw, delivered_kwh=60.0), needs_energy_kwh=50.0)
    assert n.energy_kwh == 0.0 and n.extra_energy_kwh == pytest.approx(0.25 * 43)
    n = estimate_need(**kw, needs_energy_kwh=50.0, override_energy_kwh=20.0)
    assert (n.source, n.energy_kwh) == ("override", 10.0)
    # a car past its assumed departures: firm energy now, the extra over a tail
    late = dict(kw, now=T0 + timedelta(minutes=50))
    n = estimate_need(**late)
    assert n.departure == T0 + timedelta(minutes=55)
    assert n.extra_departure > n.departure
    sessions = [
        ("dc", T0 + timedelta(days=i), T0 + timedelta(days=i, minutes=20 + i), 25.0)
        for i in range(20)
    ]
    learned = learn_defaults(sessions, "Asia/Seoul")
    n = estimate_need(**kw, learned=learned)
    assert n.source == "history" and n.stay_median_s == 29.5 * 60  # learned median
    assert n.departure == T0 + timedelta(minutes=21)  # empirical 10 % quantile
    # an hour cell needs 20 sessions, a whole kind (the fallback) 8
    assert ("dc", 9) not in learn_defaults(sessions[:19], "Asia/Seoul").by_cell
    assert learn_defaults(sessions[:8], "Asia/Seoul").get("dc", 9) is not None
    assert learn_defaults(sessions[:7], "Asia/Seoul").get("dc", 9) is None


async def test_override_from_store_reaches_the_plan(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    tx = start_tx(store, "GJDG-AC-01", 1, T0)
    cr.set_session_override(store, tx, departure=T0 + timedelta(hours=3), energy_kwh=12.0)
    ctl, _, _ = make_controller(station, store, clock, gw)
    await ctl.cycle("test")
    s = cr.latest_plan(store)["inputs"]["sessions"][0]
    assert s["source"] == "override" and s["energy_kwh"] == 12.0


def test_forecast_reaches_the_plan_grid(station, store, clock):
    """The pvlib forecast (clear sky) is mapped onto the plan's steps, whatever the index unit."""
    from megastation.dispatch import TimeGrid

    ctl = Controller(station, store, clock, gateway=DirectGateway(station, store, clock))
    now = T0 + timedelta(hours=3, minutes=7)  # 12:07 in Seoul, June
    fc = forecast_on_grid(ctl.forecaster, station, TimeGrid.aligned(now, 24, 900))
    pv, p10 = fc.p50_kw, fc.p10_kw
    assert 50 < pv[0] <= 180 and p10 is not None and p10[0] <= pv[0]


def test_weather_ending_inside_the_horizon_falls_back_to_clear_sky(station, store, clock):
    """A weather forecast that covers only the first hours of a plan (a feed's last run,
    a weather file's last day) gives the clear-sky forecast, not zero PV."""
    from forecasts.weather import clear_sky_weather
    from megastation.dispatch import TimeGrid

    ctl = Controller(station, store, clock, gateway=DirectGateway(station, store, clock))
    now = T0 + timedelta(hours=3, minutes=7)  # 12:07 in Seoul, June
    grid = TimeGrid.aligned(now, 24, 900)
    short = clear_sky_weather(pd.date_range(now - timedelta(hours=1), periods=8, freq="15min"))
    fc = forecast_on_grid(ctl.forecaster, station, grid, weather=short)
    clear = forecast_on_grid(ctl.forecaster, station, grid)
    assert fc.p50_kw[0] > 50
    np.testing.assert_allclose(fc.p50_kw, clear.p50_kw)


def test_a_per_step_forecaster_is_asked_once_per_step_and_layout(station, store, clock):
    """A forecaster that says its forecast is the same within a step (the simulator's) is
    asked once for the plans of one step; a plain one on every plan (#15)."""
    from megastation.dispatch import TimeGrid

    calls = []

    def forecaster(station, start, n_steps, step_min, weather=None, measured_kw=None):
        calls.append(start)
        return flat_forecaster(40.0)(station, start, n_steps, step_min)

    ctl = Controller(station, store, clock, gateway=DirectGateway(station, store, clock))
    ctl.forecaster = forecaster
    t = T0 + timedelta(minutes=16)
    grids = [TimeGrid.aligned(t + timedelta(minutes=m), 24, 900) for m in (0, 3, 9)]
    first = [ctl._forecast(g) for g in grids]
    assert len(calls) == 3
    forecaster.per_step = True
    again = [ctl._forecast(g) for g in grids]
    assert len(calls) == 4  # one more for the three plans of the step
    ctl._forecast(TimeGrid.aligned(t + timedelta(minutes=15), 24, 900))  # the next step
    assert len(calls) == 5
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.p50_kw, b.p50_kw)


async def test_cycles_start_warm_from_the_last_plan(station, store, clock):
    """The controller's solver carries the basis from one cycle to the next (#15)."""
    gw = DirectGateway(station, store, clock)
    ctl, _, _ = make_controller(station, store, clock, gw, pv_kw=30.0)
    start_tx(store, station.chargers[0].id, 1, clock.now())
    await ctl.cycle("car_plugged_in")
    first_iters = ctl.warm_start.iterations
    await clock.advance(60)
    await ctl.cycle("interval")
    assert ctl.warm_start.solves == 2
    assert ctl.warm_start.iterations - first_iters < first_iters


def test_a_departure_re_plans_only_when_the_car_was_drawing(station, store, clock):
    """TransactionEnded asks for a plan when the car's last metered power was above zero
    or never metered; a car that drew nothing frees nothing a plan can use (#15)."""
    from megastation.core import events as ev

    ctl = Controller(station, store, clock, gateway=DirectGateway(station, store, clock))
    now = clock.now()

    def ended(charger: str, kw: float | None) -> set[str]:
        ctl._reasons.clear()
        if kw is not None:
            ctl.notify(ev.MeterSampleReceived(charger, now, 1, 7, kw, 10.0, None))
        ctl.notify(ev.TransactionEnded(charger, now, 7, 1, 10.0, "EVDisconnected"))
        return set(ctl._reasons)

    assert ended("GJDG-DC-01", 0.0) == set()
    assert ended("GJDG-DC-02", 42.0) == {"car_left"}
    assert ended("GJDG-DC-03", None) == {"car_left"}
