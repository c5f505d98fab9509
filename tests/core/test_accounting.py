"""Renewable accounting: hand-made days where the answer is known."""

from __future__ import annotations

import pandas as pd
import pytest

from megastation.core.accounting import allocate, attribute_sessions, renewable_share

IDX = pd.date_range("2026-06-15 00:00", periods=4, freq="1h", tz="UTC")


def _flows(**cols):
    base = dict.fromkeys(
        [
            "pv_kw",
            "ev_kw",
            "battery_charge_kw",
            "battery_discharge_kw",
            "grid_import_kw",
            "grid_export_kw",
            "base_load_kw",
        ],
        [0.0] * 4,
    )
    base.update(cols)
    return pd.DataFrame(base, index=IDX)


def test_pv_direct_then_grid():
    # 100 kW PV, 150 kW of cars: two thirds renewable.
    f = _flows(pv_kw=[100.0] * 4, ev_kw=[150.0] * 4, grid_import_kw=[50.0] * 4)
    a = allocate(f)
    assert a["ev_pv_kwh"].sum() == pytest.approx(400)
    assert a["ev_grid_kwh"].sum() == pytest.approx(200)
    assert renewable_share(a) == pytest.approx(2 / 3)


def test_battery_carries_the_colour_of_what_charged_it():
    # Hour 0: the battery charges 100 kWh from PV; hour 1: 100 kWh from the grid;
    # hours 2-3: it discharges 50 kWh into cars each hour -> half of it renewable.
    f = _flows(
        pv_kw=[100.0, 0, 0, 0],
        battery_charge_kw=[100.0, 100.0, 0, 0],
        grid_import_kw=[0, 100.0, 0, 0],
        battery_discharge_kw=[0, 0, 50.0, 50.0],
        ev_kw=[0, 0, 50.0, 50.0],
    )
    a = allocate(f, initial_stored_kwh=0.0)
    assert a["ev_battery_kwh"].sum() == pytest.approx(100)
    assert a["ev_battery_renewable_kwh"].sum() == pytest.approx(50)
    assert renewable_share(a) == pytest.approx(0.5)
    assert (a["ev_renewable_kwh"] + a["ev_nonrenewable_kwh"]).sum() == pytest.approx(100)


def test_sessions_share_each_steps_mix_and_add_up():
    f = _flows(pv_kw=[60.0] * 4, ev_kw=[100.0] * 4, grid_import_kw=[40.0] * 4)
    a = allocate(f)
    sessions = pd.DataFrame({"s1": [50.0] * 4, "s2": [50.0, 50.0, 50.0, 50.0]}, index=IDX)
    per = attribute_sessions(sessions, a)
    assert per.loc["s1", "energy_kwh"] == pytest.approx(200)
    assert per["pv_direct_kwh"].sum() == pytest.approx(a["ev_pv_kwh"].sum())
    assert per["renewable_frac"].tolist() == pytest.approx([0.6, 0.6])
    # The two ways of computing the station's renewable share agree.
    assert per["renewable_kwh"].sum() / per["energy_kwh"].sum() == pytest.approx(renewable_share(a))


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="grid_export_kw"):
        allocate(_flows().drop(columns="grid_export_kw"))


def test_stored_step_lengths_win_over_gaps_between_rows():
    # A 12-minute last step and a gap in the record must not stretch the energy.
    idx = pd.DatetimeIndex(["2026-06-15 00:00", "2026-06-15 00:15", "2026-06-15 02:00"], tz="UTC")
    f = pd.DataFrame(
        {
            "step_s": [900.0, 900.0, 720.0],
            "pv_kw": [0.0] * 3,
            "ev_kw": [60.0] * 3,
            "battery_charge_kw": [0.0] * 3,
            "battery_discharge_kw": [0.0] * 3,
            "grid_import_kw": [60.0] * 3,
            "grid_export_kw": [0.0] * 3,
        },
        index=idx,
    )
    a = allocate(f)
    assert a["ev_kwh"].sum() == pytest.approx(15 + 15 + 12)
    per = attribute_sessions(pd.DataFrame({"s": [60.0] * 3}, index=idx), a)
    assert per.loc["s", "energy_kwh"] == pytest.approx(42)


def test_charge_and_discharge_in_one_step_are_netted():
    # Hour 0: PV 60 kW, cars 60 kW; within the hour the battery took 30 kWh of PV and
    # gave 30 kWh back to cars. That must not turn the battery's content greyer: in
    # hour 1 its 20 kWh to cars are still half renewable, as it started.
    f = _flows(
        pv_kw=[60.0, 0, 0, 0],
        ev_kw=[60.0, 20.0, 0, 0],
        battery_charge_kw=[30.0, 0, 0, 0],
        battery_discharge_kw=[30.0, 20.0, 0, 0],
    )
    a = allocate(f, initial_stored_kwh=100.0, initial_renewable_frac=0.5)
    assert a["ev_renewable_kwh"].iloc[0] == pytest.approx(60)
    assert a["ev_battery_renewable_kwh"].iloc[1] == pytest.approx(10)
