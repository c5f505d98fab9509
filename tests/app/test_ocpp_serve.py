"""`megastation serve` end to end: real process, real CLI, kill -9 mid-transaction."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from megastation.cli import main
from tests.ocpp_clients import connect_charger

MEGASTATION = [str(Path(sys.executable).parent / "megastation")]


async def start_server(db: Path, *args: str) -> tuple[asyncio.subprocess.Process, int]:
    """``megastation serve`` on free ports (OCPP and console); returns it and its OCPP port."""
    proc = await asyncio.create_subprocess_exec(
        *MEGASTATION,
        "--db",
        str(db),
        "serve",
        "--port",
        "0",
        *(args or ("--web-port", "0")),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert line, "server exited before listening"
        m = re.search(rb"listening on [\d.]+:(\d+)", line)
        if m:
            return proc, int(m.group(1))


async def test_serve_runs_the_console_beside_the_central_system(tmp_path: Path):
    proc = await asyncio.create_subprocess_exec(
        *MEGASTATION, "--db", str(tmp_path / "s.db"), "serve", "--port", "0", "--web-port", "0",
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        url = None
        while url is None:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "server exited before the console listened"
            m = re.search(rb"console on (http://[\d.]+:\d+)", line)
            url = m.group(1).decode() if m else None
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/metrics")
            assert r.status_code == 200 and "megastation_chargers_connected" in r.text
            assert (await client.get("/api/v1/overview")).status_code == 401  # no anonymous API
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


def cli(db: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
async def test_transactions_survive_kill_9_and_show_in_sessions_and_export(tmp_path: Path):
    db = tmp_path / "station.db"
    proc, port = await start_server(db)
    try:
        cli(db, "tags", "add", "TAG-1")
        async with connect_charger(port, "GJDG-DC-03", "1.6") as cp:
            await cp.call(
                call16.BootNotification(charge_point_model="EVAR-100", charge_point_vendor="Chaevi")
            )
            start = await cp.call(
                call16.StartTransaction(
                    connector_id=1,
                    id_tag="TAG-1",
                    meter_start=1000,
                    timestamp="2026-06-15T00:00:00Z",
                )
            )
            tx16 = start.transaction_id
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        out = json.loads(cli(db, "sessions", "--json"))
        assert [(s["transaction_id"], s["state"]) for s in out] == [(tx16, "open")]

        proc, port = await start_server(db)
        async with connect_charger(port, "GJDG-DC-03", "1.6") as cp:
            await cp.call(
                call16.StopTransaction(
                    meter_stop=31000,
                    transaction_id=tx16,
                    timestamp="2026-06-15T00:40:00Z",
                    reason="Local",
                ),
                suppress=False,
            )
        async with connect_charger(port, "GJDG-DC-01", "2.0.1") as cp:
            await cp.call(
                call201.BootNotification(
                    charging_station={"model": "V2", "vendor_name": "SK Signet"}, reason="PowerUp"
                )
            )
            for seq, (kind, minute, wh) in enumerate(
                (("Started", 0, 2000), ("Updated", 10, 12000), ("Ended", 20, 22500))
            ):
                await cp.call(
                    call201.TransactionEvent(
                        event_type=kind,
                        timestamp=f"2026-06-15T01:{minute:02d}:00Z",
                        trigger_reason="MeterValuePeriodic",
                        seq_no=seq,
                        evse={"id": 1},
                        transaction_info={"transaction_id": "abc"},
                        meter_value=[
                            {
                                "timestamp": f"2026-06-15T01:{minute:02d}:00Z",
                                "sampled_value": [{"value": wh}],
                            }
                        ],
                    ),
                    suppress=False,
                )
        status = json.loads(cli(db, "status", "--json"))
        assert {r["charger_id"] for r in status["connectors"]} >= {"GJDG-DC-01", "GJDG-DC-03"}
        assert status["control"]["grid_limit_kw"] > 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0  # Ctrl-C stops cleanly

    sessions = {s["charger_id"]: s for s in json.loads(cli(db, "sessions", "--json"))}
    assert sessions["GJDG-DC-03"]["energy_kwh"] == pytest.approx(30.0)
    assert sessions["GJDG-DC-01"]["energy_kwh"] == pytest.approx(20.5)
    assert "GJDG-DC-03" in cli(db, "sessions")
    out_csv = tmp_path / "sessions.csv"
    cli(db, "export", "sessions", "-o", str(out_csv), "--from", "2026-06-15", "--to", "2026-06-16")
    rows = {r["charger_id"]: r for r in csv.DictReader(out_csv.open())}
    assert float(rows["GJDG-DC-03"]["energy_kwh"]) == pytest.approx(30.0)
    assert float(rows["GJDG-DC-01"]["energy_kwh"]) == pytest.approx(20.5)
    mv_csv = tmp_path / "mv.csv"
    cli(db, "export", "meter-values", "-o", str(mv_csv))
    mv = list(csv.DictReader(mv_csv.open()))
    assert [float(r["energy_register_kwh"]) for r in mv] == pytest.approx([2.0, 12.0, 22.5])
    chargers = cli(db, "chargers")
    assert "GJDG-DC-01" in chargers and "2.0.1" in chargers
