"""Between plans the battery follows the site balance around the plan (self-consumption)."""

from __future__ import annotations

import pytest

from megastation.control.balance import follow_balance_kw
from megastation.control.controller import Controller
from megastation.core.devices import SimulatedBattery, SimulatedSiteMeter
from megastation.sim.gateway import DirectGateway
from megastation.store import records
from tests.conftest import T0
from tests.control.test_control_loop import flat_forecaster, start_tx


def rule(**kw):
    base = dict(
        planned_battery_kw=0.0,
        planned_import_kw=50.0,
        planned_export_kw=0.0,
        import_at_plan_kw=50.0,
        max_charge_kw=250.0,
        max_discharge_kw=250.0,
    )
    return follow_balance_kw(**{**base, **kw})


def test_rule_stores_surplus_that_would_be_exported():
    # the plan imports 0; cars draw less than planned: 40 kW would go to the grid
    assert rule(planned_import_kw=0.0, import_at_plan_kw=-40.0) == pytest.approx(-40.0)
    # a planned discharge is cut before anything is exported
    assert rule(
        planned_battery_kw=30.0, planned_import_kw=0.0, import_at_plan_kw=-20.0
    ) == pytest.approx(10.0)
    # a planned export (battery full, say) stays
    assert rule(planned_import_kw=0.0, planned_export_kw=40.0, import_at_plan_kw=-40.0) == 0.0


def test_rule_discharges_instead_of_importing_above_the_plan():
    assert rule(import_at_plan_kw=80.0) == pytest.approx(30.0)
    # ... but not below the plan's reserve: a planned charge is only given up
    assert rule(import_at_plan_kw=80.0, may_discharge_more=False) == 0.0
    assert rule(
        planned_battery_kw=-40.0, import_at_plan_kw=80.0, may_discharge_more=False
    ) == pytest.approx(-10.0)
    # within the deadband the plan's set point holds; limits hold
    assert rule(import_at_plan_kw=50.5) == 0.0
    assert rule(import_at_plan_kw=900.0) == 250.0
    assert rule(planned_import_kw=0.0, import_at_plan_kw=-900.0) == -250.0


async def sunny_controller(station, store, clock, gw, battery, ev_kw):
    """A controller on 150 kW of PV (measured and forecast) with a simulated site meter,
    after its first plan; returns it and the meter."""
    from megastation.core.devices import SimulatedPVMeter

    pv = SimulatedPVMeter(lambda t: 150.0, clock)
    meter = SimulatedSiteMeter(
        clock, ev_kw=ev_kw, pv=pv, battery=battery, base_load_kw=station.site.base_load_kw
    )
    ctl = Controller(
        station, store, clock, gateway=gw, battery=battery, site_meter=meter, pv_meter=pv,
        forecaster=flat_forecaster(150.0),
    )  # fmt: skip
    for c in station.chargers:
        await gw.install_failsafe(c.id, grid_import_limit_kw=400)
    await ctl.cycle("test")
    return ctl, meter


async def test_battery_takes_pv_surplus_when_cars_draw_less_than_planned(station, store, clock):
    # Sunny: the plan gives a DC car PV; the car draws nothing, so the surplus would be
    # exported. With the guard loop's balance step the battery charges with it instead.
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    start_tx(store, "GJDG-DC-01", 1, T0)
    battery = SimulatedBattery(station.battery, clock, soc_frac=0.2)
    car_kw = {"kw": None}

    def ev_kw():
        planned = sum(gw.limit_kw(c, k, tx, clock.now()) for (c, k), (tx, _) in gw.tx.items())
        return planned if car_kw["kw"] is None else car_kw["kw"]

    ctl, meter = await sunny_controller(station, store, clock, gw, battery, ev_kw)
    planned_export = ctl.balance.plan[1].grid_export_kw[0]
    car_kw["kw"] = 0.0  # the car stops drawing
    before = await meter.read()
    kw = await ctl.follow_balance()
    after = await meter.read()
    assert before.export_kw > planned_export + 10  # it would export
    assert kw is not None and kw < 0  # the battery charges instead
    assert after.export_kw == pytest.approx(planned_export, abs=1.5)
    assert after.import_kw == pytest.approx(0.0, abs=1.5)


def test_rule_never_discharges_into_the_grid_unless_export_may_pay():
    # the plan discharges 30 kW and exports 40 (it was allowed to); the site would export
    # 40 kW with the battery at 30: without export the battery stops discharging
    kw = dict(planned_battery_kw=30.0, planned_import_kw=0.0, planned_export_kw=40.0)
    assert rule(**kw, import_at_plan_kw=-40.0) == pytest.approx(30.0)
    # ... and takes the 10 kW the site would still export with it idle
    assert rule(**kw, import_at_plan_kw=-40.0, may_export=False) == pytest.approx(-10.0)
    # it still covers the import the site has with the battery idle, and still charges
    assert rule(**kw, import_at_plan_kw=-10.0, may_export=False) == pytest.approx(20.0)
    assert rule(planned_import_kw=0.0, import_at_plan_kw=-40.0, may_export=False) == -40.0


def test_rule_stores_a_planned_export_when_export_does_not_pay():
    # The plan exports 40 kW of PV (it expects the battery to fill later, #11): where
    # export does not pay the battery stores it now, as self-consumption does; a full
    # battery refuses the charge itself (its SoC limit), and only then is PV exported.
    planned = dict(planned_import_kw=0.0, planned_export_kw=40.0, import_at_plan_kw=-40.0)
    assert rule(**planned) == 0.0  # export pays: the plan's export stays
    assert rule(**planned, may_export=False) == pytest.approx(-40.0)
    # a planned charge grows by the planned export; limits hold
    assert rule(**planned, planned_battery_kw=-30.0, may_export=False) == pytest.approx(-70.0)
    assert rule(**planned, max_charge_kw=25.0, may_export=False) == pytest.approx(-25.0)
    # within the deadband of no export at all: the plan's set point
    assert (
        rule(
            planned_import_kw=0.0, planned_export_kw=40.0, import_at_plan_kw=-0.5, may_export=False
        )
        == 0.0
    )


async def test_battery_stores_pv_the_plan_exports(station, store, clock):
    # No car, 150 kW of PV all day (forecast), the battery near full: the plan exports
    # PV (100 kW export limit) at some step whatever it does; wherever that export falls,
    # between plans the battery takes every surplus while it has room (the seed tariff
    # pays 0 for export, so the export is a gift), and only a full battery lets PV go.
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    battery = SimulatedBattery(station.battery, clock, soc_frac=0.85)
    ctl, meter = await sunny_controller(station, store, clock, gw, battery, lambda: 0.0)
    plan = ctl.balance.plan[1]
    assert plan.grid_export_kw.max() > 50.0  # the plan does export
    kw = await ctl.follow_balance()
    after = await meter.read()
    surplus = 150.0 - station.site.base_load_kw
    assert kw == pytest.approx(-surplus, abs=1.0)  # the battery takes all of it
    assert after.export_kw == pytest.approx(0.0, abs=1.0)
