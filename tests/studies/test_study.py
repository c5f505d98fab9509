"""Sizing studies: the spec, the economics, and cells on a local pool and a Dask cluster."""

from __future__ import annotations

import math

import distributed
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import load_station, seeds_dir
from megastation.studies.cell import scaled_station
from megastation.studies.economics import annualise, annuity_factor, pareto_front
from megastation.studies.run import run_study
from megastation.studies.spec import Capex, Cell, StudyError, StudySpec, parse_spec

STATION = load_station(seeds_dir() / "gwangju-donggu.toml")


def test_annuity_factor_matches_the_textbook_formula() -> None:
    # 1,000 KRW over 10 years at 5 %: 129.50 KRW a year (standard capital recovery table)
    assert annuity_factor(0.05, 10) * 1000 == pytest.approx(129.50, abs=0.01)
    assert annuity_factor(0.0, 20) == pytest.approx(0.05)


def test_pareto_front_keeps_only_points_nothing_beats() -> None:
    cost = np.array([10.0, 12.0, 11.0, 15.0, 12.0])
    share = np.array([0.30, 0.50, 0.30, 0.60, 0.40])
    # (11, .30) is beaten by (10, .30); (12, .40) by (12, .50)
    assert pareto_front(cost, share).tolist() == [True, True, False, True, False]


def test_annualise_scales_the_period_and_adds_the_capital_annuity() -> None:
    row = {
        "pv_kwp": 100.0, "battery_kwh": 200.0, "battery_kw": 50.0, "grid_limit_kw": 300.0,
        "days": 73.0, "energy_cost_krw": 1_000.0, "demand_charge_krw": 500.0,
    }  # fmt: skip
    capex = Capex(pv_krw_per_kwp=10.0, battery_krw_per_kwh=2.0, battery_krw_per_kw=4.0,
                  grid_krw_per_kw=1.0, lifetime_years=10, discount_rate=0.05)  # fmt: skip
    out = annualise(pd.DataFrame([row]), capex).iloc[0]
    assert out.energy_cost_krw_per_year == pytest.approx(5_000.0)  # 365 / 73 = 5
    assert out.demand_charge_krw_per_year == pytest.approx(2_500.0)
    assert out.capex_krw == pytest.approx(100 * 10 + 200 * 2 + 50 * 4 + 300 * 1)
    expected = 5_000 + 2_500 + 1_900 * annuity_factor(0.05, 10)
    assert out.annual_cost_krw == pytest.approx(expected)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"study": {"pv_kwp": [100, -5]}}, "study.pv_kwp"),
        ({"study": {"battery_kwh": "big"}}, "study.battery_kwh"),
        ({"study": {"grid_limit_kw": [float("nan")]}}, "study.grid_limit_kw"),
        ({"study": {"policies": ["re100", "fastest"]}}, "study.policies"),
        ({"study": {"seeds": [1.5]}}, "study.seeds"),
        ({"study": {"pv_kwp": [100, 100]}}, "study.pv_kwp"),
        ({"study": {"colour": "red"}}, "study.colour"),
        ({"capex": {"discount_rate": 4.5}}, "capex.discount_rate"),
        ({"capex": {"pv_per_kwp": 1}}, "capex.pv_per_kwp"),
        ({"sweep": {}}, "sweep"),
    ],
)
def test_a_bad_study_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(StudyError) as e:
        parse_spec(data)
    assert e.value.field == field


def test_cells_cover_every_combination_and_default_to_the_station() -> None:
    spec = StudySpec(pv_kwp=(100.0, 200.0), battery_kwh=(0.0, 500.0), seeds=(1, 2))
    cells = spec.cells(STATION)
    assert len(cells) == 8
    assert {c.grid_limit_kw for c in cells} == {STATION.site.grid_import_limit_kw}
    assert {c.battery_kw for c in cells} == {STATION.battery.max_discharge_kw}
    assert len({c.key for c in cells}) == 8


