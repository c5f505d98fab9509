"""Renewable accounting on non-neutral values: lossy battery, base load, a battery that
starts part full and part green. Expectations are worked out by hand (in the comments)
or by :func:`_ledger`, a two-pool bookkeeping written here independently of
:func:`megastation.core.accounting.allocate`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megastation.core.accounting import (
    allocate,
    allocate_battery,
    attribute_sessions,
    renewable_share,
)

COLS = (
    "pv_kw",
    "ev_kw",
    "base_load_kw",
    "battery_charge_kw",
    "battery_discharge_kw",
    "grid_import_kw",
    "grid_export_kw",
)


def _flows(rows: list[dict[str, float]], step_h: float = 1.0) -> pd.DataFrame:
    """One row per step; grid import/export from the balance of what is given."""
    idx = pd.date_range("2026-06-15", periods=len(rows), freq=pd.Timedelta(hours=step_h), tz="UTC")
    f = pd.DataFrame([{c: float(r.get(c, 0.0)) for c in COLS} for r in rows], index=idx)
    net = (
        f["ev_kw"]
        + f["base_load_kw"]
        + f["battery_charge_kw"]
        - f["pv_kw"]
        - f["battery_discharge_kw"]
    )
    f["grid_import_kw"] = net.clip(lower=0.0)
    f["grid_export_kw"] = (-net).clip(lower=0.0)
    f["step_s"] = step_h * 3600.0
    return f


BATTERY = SimpleNamespace(capacity_kwh=200.0, charge_efficiency=0.9, discharge_efficiency=0.95)

# Hand-worked day (1 h steps), battery 200 kWh at 25 % SoC of which 20 % green
# (10 kWh green, 40 kWh grey), charge efficiency 0.9, discharge efficiency 0.95:
#  0: PV 100 kW all into the battery: green 10 + 90 = 100, grey 40, stored 140.
#  1: cars 60 kW, battery 38 kW out (draws 38 / 0.95 = 40 kWh, 5/7 green), grid 22:
#     cars' renewable 38 * 5/7 = 190/7; green 100 - 200/7 = 500/7, grey 40 - 80/7 = 200/7.
#  2: grid charges 50 kW: grey + 45 -> stored 145, green 500/7.
#  3: cars 29 kW all from the battery: renewable 29 * (500/7) / 145 = 100/7.
DAY = [
    {"pv_kw": 100.0, "battery_charge_kw": 100.0},
    {"ev_kw": 60.0, "battery_discharge_kw": 38.0},
    {"battery_charge_kw": 50.0},
    {"ev_kw": 29.0, "battery_discharge_kw": 29.0},
]


def test_lossy_battery_that_starts_part_full_and_part_green():
    a = allocate_battery(_flows(DAY), BATTERY, soc_frac=0.25, renewable_frac=0.2)
    assert a["ev_battery_renewable_kwh"].tolist() == pytest.approx([0, 190 / 7, 0, 100 / 7])
    assert a["ev_renewable_kwh"].sum() == pytest.approx(290 / 7)
    assert renewable_share(a) == pytest.approx((290 / 7) / 89)
    assert a["ev_grid_kwh"].tolist() == pytest.approx([0, 22, 0, 0])
    # Content at each step's end: 100/140, 500/7 of 100, 500/7 of 145, unchanged share.
    assert a["battery_renewable_frac"].tolist() == pytest.approx(
        [100 / 140, 5 / 7, (500 / 7) / 145, (500 / 7) / 145]
    )


def test_allocate_battery_passes_efficiencies_and_content():
    f = _flows(DAY)
    a = allocate_battery(f, BATTERY, soc_frac=0.25, renewable_frac=0.2)
    b = allocate(
        f,
        charge_efficiency=0.9,
        discharge_efficiency=0.95,
        initial_stored_kwh=50.0,
        initial_renewable_frac=0.2,
    )
    pd.testing.assert_frame_equal(a, b)
    # No battery: whatever the battery columns say, nothing is stored to start with.
    c = allocate_battery(f, None, soc_frac=0.25, renewable_frac=0.2)
    # (efficiency 1, empty at the start: the 100 kWh of PV make it all green)
    assert c["ev_battery_renewable_kwh"].iloc[1] == pytest.approx(38.0)


def test_starting_soc_dilutes_what_the_grid_charges():
    # 100 kWh green to start (50 % of 200 kWh, all green), then 50 kWh from the grid
    # (45 stored), then 58 kW to cars: 100/145 of it renewable. Ignoring the starting
    # SoC would make it 0 (only grey in the battery).
    f = _flows([{"battery_charge_kw": 50.0}, {"ev_kw": 58.0, "battery_discharge_kw": 58.0}])
    a = allocate_battery(f, BATTERY, soc_frac=0.5, renewable_frac=1.0)
    assert a["ev_renewable_kwh"].iloc[1] == pytest.approx(58 * 100 / 145)


def test_base_load_takes_its_share_of_pv_and_of_the_battery():
    # 0: PV 50 kW, cars 75 kW, other load 25 kW: PV to the loads pro rata, cars get 37.5.
    # 1: PV 100, cars 60, other 20: PV covers both (cars 60), 20 kW of PV and 30 kW of
    #    grid charge the battery (empty at the start): green 18, grey 27 stored.
    # 2: battery gives 40 kW, cars 30 + other 30: cars get 20 from it, 18/45 green = 8.
    f = _flows(
        [
            {"pv_kw": 50.0, "ev_kw": 75.0, "base_load_kw": 25.0},
            {"pv_kw": 100.0, "ev_kw": 60.0, "base_load_kw": 20.0, "battery_charge_kw": 50.0},
            {"ev_kw": 30.0, "base_load_kw": 30.0, "battery_discharge_kw": 40.0},
        ]
    )
    a = allocate_battery(f, BATTERY, soc_frac=0.0)
    assert a["ev_pv_kwh"].tolist() == pytest.approx([37.5, 60.0, 0.0])
    assert a["ev_battery_kwh"].tolist() == pytest.approx([0.0, 0.0, 20.0])
    assert a["ev_battery_renewable_kwh"].tolist() == pytest.approx([0.0, 0.0, 8.0])
    assert a["ev_grid_kwh"].tolist() == pytest.approx([37.5, 0.0, 10.0])
    assert a["battery_renewable_frac"].tolist() == pytest.approx([0.0, 0.4, 0.4])


def test_quarter_hour_steps_scale_energy():
    f = _flows([{"pv_kw": 40.0, "ev_kw": 100.0}, {"ev_kw": 100.0}], step_h=0.25)
    a = allocate(f)
    assert a["ev_kwh"].tolist() == pytest.approx([25.0, 25.0])
    assert a["ev_pv_kwh"].tolist() == pytest.approx([10.0, 0.0])
    assert renewable_share(a) == pytest.approx(0.2)


def test_session_attribution_with_battery_and_base_load():
    f = _flows(DAY)
    a = allocate_battery(f, BATTERY, soc_frac=0.25, renewable_frac=0.2)
    s = pd.DataFrame({"a": [0.0, 45.0, 0.0, 29.0], "b": [0.0, 15.0, 0.0, 0.0]}, index=f.index)
    per = attribute_sessions(s, a)
    # Step 1: a takes 3/4 of 38 kWh battery (190/7 green) and of 22 grid; step 3 all.
    assert per.loc["a", "renewable_kwh"] == pytest.approx(0.75 * 190 / 7 + 100 / 7)
    assert per.loc["b", "battery_kwh"] == pytest.approx(0.25 * 38)
    assert per.loc["b", "grid_kwh"] == pytest.approx(0.25 * 22)
    assert per.loc["b", "renewable_frac"] == pytest.approx((0.25 * 190 / 7) / 15)


def test_renewable_share_nan_without_ev_energy():
    assert np.isnan(renewable_share(allocate(_flows([{"pv_kw": 10.0}]))))


# --------------------------------------------------------------------------- property test


def _ledger(rows, eta_c, eta_d, stored0, green_frac0):
    """Independent bookkeeping: the battery as two pools (green, grey kWh).

    Per step (1 h): net charge against discharge; PV serves the loads pro rata, the
    rest of the PV charges, the grid charges the remainder; the battery serves loads
    next; what the battery gives takes both pools pro rata at the step start.
    Returns per step (ev_pv, ev_batt, ev_batt_green, green_frac_end) and pools.
    """
    green, grey = stored0 * green_frac0, stored0 * (1 - green_frac0)
    last = green_frac0
    out = []
    for r in rows:
        pv, ev, base = r["pv_kw"], r["ev_kw"], r["base_load_kw"]
        c, d = r["battery_charge_kw"], r["battery_discharge_kw"]
        c, d = c - min(c, d), d - min(c, d)
        load = ev + base
        pv_used = min(pv, load)
        share = ev / load if load > 0 else 0.0
        from_batt = min(d, load - pv_used)
        total = green + grey
        frac = green / total if total > 1e-9 else last
        pv_in = min(pv - pv_used, c)
        drawn = d / eta_d
        green += pv_in * eta_c - drawn * frac
        grey += (c - pv_in) * eta_c - drawn * (1 - frac)
        total = green + grey
        last = green / total if total > 1e-9 else frac
        out.append((pv_used * share, from_batt * share, from_batt * share * frac, last))
    return out, green, grey


step = st.fixed_dictionaries(
    {
        "pv_kw": st.floats(0, 200),
        "ev_kw": st.floats(0, 200),
        "base_load_kw": st.floats(0, 50),
        "battery_charge_kw": st.floats(0, 100),
        "battery_discharge_kw": st.floats(0, 100),
    }
)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(step, min_size=1, max_size=12),
    eta_c=st.floats(0.8, 1.0),
    eta_d=st.floats(0.8, 1.0),
    stored0=st.floats(0, 400),
    green0=st.floats(0, 1),
)
def test_allocation_matches_two_pool_ledger(rows, eta_c, eta_d, stored0, green0):
    # Keep the battery physical: it never gives more than it holds.
    stored = stored0
    for r in rows:
        c, d = r["battery_charge_kw"], r["battery_discharge_kw"]
        t = min(c, d)
        net_out = min(d - t, stored * eta_d)
        r["battery_discharge_kw"] = t + net_out
        stored += (c - t) * eta_c - net_out / eta_d
    f = _flows(rows)
    a = allocate(
        f,
        charge_efficiency=eta_c,
        discharge_efficiency=eta_d,
        initial_stored_kwh=stored0,
        initial_renewable_frac=green0,
    )
    ref, green, grey = _ledger(rows, eta_c, eta_d, stored0, green0)
    ev = f["ev_kw"].to_numpy()
    tol = dict(rel=1e-6, abs=1e-6)
    assert a["ev_pv_kwh"].tolist() == pytest.approx([x[0] for x in ref], **tol)
    assert a["ev_battery_kwh"].tolist() == pytest.approx([x[1] for x in ref], **tol)
    assert a["ev_battery_renewable_kwh"].tolist() == pytest.approx([x[2] for x in ref], **tol)
    # Energy conserved: every car kWh has exactly one source, none negative.
    parts = a[["ev_pv_kwh", "ev_battery_kwh", "ev_grid_kwh"]].to_numpy()
    assert (parts > -1e-9).all()
    assert parts.sum(axis=1) == pytest.approx(ev, **tol)
    assert (a["ev_renewable_kwh"] + a["ev_nonrenewable_kwh"]).tolist() == pytest.approx(ev, **tol)
    # Shares in [0, 1]; the renewable part of the battery's energy within it.
    assert (
        (a["battery_renewable_frac"] >= -1e-9) & (a["battery_renewable_frac"] <= 1 + 1e-9)
    ).all()
    assert (a["ev_battery_renewable_kwh"] <= a["ev_battery_kwh"] + 1e-9).all()
    share = renewable_share(a)
    assert np.isnan(share) or -1e-9 <= share <= 1 + 1e-9
    # Losses where they belong: what the battery holds at the end is what went in
    # times eta_c minus what came out over eta_d, and its green share matches the pools.
    if green + grey > 1e-6:
        assert a["battery_renewable_frac"].iloc[-1] == pytest.approx(
            green / (green + grey), abs=1e-6
        )


# --------------------------------------------------------------------------- edges and defaults


def test_defaults_are_a_lossless_battery_that_starts_empty_and_grey():
    # Hour 0: 100 kWh of PV in; hour 1: 100 kWh of grid in; hour 2: 50 kWh to cars.
    f = _flows(
        [
            {"pv_kw": 100.0, "battery_charge_kw": 100.0},
            {"battery_charge_kw": 100.0},
            {"ev_kw": 50.0, "battery_discharge_kw": 50.0},
        ]
    )
    a = allocate(f)
    assert a["ev_battery_renewable_kwh"].iloc[2] == pytest.approx(25.0)
    assert a["battery_renewable_frac"].tolist() == pytest.approx([1.0, 0.5, 0.5])
    # Discharge from what the record says is empty: the starting share is used (default 0).
    g = _flows([{"ev_kw": 10.0, "battery_discharge_kw": 10.0}])
    assert allocate(g)["ev_battery_renewable_kwh"].iloc[0] == 0.0
    assert allocate(g, initial_renewable_frac=0.3)["ev_battery_renewable_kwh"].iloc[0] == (
        pytest.approx(3.0)
    )
    assert allocate_battery(g, None, 0.9, renewable_frac=0.3)["ev_battery_renewable_kwh"].iloc[
        0
    ] == pytest.approx(3.0)


def test_quarter_hours_with_base_load_and_battery():
    # 15-minute steps: kW x 0.25 h. Step 0: PV 80, cars 40, other 40, PV 0 to the battery
    # (grid charges 20 kW -> 5 kWh, 4.5 stored grey). Step 1: battery 38 kW to cars 19 +
    # other 19 (stored drawn 10 kWh, the only content is grey plus 45 green from before).
    f = _flows(
        [
            {"pv_kw": 80.0, "ev_kw": 40.0, "base_load_kw": 40.0, "battery_charge_kw": 20.0},
            {"ev_kw": 19.0, "base_load_kw": 19.0, "battery_discharge_kw": 38.0},
            {"battery_charge_kw": 20.0},
        ],
        step_h=0.25,
    )
    a = allocate(
        f,
        charge_efficiency=0.9,
        discharge_efficiency=0.95,
        initial_stored_kwh=45.0,
        initial_renewable_frac=1.0,
    )
    assert a["ev_pv_kwh"].tolist() == pytest.approx([10.0, 0.0, 0.0])
    assert a["ev_battery_kwh"].tolist() == pytest.approx([0.0, 4.75, 0.0])
    # Step 1 starts with 45 green + 4.5 grey.
    assert a["ev_battery_renewable_kwh"].iloc[1] == pytest.approx(4.75 * 45 / 49.5)
    # Step 1 drew 9.5 / 0.95 = 10 kWh (45/49.5 of it green), step 2 put 4.5 grey in:
    # 45 - 10 x 45/49.5 green of 49.5 - 10 + 4.5 = 44 kWh.
    green = 45 - 10 * 45 / 49.5
    assert a["battery_renewable_frac"].iloc[2] == pytest.approx(green / 44.0)
    assert a["step_h"].tolist() == pytest.approx([0.25, 0.25, 0.25])


def test_step_lengths_from_the_row_starts():
    from megastation.core.accounting import frame_step_hours, step_hours

    idx = pd.DatetimeIndex(
        ["2026-06-15 00:00", "2026-06-15 00:15", "2026-06-15 00:45", "2026-06-15 01:45"], tz="UTC"
    )
    assert step_hours(idx).tolist() == pytest.approx([0.25, 0.5, 1.0, 1.0])
    assert step_hours(idx[:1]).tolist() == [0.25]
    assert step_hours(idx[:1], default_h=1.0).tolist() == [1.0]
    assert step_hours(idx[:0]).tolist() == []
    f = pd.DataFrame({"step_h": [0.5, 0.25]}, index=idx[:2])
    assert frame_step_hours(f).tolist() == [0.5, 0.25]
    f = pd.DataFrame({"step_s": [900, 1800]}, index=idx[:2])
    assert frame_step_hours(f).tolist() == [0.25, 0.5]
    assert frame_step_hours(pd.DataFrame(index=idx[:2])).tolist() == [0.25, 0.25]


def test_missing_columns_are_all_named():
    f = _flows([{"pv_kw": 1.0}]).drop(columns=["pv_kw", "grid_export_kw"])
    with pytest.raises(ValueError, match=r"missing column\(s\) pv_kw, grid_export_kw$"):
        allocate(f)


def test_sessions_missing_from_a_step_and_without_energy():
    f = _flows([{"pv_kw": 30.0, "ev_kw": 30.0}, {"ev_kw": 20.0}])
    a = allocate(f)
    # Session "a" has no row for step 1; "b" never charges.
    s = pd.DataFrame({"a": [30.0], "b": [0.0]}, index=f.index[:1])
    per = attribute_sessions(s, a)
    assert per.index.name == "session_id"
    assert per.loc["a", "energy_kwh"] == pytest.approx(30.0)
    assert per.loc["a", "renewable_kwh"] == pytest.approx(30.0)
    assert per.loc["a", "renewable_frac"] == pytest.approx(1.0)
    assert per.loc["b", "energy_kwh"] == 0.0 and np.isnan(per.loc["b", "renewable_frac"])


def test_share_of_a_small_day_is_a_number():
    a = allocate(_flows([{"pv_kw": 0.2, "ev_kw": 0.5}], step_h=1.0))
    assert renewable_share(a) == pytest.approx(0.4)


def test_default_efficiency_is_one_with_a_starting_content():
    # 100 kWh grey to start, 50 kWh of PV in: a third green (lossless by default).
    f = _flows([{"pv_kw": 50.0, "battery_charge_kw": 50.0}])
    a = allocate(f, initial_stored_kwh=100.0)
    assert a["battery_renewable_frac"].iloc[0] == pytest.approx(1 / 3)
    g = _flows(
        [{"ev_kw": 30.0, "battery_discharge_kw": 30.0}, {"pv_kw": 30.0, "battery_charge_kw": 30.0}]
    )
    # 60 kWh green to start, 30 out (lossless: 30 drawn), 30 of PV in: 60 green of 60.
    b = allocate(g, initial_stored_kwh=60.0, initial_renewable_frac=0.5)
    assert b["battery_renewable_frac"].tolist() == pytest.approx([0.5, 45 / 60])


def test_a_battery_holding_less_than_a_kwh_keeps_its_content():
    # 0.5 kWh green, 0.4 kWh of grid in, then 0.45 kWh to a car: 0.5 / 0.9 of it green.
    f = _flows([{"battery_charge_kw": 0.4}, {"ev_kw": 0.45, "battery_discharge_kw": 0.45}])
    a = allocate(f, initial_stored_kwh=0.5, initial_renewable_frac=1.0)
    assert a["battery_renewable_frac"].iloc[0] == pytest.approx(0.5 / 0.9)
    assert a["ev_battery_renewable_kwh"].iloc[1] == pytest.approx(0.45 * 0.5 / 0.9)


def test_frame_without_base_load_column():
    f = _flows([{"pv_kw": 50.0, "ev_kw": 100.0}, {"ev_kw": 20.0}]).drop(columns="base_load_kw")
    a = allocate(f)
    assert a["ev_pv_kwh"].tolist() == pytest.approx([50.0, 0.0])
    assert a["ev_grid_kwh"].tolist() == pytest.approx([50.0, 20.0])
    assert not a.isna().any().any()


def test_sessions_with_less_than_a_kwh():
    f = _flows([{"pv_kw": 0.3, "ev_kw": 0.6}], step_h=0.5)
    a = allocate(f)
    s = pd.DataFrame({"a": [0.4], "b": [0.2]}, index=f.index)
    per = attribute_sessions(s, a)
    assert per["energy_kwh"].tolist() == pytest.approx([0.2, 0.1])
    assert per["pv_direct_kwh"].tolist() == pytest.approx([0.1, 0.05])
    assert per["renewable_frac"].tolist() == pytest.approx([0.5, 0.5])
