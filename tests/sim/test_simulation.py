"""Socket-free simulation of the seed station: physics, limits, policies, determinism, CLI.

One daytime window (6 h of a clear summer day) is simulated once per policy for the
whole module; the invariants are checked on what the runs recorded.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import Station, load_station, seeds_dir
from megastation.core.fleet import CarVisit, generate_visits
from megastation.sim.simulator import (
    SimulationError,
    SimulationResult,
    bill_krw,
    perfect_foresight,
    prepare_site,
    read_weather,
    simulate,
    stored_energy_value_krw_per_kwh,
    weather_start,
)

# 2026-06-30 08:00 in Seoul: the clear-day seed weather's morning.
START = datetime(2026, 6, 29, 23, 0, tzinfo=UTC)
HOURS = 6.0
WEATHER = "clear-day"
SEED = 1


@pytest.fixture(scope="module")
def seed_station() -> Station:
    return load_station(seeds_dir() / "gwangju-donggu.toml")


@pytest.fixture(scope="module")
def runs(seed_station: Station) -> dict[str, SimulationResult]:
    """re100 (with the perfect-foresight optimum), uncontrolled and greedy on the same
    sun and cars."""
    from datetime import timedelta

    end = START + timedelta(hours=HOURS)
    site = prepare_site(seed_station, START, end, WEATHER, SEED)
    visits = generate_visits(seed_station, START, end, SEED)
    out = {}
    for policy in ("re100", "uncontrolled", "uncontrolled-idle", "greedy"):
        out[policy] = simulate(
            seed_station,
            start=START,
            hours=HOURS,
            policy=policy,
            weather=WEATHER,
            seed=SEED,
            site=site,
            visits=visits,
            with_perfect_foresight=policy == "re100",
        )
    return out


POLICIES_RUN = ("re100", "uncontrolled", "greedy")


def car_visit(
    charger_id: str, arrival: datetime, stay_min: float, energy_kwh: float, **kw
) -> CarVisit:
    """One car on connector 1 of ``charger_id`` (a test car: 80 kWh, 100 kW, 20 % SoC,
    no ChargingNeeds; ``kw`` overrides)."""
    base = dict(
        connector_id=1, car_model="test", battery_kwh=80.0, car_max_power_kw=100.0,
        soc_arrival_frac=0.2, sends_charging_needs=False, id_token=f"T-{charger_id}",
    )  # fmt: skip
    return CarVisit(
        charger_id=charger_id, arrival=arrival, departure=arrival + timedelta(minutes=stay_min),
        energy_wanted_kwh=energy_kwh, **{**base, **kw},
    )  # fmt: skip


@pytest.mark.parametrize("policy", POLICIES_RUN)
def test_energy_balances_every_recorded_step(runs, policy):
    f = runs[policy].flows
    assert len(f) == HOURS * 4  # 15-minute flow steps
    supply = f["pv_kw"] + f["battery_discharge_kw"] + f["grid_import_kw"]
    demand = f["ev_kw"] + f["base_load_kw"] + f["battery_charge_kw"] + f["grid_export_kw"]
    scale = np.maximum(supply.abs(), 1.0)
    assert ((supply - demand).abs() / scale).max() <= 1e-6


@pytest.mark.parametrize("policy", ("re100", "greedy"))
def test_grid_limit_never_exceeded(runs, policy):
    r = runs[policy]
    f = r.flows
    assert (f["grid_import_kw"] <= f["grid_limit_kw"] + 1e-6).all()
    assert r.kpis.steps_over_limit == 0
    assert r.kpis.peak_import_kw <= r.kpis.grid_limit_kw + 1e-6


@pytest.mark.parametrize("policy", POLICIES_RUN)
def test_battery_soc_within_bounds(runs, policy, seed_station):
    b = seed_station.battery
    soc = runs[policy].flows["soc_frac"]
    assert soc.notna().all()
    assert soc.min() >= b.soc_min_frac - 1e-6
    assert soc.max() <= b.soc_max_frac + 1e-6
    f = runs[policy].flows
    assert (f["battery_charge_kw"] <= b.max_charge_kw + 1e-6).all()
    assert (f["battery_discharge_kw"] <= b.max_discharge_kw + 1e-6).all()


@pytest.mark.parametrize("policy", POLICIES_RUN)
def test_sessions_never_get_more_than_requested(runs, policy):
    s = runs[policy].sessions
    assert len(s) == runs[policy].kpis.sessions > 0
    assert (s["energy_kwh"] <= s["energy_wanted_kwh"] + 1e-6).all()
    assert (s["energy_kwh"] >= 0).all()
    # the sessions add up to the EV energy the flow record saw
    f = runs[policy].flows
    ev_kwh = float((f["ev_kw"] * f["step_s"] / 3600).sum())
    assert s["energy_kwh"].sum() == pytest.approx(ev_kwh, rel=1e-6)
    assert runs[policy].kpis.energy_delivered_kwh == pytest.approx(ev_kwh, rel=1e-9)


def test_re100_has_a_higher_renewable_share_than_uncontrolled(runs):
    # against the idle battery: with the battery in self-consumption ("uncontrolled")
    # re100 does not win this window yet (0.748 vs 0.755; #11, benchmarks/outcome.py)
    re100, unc = runs["re100"].kpis, runs["uncontrolled-idle"].kpis
    assert re100.renewable_frac > unc.renewable_frac + 0.05
    assert re100.grid_import_kwh < unc.grid_import_kwh


def test_perfect_foresight_is_the_limit_on_its_own_tiers(runs):
    """The optimum (re100 tiers: 1. deliver what cars want, 2. renewable energy into
    cars) is at least as good as every online policy.

    Exception, by time discretisation: the optimum plans on 15-minute steps and lets a
    car charge only in the steps it is plugged in for entirely, while the simulated
    cars charge from their arrival minute. So uncontrolled charging (full power at
    once) may deliver a few kWh more; it is allowed 2 % of the wanted energy.
    """
    pf = runs["re100"].perfect_foresight
    assert pf is not None
    wanted = pf.energy_wanted_kwh
    assert wanted == pytest.approx(runs["re100"].kpis.energy_wanted_kwh)
    for policy, r in runs.items():
        k = r.kpis
        assert pf.unmet_kwh <= k.unmet_kwh + 0.02 * wanted, policy
        pf_green = pf.renewable_frac * pf.energy_delivered_kwh
        assert pf_green >= k.renewable_frac * k.energy_delivered_kwh - 1e-6, policy
    assert pf.steps_over_limit == 0


@pytest.mark.parametrize("start_h", [0.0, 9.0])  # 08:00-14:00 and 17:00-23:00 local
def test_the_cost_optimum_has_the_lowest_bill(seed_station, start_h):
    """The optimum under cost tiers is the reference for the cost policy (#11): on the
    LP's money (a month's demand charge on the peak, stored energy gained valued at the
    mean price) it is no dearer than the re100-tier optimum or uncontrolled charging,
    and delivers as much as the re100-tier one."""
    start = START + timedelta(hours=start_h)
    end = start + timedelta(hours=HOURS)
    site = prepare_site(seed_station, start, end, WEATHER, SEED)
    visits = generate_visits(seed_station, start, end, SEED)
    value = stored_energy_value_krw_per_kwh(seed_station, start, end)
    assert 50.0 < value < 200.0  # KRW per stored kWh: the seed tariff's mean x 0.95
    pf_re100, _ = perfect_foresight(seed_station, start, end, site, visits)
    pf_cost, _ = perfect_foresight(seed_station, start, end, site, visits, policy="cost")
    unc = simulate(
        seed_station, start=start, hours=HOURS, policy="uncontrolled", weather=WEATHER,
        seed=SEED, site=site, visits=visits, with_perfect_foresight=False,
    ).kpis  # fmt: skip
    assert pf_cost.energy_delivered_kwh == pytest.approx(pf_re100.energy_delivered_kwh, abs=0.1)
    best = bill_krw(pf_cost, seed_station, value)
    assert best <= bill_krw(pf_re100, seed_station, value) * 1.001
    assert best < bill_krw(unc, seed_station, value)


def test_same_seed_same_totals(seed_station):
    kw = {"start": START, "hours": 2.0, "weather": WEATHER, "with_perfect_foresight": False}
    a = simulate(seed_station, policy="re100", seed=3, **kw)
    b = simulate(seed_station, policy="re100", seed=3, **kw)
    for name, value in a.kpis.as_dict().items():
        assert getattr(b.kpis, name) == pytest.approx(value, rel=1e-9, abs=1e-9), name
    pd.testing.assert_frame_equal(a.flows, b.flows)
    c = simulate(seed_station, policy="uncontrolled", seed=4, **kw)
    assert c.kpis.energy_wanted_kwh != a.kpis.energy_wanted_kwh  # other cars


def test_bad_simulation_inputs_are_named(seed_station):
    with pytest.raises(SimulationError, match="policy"):
        simulate(seed_station, policy="fastest", hours=1)
    with pytest.raises(SimulationError, match="days/hours"):
        simulate(seed_station, hours=0)
    with pytest.raises(SimulationError, match="weather"):
        simulate(seed_station, hours=1, weather="no/such/weather.csv")


# --------------------------------------------------------------------------- CLI


def _simulate(tmp_path, *args: str):
    runner = CliRunner()
    return runner.invoke(
        main,
        ["--db", str(tmp_path / "unused.db"), "simulate", *args],
        catch_exceptions=False,
    )


def test_simulate_cli_prints_the_comparison_and_writes_files(tmp_path):
    out = tmp_path / "sim"
    res = _simulate(
        tmp_path,
        "--days", "0.125",
        "--start", "2026-06-30T09:00",
        "--policy", "re100,uncontrolled",
        "--weather", WEATHER,
        "--out", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for word in ("re100", "uncontrolled", "perfect foresight", "renewable"):
        assert word in res.output.lower() or word in res.output
    names = {p.name for p in out.iterdir()}
    for pol in ("re100", "uncontrolled"):
        assert f"{pol}.db" in names
        for kind in ("energy-flows", "sessions", "daily"):
            assert f"{pol}-{kind}.csv" in names
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["run"]) == ["re100", "uncontrolled", "perfect_foresight"]
    assert {"energy_delivered_kwh", "renewable_frac", "peak_import_kw", "cost_krw"} <= set(
        summary.columns
    )
    flows = pd.read_csv(out / "re100-energy-flows.csv")
    assert len(flows) == 3 * 4
    assert not (tmp_path / "unused.db").exists()


def test_simulate_cli_with_cost_adds_the_cost_tier_optimum(tmp_path, seed_station):
    """With ``cost`` among the policies the cost policy gets its own reference: the optimum
    under cost tiers, in the table and in summary.csv, no dearer on the LP's money than
    the cost run."""
    out = tmp_path / "sim"
    res = _simulate(
        tmp_path, "--days", "0.25", "--start", "2026-06-30T17:00", "--policy", "cost",
        "--weather", WEATHER, "--out", str(out), "--jobs", "1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "perfect foresight (cost)" in res.output
    summary = pd.read_csv(out / "summary.csv").set_index("run")
    assert list(summary.index) == ["cost", "perfect_foresight", "perfect_foresight_cost"]
    start = datetime(2026, 6, 30, 8, 0, tzinfo=UTC)  # 17:00 Seoul
    value = stored_energy_value_krw_per_kwh(seed_station, start, start + timedelta(hours=6))

    def bill(run: str) -> float:
        row = summary.loc[run]
        k = SimpleNamespace(**row.to_dict())
        return bill_krw(k, seed_station, value)

    assert bill("perfect_foresight_cost") <= bill("perfect_foresight") * 1.001
    assert bill("perfect_foresight_cost") < bill("cost")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--policy", "fastest"], "--policy"),
        (["--policy", "re100,nonsense"], "--policy"),
        (["--days", "0"], "--days"),
        (["--days", "-1"], "--days"),
        (["--weather", "no-such-weather.csv"], "--weather"),
        (["--start", "30/06/2026"], "--start"),
    ],
)
def test_simulate_cli_bad_options_name_the_option(tmp_path, args, option):
    res = _simulate(tmp_path, "--out", str(tmp_path / "o"), *args)
    assert res.exit_code != 0
    assert option in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # nothing written


def test_simulate_cli_runs_policies_in_parallel_with_the_same_results(tmp_path):
    """--jobs 2 (worker processes) and --jobs 1 give the same summary, from local
    midnight and from 10:00; plans keep only the latest horizon unless --keep-plans."""
    import sqlite3

    # From 10:00 the re100 run once differed (grid import 0.846 vs 0.848 kWh): the
    # solar-geometry cache ignored the index's zone while the day of year was taken
    # from its local clock time, so in-process the grid prepare_site computed in local
    # time fed the UTC forecasts, in a fresh worker process it did not.
    for start in ("2026-06-30", "2026-06-30T10:00"):
        common = ("--days", "0.1", "--start", start, "--weather", WEATHER)
        runs = {}
        for jobs in ("1", "2"):
            out = tmp_path / start.replace(":", "") / f"j{jobs}"
            res = _simulate(tmp_path, *common, "--policy", "re100,greedy", "--jobs", jobs,
                            "--out", str(out))  # fmt: skip
            assert res.exit_code == 0, res.output
            runs[jobs] = pd.read_csv(out / "summary.csv").set_index("run")
        pd.testing.assert_frame_equal(runs["1"], runs["2"], rtol=1e-9, obj=start)
    con = sqlite3.connect(out / "re100.db")
    horizons = [h for (h,) in con.execute("SELECT horizon FROM control_plans ORDER BY id")]
    con.close()
    assert len(horizons) > 1
    assert all(h == "{}" for h in horizons[:-1]) and "session_kw" in horizons[-1]


def test_simulation_forecaster_matches_forecast_pv(station):
    """The simulator's precomputed PV forecasts equal forecasts.forecast_pv (nowcast with
    measured PV, bands, per array) at any issue time in the period."""
    from forecasts.forecast import forecast_pv
    from megastation.sim.simulator import _StepForecastCache

    wx = read_weather(WEATHER)
    start = weather_start(wx, station.site.timezone)
    site = prepare_site(station, start, start + timedelta(days=1), wx, 1)
    cache = _StepForecastCache(station, site.forecast_weather)
    idx = pd.date_range(start, periods=24 * 60, freq="1min")
    rows = (idx - site.index[0]) // pd.Timedelta(minutes=15)
    measured = pd.Series(0.8 * site.pv_actual_kw[rows], index=idx)
    for hours in (0.0, 8.0, 11.3, 13.1, 17.0):
        t = pd.Timestamp(start + timedelta(hours=hours))
        m = measured[measured.index < t]
        m = m if len(m) else None
        want = forecast_pv(
            station.pv_site(), t, 98, 15, weather=site.forecast_weather, measured_kw=m
        )
        cache._key = None
        got = cache(station, t, 97, 15, weather=site.forecast_weather, measured_kw=m)
        pd.testing.assert_frame_equal(got, want, check_freq=False, rtol=1e-9)
        assert got.attrs["k_meas"] == want.attrs["k_meas"]
        # the arrays the plan reads (#15): the frame's own, bit for bit
        history = (
            list(zip(m.index.to_pydatetime(), m.to_numpy(), strict=True)) if m is not None else []
        )
        cache._arrays_key = None
        arr = cache.arrays(station, t, 97, 15, weather=site.forecast_weather, history=history)
        assert np.array_equal(arr.index_ns, got.index.as_unit("ns").asi8)
        for col, a in (
            ("pv_ac_kw", arr.p50_kw),
            ("pv_ac_p10_kw", arr.p10_kw),
            ("pv_ac_p90_kw", arr.p90_kw),
        ):
            assert np.array_equal(a, got[col].to_numpy())


def test_battery_following_the_balance_stores_surplus_instead_of_exporting(seed_station, runs):
    """Between plans the battery takes the PV surplus the cars did not (the live guard
    loop's rule); holding the plan's set point instead sends it to the grid."""
    end = START + timedelta(hours=HOURS)
    hold = simulate(
        seed_station,
        start=START,
        hours=HOURS,
        policy="re100",
        weather=WEATHER,
        seed=SEED,
        site=prepare_site(seed_station, START, end, WEATHER, SEED),
        visits=generate_visits(seed_station, START, end, SEED),
        with_perfect_foresight=False,
        follow_balance=False,
    ).kpis
    follow = runs["re100"].kpis
    assert follow.grid_export_kwh < hold.grid_export_kwh
    assert follow.renewable_frac >= hold.renewable_frac - 1e-9
    assert follow.steps_over_limit == 0
    assert follow.unmet_kwh <= hold.unmet_kwh + 0.01 * follow.energy_wanted_kwh


def test_renewable_energy_left_in_the_battery_is_reported(seed_station):
    """A 200 kWh battery half full of grid energy takes 1 h of 40 kW PV at 95 % and gives
    a car 1 h of 19 kW at 95 %: the content is mixed pro rata, by hand."""
    from dataclasses import replace

    from megastation.core.config import BatteryConfig
    from megastation.sim.simulator import flow_kpis

    b = BatteryConfig(capacity_kwh=200.0, max_charge_kw=100.0, max_discharge_kw=100.0)
    st = replace(seed_station, battery=b)
    idx = pd.date_range(START, periods=2, freq="1h")
    frame = pd.DataFrame(
        {
            "step_s": 3600.0,
            "pv_kw": [40.0, 0.0],
            "ev_kw": [0.0, 18.05],
            "base_load_kw": 0.0,
            "battery_charge_kw": [40.0, 0.0],
            "battery_discharge_kw": [0.0, 19.0],
            "grid_import_kw": 0.0,
            "grid_export_kw": 0.0,
            "soc_frac": [0.5, np.nan],
        },
        index=idx,
    )
    k = flow_kpis(st, frame, energy_wanted_kwh=18.05, sessions=1, initial_soc_frac=0.5)
    stored_after_charge = 100.0 + 40.0 * 0.95  # 138 kWh, 38 of them green
    green_frac = 38.0 / stored_after_charge
    stored_end = stored_after_charge - 19.0 / 0.95  # 118 kWh
    assert k.battery_renewable_end_kwh == pytest.approx(stored_end * green_frac, rel=1e-6)
    assert k.renewable_frac == pytest.approx(green_frac, rel=1e-6)  # what the car got


@pytest.mark.parametrize(("rule", "left"), [("drawing", 1), (True, 1), ("always", 2), (False, 0)])
def test_a_car_that_leaves_while_drawing_nothing_triggers_no_plan(
    seed_station, tmp_path, rule, left
):
    """Re-plan on departure only for a car still drawing power: its share is free now; a
    full car's departure frees nothing a plan can use (#15: ~19 % fewer plans)."""
    arrival = START + timedelta(minutes=5)
    visits = [
        car_visit("GJDG-DC-01", arrival, 60, 4.0),  # full before it leaves
        car_visit("GJDG-DC-02", arrival, 50, 60.0),  # still charging
    ]
    db = tmp_path / "r.db"
    r = simulate(
        seed_station, start=START, hours=2.0, policy="re100", weather=WEATHER, seed=SEED,
        visits=visits, plan_interval_s=4 * 3600, with_perfect_foresight=False,
        replan_on_departure=rule, db_path=db,
    )  # fmt: skip
    got = r.sessions.set_index("charger_id")["energy_kwh"]
    assert got["GJDG-DC-01"] == pytest.approx(4.0, abs=0.01)  # full before it left
    assert got["GJDG-DC-02"] < 59.0  # still charging when it left
    with sqlite3.connect(db) as con:
        reasons = [x for (x,) in con.execute("SELECT reason FROM control_plans ORDER BY id")]
    assert sum("car_left" in x for x in reasons) == left
    assert sum("car_plugged_in" in x for x in reasons) == 1  # both arrived in one substep


def test_a_bad_departure_rule_is_named(seed_station):
    with pytest.raises(SimulationError, match="replan_on_departure"):
        simulate(seed_station, hours=1, replan_on_departure="sometimes")


@pytest.mark.parametrize("policy", ["uncontrolled", "re100"])
def test_an_ac_car_takes_its_last_energy_below_its_6_a_minimum_on_average(seed_station, policy):
    """A car's last few Wh need less than a minute at the AC 6 A minimum: it charges at the
    minimum until full (the simulator used to ask it for the mean power, which an AC car
    refuses, so it never finished); and a battery covering that car's draw never sends
    stored energy to the grid."""
    start = START + timedelta(hours=10)  # 19:00 Seoul
    # 15 Wh: 39 s at 6 A (1.38 kW), 0.9 kW over a minute
    car = car_visit(
        "GJDG-AC-01", start, 60, 0.015, battery_kwh=64.0, car_max_power_kw=11.0,
        soc_arrival_frac=0.5,
    )  # fmt: skip
    r = simulate(
        seed_station, policy=policy, start=start, hours=0.5, weather=WEATHER, visits=[car],
        with_perfect_foresight=False,
    )  # fmt: skip
    assert r.kpis.energy_delivered_kwh == pytest.approx(0.015, abs=1e-6)
    assert r.kpis.unmet_kwh == pytest.approx(0.0, abs=1e-6)
    assert r.battery_export_kwh == 0.0