def test_scaled_station_scales_arrays_and_inverters_and_drops_an_empty_battery() -> None:
    s = scaled_station(STATION, Cell(300.0, 0.0, 0.0, 250.0, "re100", 1))
    assert sum(a.peak_power_kw for a in s.pv_arrays) == pytest.approx(300.0)
    own = sum(a.peak_power_kw for a in STATION.pv_arrays)
    for new, old in zip(s.pv_arrays, STATION.pv_arrays, strict=True):
        assert new.peak_power_kw == pytest.approx(old.peak_power_kw * 300.0 / own)
        if old.inverter_ac_kw is not None:
            assert new.inverter_ac_kw == pytest.approx(old.inverter_ac_kw * 300.0 / own)
    assert s.battery is None
    assert s.site.grid_import_limit_kw == 250.0
    b = scaled_station(STATION, Cell(200.0, 800.0, 100.0, 400.0, "re100", 1)).battery
    assert (b.capacity_kwh, b.max_charge_kw, b.max_discharge_kw) == (800.0, 100.0, 100.0)


# Four one-day cells that differ where it shows: PV size and battery size under the
# self-consumption-free uncontrolled policy (fast), with the optimum per cell.
SMALL = StudySpec(pv_kwp=(100.0, 200.0), battery_kwh=(0.0, 500.0), battery_kw=(250.0,),
                  policies=("uncontrolled",), days=1.0, weather="clear-day")  # fmt: skip
KEYS = ["pv_kwp", "battery_kwh", "battery_kw", "grid_limit_kw", "policy", "seed"]


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["wall_s"]).sort_values(KEYS).reset_index(drop=True)


@pytest.mark.slow
def test_a_study_on_a_dask_cluster_gives_the_local_pool_table_and_resumes(tmp_path) -> None:
    local = run_study(STATION, SMALL, tmp_path / "local", jobs=2)
    assert len(local) == 4
    # more PV: more renewable energy into cars; the optimum does at least as well
    by = local.set_index(["pv_kwp", "battery_kwh"])
    assert by.loc[(200.0, 0.0), "renewable_frac"] > by.loc[(100.0, 0.0), "renewable_frac"]
    assert (local["optimum_renewable_frac"] >= local["renewable_frac"] - 1e-9).all()
    assert (local["battery_cycles"][local["battery_kwh"] == 0] == 0).all()
    assert local["pareto"].any()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:  # fmt: skip
        remote = run_study(STATION, SMALL, tmp_path / "dask", cluster=cluster)
        pd.testing.assert_frame_equal(_sorted(local), _sorted(remote), rtol=1e-6)
        calls: list[int] = []
        again = run_study(STATION, SMALL, tmp_path / "dask", cluster=cluster,
                          progress=lambda done, total, row: calls.append(done))  # fmt: skip
    assert calls == []  # every cell was done: nothing ran
    pd.testing.assert_frame_equal(_sorted(again), _sorted(remote))
    assert (tmp_path / "dask" / "results.csv").is_file()


def test_study_cli_runs_resumes_and_names_bad_flags(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "s"
    args = ["study", "--days", "0.25", "--weather", "clear-day", "--policy", "uncontrolled",
            "--pv-kwp", "100,200", "--no-optimum", "--jobs", "1", "--out", str(out)]  # fmt: skip
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "2 cells (0 done already" in r.output
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["pv_kwp"]) == [100.0, 200.0]
    assert table["optimum_renewable_frac"].isna().all()
    assert (out / "study.png").stat().st_size > 10_000
    r = runner.invoke(main, args)
    assert r.exit_code == 0 and "2 cells (2 done already" in r.output
    r = runner.invoke(main, [*args[:-2], "--out", str(tmp_path / "x"), "--battery-kwh", "-1"])
    assert r.exit_code == 2 and "--battery-kwh" in r.output
    spec = tmp_path / "bad.toml"
    spec.write_text("[study]\npv_kwp = [100]\n[capex]\nlifetime_years = 0\n")
    r = runner.invoke(main, ["study", str(spec), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--lifetime-years" in r.output
    assert not math.isnan(float(table["annual_cost_krw"].iloc[0]))
