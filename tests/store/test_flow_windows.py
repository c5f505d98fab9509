"""The month's demand peak and non-finite count from remembered windows (#15) equal the
plain SQL over the whole range after any sequence of writes: new steps, late and
replaced ones, another connection's rows, this connection's own SQL (then
forget_windows, as store.merge does), a rolled-back group commit."""

import math
import random
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from megastation.store import Store, flows, iso, records

T0 = datetime(2026, 3, 1, 0, 7, tzinfo=UTC)  # a start off the window grid
W = 900


def plain(store: Store, start: datetime, end: datetime) -> tuple[float | None, int]:
    finite = flows._FINITE_IMPORT
    peak = store.conn.execute(
        "SELECT MAX(kw) FROM (SELECT SUM(grid_import_kw * step_s) / ? AS kw FROM energy_flows "
        f"WHERE ts >= ? AND ts < ? AND {finite} GROUP BY CAST(strftime('%s', ts) AS INTEGER) / ?)",
        (W, iso(start), iso(end), W),
    ).fetchone()[0]
    bad = store.conn.execute(
        f"SELECT COUNT(*) FROM energy_flows WHERE ts >= ? AND ts < ? AND NOT ({finite})",
        (iso(start), iso(end)),
    ).fetchone()[0]
    return peak, bad


def _window_start(t: datetime) -> datetime:
    return datetime.fromtimestamp(int(t.timestamp()) // W * W, UTC)


def step(ts: datetime, kw: float) -> flows.FlowStep:
    return flows.FlowStep(
        ts=ts, step_s=300, soc_frac=None, grid_limit_kw=None, pv_forecast_kw=None,
        pv_p10_kw=None, pv_p90_kw=None, pv_kw=0.0, curtailed_kw=0.0, ev_kw=0.0,
        base_load_kw=0.0, battery_charge_kw=0.0, battery_discharge_kw=0.0,
        grid_import_kw=kw, grid_export_kw=0.0,
    )  # fmt: skip


def test_remembered_windows_equal_the_plain_query(tmp_path, monkeypatch):
    monkeypatch.setattr(flows, "_TRIM_WRITTEN", 0)  # the written list trimmed as it goes
    rng = random.Random(15)
    store = Store(tmp_path / "s.db")
    other = sqlite3.connect(tmp_path / "s.db")
    now = T0
    for k in range(300):
        now += timedelta(minutes=rng.choice((1, 3, 5, 7)))
        op = rng.random()
        if op < 0.6:  # the step just ended, or a late or replaced one
            back = rng.choice((5, 5, 5, 30, 300))
            ts = now - timedelta(minutes=back)
            flows.record_flows(store, step(ts.replace(second=0), rng.uniform(0, 90)))
        elif op < 0.65:  # another process writes (an Inf, as an old store may hold)
            other.execute(
                "INSERT OR REPLACE INTO energy_flows (ts, step_s, pv_kw, ev_kw, battery_charge_kw, "
                "battery_discharge_kw, grid_import_kw, grid_export_kw) "
                "VALUES (?, 300, 0, 0, 0, 0, ?, 0)",
                (iso(now - timedelta(minutes=20)), math.inf),
            )
            other.commit()
        elif op < 0.67:  # this connection, not through record_flows (store.merge)
            store.conn.execute(
                "INSERT OR REPLACE INTO energy_flows (ts, step_s, pv_kw, ev_kw, battery_charge_kw, "
                "battery_discharge_kw, grid_import_kw, grid_export_kw) "
                "VALUES (?, 300, 0, 0, 0, 0, 700, 0)",
                (iso(now - timedelta(minutes=25)),),
            )
            store.conn.commit()
            flows.forget_windows(store)
        elif op < 0.7:  # a group commit that fails: its flows are undone
            with pytest.raises(RuntimeError), records.group_commit(store):
                flows.record_flows(store, step(now - timedelta(minutes=10), 500.0))
                flows.peak_window_import_kw(store, T0, _window_start(now), W)  # remembered
                raise RuntimeError
        current = _window_start(now)
        for start in (T0, T0 - timedelta(days=1)):
            got = (
                flows.peak_window_import_kw(store, start, current, W),
                flows.nonfinite_import_steps(store, start, current),
            )
            assert got == plain(store, start, current), k
    other.close()
    store.close()
