"""The operator's grid-limit override (``megastation limit``) counts in the simulator
and in the exports, as it does in the live controller: one limit in force
(:func:`megastation.store.control.grid_limit_kw`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from megastation.cli import main
from megastation.control.controller import GUARD_TOLERANCE_KW
from megastation.core.clock import SimClock
from megastation.core.config import load_station, seeds_dir
from megastation.core.fleet import generate_visits
from megastation.reports.exports import energy_flows_frame
from megastation.sim.simulator import _Simulator, prepare_site
from megastation.store import Store, flows
from megastation.store import control as cr

START = datetime(2026, 6, 30, 1, 0, tzinfo=UTC)  # 10:00 in Seoul, clear-day weather
CUT_KW = 150.0  # the utility's request, for the first two hours


def _export_energy_flows(db: Path, out: Path) -> pd.DataFrame:
    res = CliRunner().invoke(
        main, ["--db", str(db), "export", "energy-flows", "-o", str(out)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    return pd.read_csv(out)


def test_the_simulator_and_energy_flows_honour_the_operators_limit(tmp_path):
    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    configured = station.site.grid_import_limit_kw
    assert configured > CUT_KW
    end = START + timedelta(hours=3)
    until = START + timedelta(hours=2)
    db = tmp_path / "sim.db"
    clock = SimClock(START)
    store = Store(db, clock)
    cr.set_grid_limit(store, CUT_KW, until=until)
    sim = _Simulator(
        station,
        store,
        clock,
        prepare_site(station, START, end, "clear-day", 1),
        generate_visits(station, START, end, 1),
        "re100",
        start=START,
        end=end,
        step_s=60.0,
        plan_interval_s=900.0,
        run="re100",
    )
    asyncio.run(sim.run())
    f = flows.read_flows(store)
    cut = f.index < pd.Timestamp(until)
    # the simulated site kept under the cut while it was in force ...
    assert (f["grid_import_kw"][cut] <= CUT_KW + GUARD_TOLERANCE_KW).all()
    plans = store.conn.execute("SELECT created_at, grid_limit_kw FROM control_plans").fetchall()
    assert {kw for ts, kw in plans if ts < until.isoformat()} == {CUT_KW}
    assert {kw for ts, kw in plans if ts >= until.isoformat()} == {configured}
    # ... and the energy flows show the limit in force at each step
    assert (energy_flows_frame(store, station)["grid_limit_kw"].to_numpy()[cut] == CUT_KW).all()
    store.close()
    got = _export_energy_flows(db, tmp_path / "flows.csv")
    assert len(got) == len(f)
    assert (got["grid_limit_kw"][cut] == CUT_KW).all()
    assert (got["grid_limit_kw"][~cut] == configured).all()


def test_energy_flows_fill_an_unrecorded_limit_with_the_limit_in_force(tmp_path):
    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    store = Store(tmp_path / "live.db", SimClock(START))
    step = flows.FlowStep(START, 900, 0.0, 10.0, 0.0, 0.0, 10.0, 0.0, 0.0)
    later = flows.FlowStep(START + timedelta(hours=3), 900, 0.0, 10.0, 0.0, 0.0, 10.0, 0.0, 0.0)
    flows.record_flows(store, [step, later])  # recorded without a limit
    cr.set_grid_limit(store, CUT_KW, until=START + timedelta(hours=1))
    got = energy_flows_frame(store, station)["grid_limit_kw"].tolist()
    assert got == [CUT_KW, station.site.grid_import_limit_kw]
