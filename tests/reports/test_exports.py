"""Analyst exports of a simulated store, through the CLI: headers, ranges, totals.

One re100 simulation (9 h from 16:00 local, so the run spans two local days) is
recorded into a temporary SQLite file once for the module; every export is then
written with `megastation export ...` and read back with pandas.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import load_station, seeds_dir
from megastation.sim.simulator import SimulationResult, simulate

# The module fixture runs a whole simulated day (30-45 s on 2 shared cores).
pytestmark = pytest.mark.slow

START = datetime(2026, 6, 30, 7, 0, tzinfo=UTC)  # 16:00 in Seoul
HOURS = 9.0  # until 01:00 the next local day
UNIT = re.compile(r"_(kw|kwh|wh|frac|krw|s|ms|min|utc|local|percent|a|v)$")
NAMES = {  # identifiers and labels, no unit
    "transaction_id",
    "charger_id",
    "connector_id",
    "id_token",
    "ocpp_version",
    "ocpp_transaction_id",
    "stop_reason",
    "state",
    "day",
    "plan_id",
    "reason",
    "policy",
    "status",
    "setpoint_status",
    "time",
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> tuple[SimulationResult, Path]:
    db = tmp_path_factory.mktemp("exports") / "sim.db"
    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    r = simulate(
        station, start=START, hours=HOURS, policy="re100", weather="clear-day", seed=2, db_path=db
    )
    return r, db


def export(db: Path, out: Path, kind: str, *args: str) -> pd.DataFrame:
    res = CliRunner().invoke(
        main, ["--db", str(db), "export", kind, "-o", str(out), *args], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    assert str(out) in res.output
    return pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)


KINDS = ("energy-flows", "daily", "sessions", "sessions-by-source", "meter-values", "dispatch")


@pytest.mark.parametrize("kind", KINDS)
def test_every_export_has_rows_and_unit_suffixed_headers(sim, tmp_path, kind):
    _, db = sim
    df = export(db, tmp_path / f"{kind}.csv", kind)
    assert len(df) > 0
    bad = [c for c in df.columns if c not in NAMES and not UNIT.search(c)]
    assert not bad, f"{kind}: columns without a unit: {bad}"


def test_energy_flows_columns_and_range(sim, tmp_path):
    _, db = sim
    f = export(db, tmp_path / "f.csv", "energy-flows")
    assert len(f) == HOURS * 4
    for col in (
        "pv_kw",
        "battery_kw",
        "grid_import_kw",
        "grid_export_kw",
        "ev_kw",
        "soc_frac",
        "curtailed_kw",
    ):
        assert col in f.columns
    net = f["battery_discharge_kw"] - f["battery_charge_kw"]
    assert ((f["battery_kw"] - net).abs() <= 1e-5 * net.abs() + 1e-9).all()
    # local times: Seoul, UTC+9
    assert f["time_local"].iloc[0] == "2026-06-30T16:00:00+09:00"
    assert f["time_utc"].iloc[0] == "2026-06-30T07:00:00+00:00"
    # --from/--to in local time select [from, to)
    part = export(
        db, tmp_path / "p.csv", "energy-flows", "--from", "2026-06-30T18:00", "--to", "2026-07-01"
    )
    assert len(part) == 6 * 4
    assert part["time_local"].iloc[0] == "2026-06-30T18:00:00+09:00"
    assert part["time_local"].iloc[-1] == "2026-06-30T23:45:00+09:00"
    utc = export(db, tmp_path / "u.csv", "energy-flows", "--from", "2026-06-30T15:00:00Z")
    assert len(utc) == 1 * 4  # 00:00-01:00 local


def test_daily_by_local_day_and_range(sim, tmp_path):
    _, db = sim
    d = export(db, tmp_path / "d.csv", "daily")
    assert list(d["day"]) == ["2026-06-30", "2026-07-01"]
    one = export(db, tmp_path / "d1.csv", "daily", "--from", "2026-07-01")
    assert list(one["day"]) == ["2026-07-01"]
    # the day's figures do not depend on the range asked for
    cols = ["energy_kwh", "renewable_frac", "grid_import_kwh", "peak_import_kw", "cost_krw"]
    pd.testing.assert_series_equal(one[cols].iloc[0], d[cols].iloc[1], check_names=False, rtol=1e-5)
    # the perfect-foresight reference of the same day is there
    assert d["pf_energy_kwh"].notna().all()
    # the day-ahead forecast was recorded and scored (only the first day has sun)
    assert 0 <= d["pv_forecast_nmae_frac"].iloc[0] < 0.5


def test_totals_agree_across_exports(sim, tmp_path):
    r, db = sim
    f = export(db, tmp_path / "f.csv", "energy-flows")
    d = export(db, tmp_path / "d.csv", "daily")
    s = export(db, tmp_path / "s.csv", "sessions")
    sbs = export(db, tmp_path / "sbs.csv", "sessions-by-source")
    flows_kwh = float((f["ev_kw"] * f["step_s"] / 3600).sum())
    assert flows_kwh == pytest.approx(r.kpis.energy_delivered_kwh, rel=1e-6)
    assert d["energy_kwh"].sum() == pytest.approx(flows_kwh, rel=1e-5)
    assert sbs["attributed_kwh"].sum() == pytest.approx(flows_kwh, rel=1e-5)
    # metered energy (0.1 Wh registers) agrees with the flow record
    assert s["energy_kwh"].sum() == pytest.approx(flows_kwh, abs=0.01 * len(s) + 1e-6)
    assert sbs["energy_kwh"].sum() == pytest.approx(s["energy_kwh"].sum(), rel=1e-9)
    assert len(s) == len(sbs) == r.kpis.sessions
    # each session's sources add up (CSV values carry 10 significant digits)
    parts = sbs["pv_direct_kwh"] + sbs["battery_kwh"] + sbs["grid_kwh"]
    assert ((parts - sbs["attributed_kwh"]).abs() <= 2e-5 * sbs["attributed_kwh"] + 1e-6).all()
    assert (sbs["renewable_kwh"] <= sbs["pv_direct_kwh"] + sbs["battery_kwh"] + 1e-6).all()
    grid_kwh = float((f["grid_import_kw"] * f["step_s"] / 3600).sum())
    assert d["grid_import_kwh"].sum() == pytest.approx(grid_kwh, rel=1e-5)
    assert d["peak_import_kw"].max() == pytest.approx(f["grid_import_kw"].max(), rel=1e-5)


def test_renewable_share_two_ways_agrees(sim, tmp_path):
    r, db = sim
    d = export(db, tmp_path / "d.csv", "daily")
    sbs = export(db, tmp_path / "sbs.csv", "sessions-by-source")
    by_day = float((d["renewable_frac"].fillna(0) * d["energy_kwh"]).sum() / d["energy_kwh"].sum())
    by_session = float(sbs["renewable_kwh"].sum() / sbs["attributed_kwh"].sum())
    assert by_day == pytest.approx(by_session, abs=1e-4)
    assert by_day == pytest.approx(r.kpis.renewable_frac, abs=1e-4)
    assert 0.0 < by_day < 1.0


def test_session_and_meter_value_ranges(sim, tmp_path):
    _, db = sim
    s = export(db, tmp_path / "s.csv", "sessions")
    late = export(db, tmp_path / "s2.csv", "sessions", "--from", "2026-06-30T20:00")
    assert 0 < len(late) < len(s)
    assert (pd.to_datetime(late["start_time_utc"]) >= pd.Timestamp("2026-06-30T11:00Z")).all()
    mv = export(db, tmp_path / "m.csv", "meter-values", "--to", "2026-06-30T18:00")
    assert len(mv) > 0
    assert (pd.to_datetime(mv["time_utc"]) < pd.Timestamp("2026-06-30T09:00Z")).all()
    disp = export(db, tmp_path / "x.csv", "dispatch", "--from", "2026-06-30T20:00")
    assert len(disp) > 0
    assert (pd.to_datetime(disp["time"]) >= pd.Timestamp("2026-06-30T11:00Z")).all()


@pytest.mark.parametrize("kind", ("energy-flows", "daily", "sessions-by-source"))
def test_parquet_when_pyarrow_is_installed(sim, tmp_path, kind):
    pytest.importorskip("pyarrow")
    _, db = sim
    pq = export(db, tmp_path / f"{kind}.parquet", kind)
    csv = export(db, tmp_path / f"{kind}.csv", kind)
    assert list(pq.columns) == list(csv.columns)
    assert len(pq) == len(csv)


def test_parquet_without_pyarrow_is_a_clear_error(sim, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    _, db = sim
    res = CliRunner().invoke(
        main, ["--db", str(db), "export", "daily", "-o", str(tmp_path / "d.parquet")]
    )
    assert res.exit_code != 0
    assert "pyarrow" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", ("--from", "--to"))
def test_bad_date_is_a_clear_error(sim, tmp_path, kind, option):
    _, db = sim
    res = CliRunner().invoke(
        main, ["--db", str(db), "export", kind, "-o", str(tmp_path / "x.csv"), option, "30/06"]
    )
    assert res.exit_code != 0
    assert "30/06" in res.output and "ISO" in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.csv").exists()
