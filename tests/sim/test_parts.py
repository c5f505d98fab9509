"""A simulation over a month boundary run in parts (megastation.sim.parts): the merged
store reads as one run's, and its figures agree with one run's."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import Station, load_station, seeds_dir
from megastation.core.fleet import CarVisit
from megastation.reports import exports
from megastation.sim.parts import balanced_parts, month_parts, simulate_in_parts
from megastation.sim.simulator import simulate
from megastation.store import Store

# 2026-06-30 12:00 in Seoul to 2026-07-01 12:00: the month changes at 15:00 UTC
START = datetime(2026, 6, 30, 3, 0, tzinfo=UTC)
BOUNDARY = datetime(2026, 6, 30, 15, 0, tzinfo=UTC)
WEATHER = "clear-day"


@pytest.fixture(scope="module")
def seed_station() -> Station:
    return load_station(seeds_dir() / "gwangju-donggu.toml")


def _visit(charger: str, arrive_h: float, stay_h: float, kwh: float, key: str) -> CarVisit:
    dc = "DC" in charger
    return CarVisit(
        charger_id=charger,
        connector_id=1,
        arrival=START + timedelta(hours=arrive_h),
        departure=START + timedelta(hours=arrive_h + stay_h),
        energy_wanted_kwh=kwh,
        car_model="test",
        battery_kwh=77.0,
        car_max_power_kw=150.0 if dc else 7.0,
        soc_arrival_frac=0.2,
        sends_charging_needs=False,
        id_token=key,
    )


# B before the boundary; D in part 2's warm-up but wholly part 1's; A across the
# boundary (part 1 cuts it at its end, part 2 has all of it); C after it
VISITS = [
    _visit("GJDG-DC-02", 1.0, 0.7, 40.0, "B"),
    _visit("GJDG-AC-01", 8.0, 11.0, 30.0, "A"),
    _visit("GJDG-AC-02", 9.0, 2.0, 10.0, "D"),
    _visit("GJDG-DC-03", 18.0, 0.5, 30.0, "C"),
]


@pytest.fixture(scope="module")
def runs(seed_station, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parts")
    common = dict(policy="re100", start=START, days=1.0, weather=WEATHER, seed=1, visits=VISITS)
    parts = simulate_in_parts(
        seed_station, db_path=tmp / "parts.db", jobs=2, warmup=timedelta(hours=6), **common
    )
    one = simulate(seed_station, db_path=tmp / "one.db", **common)
    return parts, one


def test_month_parts_cut_at_local_month_starts():
    tz = "Asia/Seoul"
    assert month_parts(START, START + timedelta(hours=5), tz) == [
        (START, START + timedelta(hours=5))
    ]
    assert month_parts(START, START + timedelta(days=1), tz) == [
        (START, BOUNDARY),
        (BOUNDARY, START + timedelta(days=1)),
    ]
    year = month_parts(BOUNDARY, BOUNDARY + timedelta(days=365), tz)
    assert len(year) == 12
    local = pd.DatetimeIndex([s for s, _ in year]).tz_convert(tz)
    assert (local.day == 1).all() and (local.hour == 0).all()
    assert all(a[1] == b[0] for a, b in itertools.pairwise(year))


def test_balanced_parts_join_whole_months_one_part_per_worker():
    year = month_parts(BOUNDARY, BOUNDARY + timedelta(days=365), "Asia/Seoul")

    def days(parts):
        return [round((b - a) / timedelta(days=1)) for a, b in parts]

    assert days(balanced_parts(year, 2)) == [184, 181]  # July-December, January-June
    assert days(balanced_parts(year, 4)) == [92, 92, 90, 91]
    assert balanced_parts(year, 1) == [(year[0][0], year[-1][1])]
    assert balanced_parts(year, 12) == balanced_parts(year, 30) == year
    for n in range(1, 13):
        parts = balanced_parts(year, n)
        assert len(parts) == n and parts[0][0] == year[0][0] and parts[-1][1] == year[-1][1]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
        assert {s for s, _ in parts} <= {s for s, _ in year}  # cut at month starts only
        assert max(days(parts)) <= -(-365 // n) + 31  # no part longer than a month too many


def test_merged_store_reads_as_one_run(runs, seed_station):
    parts, _ = runs
    idx = parts.flows.index
    assert len(idx) == 96 and idx.is_unique and idx.is_monotonic_increasing
    assert idx[0] == START and (idx[1:] - idx[:-1] == pd.Timedelta(minutes=15)).all()
    s = parts.sessions.set_index("session_key")
    assert len(s) == 4 and s["car_model"].eq("test").all()
    a = s.loc[s.index.str.contains("GJDG-AC-01")].iloc[0]
    assert pd.Timestamp(a["departure"]) == START + timedelta(hours=19)  # not cut at the boundary
    con = sqlite3.connect(parts.db_path)
    txs = con.execute("SELECT id, ocpp_tx_id, stop_time FROM transactions ORDER BY id").fetchall()
    assert [t[0] for t in txs] == [1, 2, 3, 4] and all(t[1] == str(t[0]) for t in txs)
    a_tx = {tx for (tx,) in con.execute(
        "SELECT DISTINCT transaction_id FROM connector_flows WHERE charger_id = 'GJDG-AC-01'"
    )}  # fmt: skip
    assert len(a_tx) == 1  # one session before and after the boundary
    stop = con.execute("SELECT stop_time FROM transactions WHERE id = ?", (a_tx.pop(),)).fetchone()
    assert pd.Timestamp(stop[0]) == START + timedelta(hours=19)
    plans = con.execute("SELECT COUNT(*) FROM control_plans").fetchone()[0]
    con.close()
    assert plans == parts.plans > 0  # the warm-up's plans are neither kept nor counted
    store = Store(parts.db_path)
    try:
        by_source = exports.sessions_by_source_frame(store, seed_station)
    finally:
        store.close()
    assert len(by_source) == 4
    assert by_source["energy_kwh"].sum() == pytest.approx(parts.kpis.energy_delivered_kwh, rel=1e-3)


def test_parts_agree_with_one_run(runs):
    parts, one = runs
    assert parts.kpis.sessions == one.kpis.sessions == 4
    assert parts.kpis.energy_wanted_kwh == pytest.approx(one.kpis.energy_wanted_kwh)
    assert parts.kpis.energy_delivered_kwh == pytest.approx(one.kpis.energy_delivered_kwh, rel=0.01)
    # the same sun (PV used plus curtailed) and base load
    assert parts.kpis.pv_kwh + parts.kpis.curtailed_kwh == pytest.approx(
        one.kpis.pv_kwh + one.kpis.curtailed_kwh, rel=1e-9
    )
    assert parts.perfect_foresight.cost_krw == pytest.approx(one.perfect_foresight.cost_krw)
    got = parts.sessions.set_index("session_key")["energy_kwh"]
    want = one.sessions.set_index("session_key")["energy_kwh"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), rtol=0.02)


def test_simulate_cli_runs_a_span_over_months_in_parts(tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "unused.db"), "simulate", "--days", "0.5",
         "--start", "2026-06-30T18:00", "--policy", "re100,uncontrolled", "--jobs", "2",
         "--weather", WEATHER, "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = pd.read_csv(out / "summary.csv").set_index("run")
    assert list(summary.index) == ["re100", "uncontrolled", "perfect_foresight"]
    for pol in ("re100", "uncontrolled"):
        f = pd.read_csv(out / f"{pol}-energy-flows.csv")
        assert len(f) == 48  # both sides of the boundary, once each
        assert summary.loc[pol, "energy_delivered_kwh"] > 0
