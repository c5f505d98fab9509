"""Operator control commands: limit, session, policy, export dispatch, status."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from megastation.cli import main
from megastation.control.controller import Controller
from megastation.sim.gateway import DirectGateway
from megastation.store import Store, records
from megastation.store import control as cr
from tests.conftest import T0


def run(db_path, *args):
    res = CliRunner().invoke(main, ["--db", str(db_path), *args], catch_exceptions=False)
    return res


async def test_operator_commands_reach_the_store_and_status_shows_the_plan(
    station, store, clock, db_path, tmp_path
):
    records.register_station_chargers(store, station)
    tx = records.start_transaction(
        store, "GJDG-DC-01", connector_id=1, id_token="T", auth_status="Accepted",
        meter_start_wh=0.0, ts=T0,
    ).transaction_id  # fmt: skip
    res = run(db_path, "limit", "--grid-kw", "250", "--until", "2099-01-01T00:00")
    assert res.exit_code == 0, res.output
    res = run(db_path, "policy", "cost")
    assert res.exit_code == 0
    res = run(db_path, "session", str(tx), "--depart", "2026-06-15T11:00", "--energy-kwh", "33")
    assert res.exit_code == 0, res.output
    assert run(db_path, "session", "999", "--energy-kwh", "3").exit_code != 0

    fresh = Store(db_path, clock)
    assert cr.grid_limit_kw(fresh, 400, T0) == (250.0, "operator")
    assert cr.policy(fresh, "re100") == "cost"
    ctl = Controller(station, fresh, clock, gateway=DirectGateway(station, fresh, clock),
                     forecaster=lambda *a, **k: __import__("pandas").DataFrame())  # fmt: skip
    await ctl.cycle("test")
    plan = cr.latest_plan(fresh)
    s = plan["inputs"]["sessions"][0]
    assert s["source"] == "override" and s["energy_kwh"] == 33.0
    assert s["departure"].startswith("2026-06-15T02:00")  # 11:00 Seoul
    fresh.close()

    out = tmp_path / "dispatch.csv"
    res = run(db_path, "export", "dispatch", "-o", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert rows and rows[0]["grid_limit_kw"] == "250.0" and "setpoint_kw" in rows[0]
    res = run(db_path, "control-status", "--json")
    data = json.loads(res.output)
    assert data["grid_limit_kw"] == 250.0 and data["plan"]["id"] == plan["id"]
    res = run(db_path, "status")
    assert res.exit_code == 0 and "grid limit 250 kW (operator)" in res.output
    assert run(db_path, "limit", "--clear").exit_code == 0
