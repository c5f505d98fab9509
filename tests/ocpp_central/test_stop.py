"""`megastation serve` stops cleanly on SIGTERM, and recovers after kill -9 (issue #13, item 4).

Real processes, real sockets: a raw 1.6 charger answers the control loop's calls but never
an operator's Reset, so the Reset is in flight when the server is stopped.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import websockets

from megastation.store import Store, commands, records
from tests.app.test_ocpp_serve import cli, start_server
from tests.ocpp_clients import url

CHARGER = "GJDG-AC-01"


async def charger_holding_a_reset(port: int):
    """Connect, boot, answer everything but Reset; return (ws, task that ends on Reset)."""
    ws = await websockets.connect(url(port, CHARGER), subprotocols=["ocpp1.6"])
    await ws.send(json.dumps([2, "boot", "BootNotification", {
        "chargePointVendor": "v", "chargePointModel": "m"}]))  # fmt: skip
    got_reset = asyncio.get_running_loop().create_future()

    async def answer() -> None:
        async for text in ws:
            msg = json.loads(text)
            if msg[0] != 2:
                continue
            if msg[2] == "Reset":
                got_reset.set_result(msg[1])
                continue  # never answered
            payload = {"configurationKey": []} if msg[2] == "GetConfiguration" else {
                "status": "Accepted"}  # fmt: skip
            await ws.send(json.dumps([3, msg[1], payload]))

    task = asyncio.create_task(answer())
    return ws, task, got_reset


def stored(db: Path):
    store = Store(db)
    try:
        row = records.get_charger(store, CHARGER)
        cmds = commands.list_commands(store)
        return row, cmds
    finally:
        store.close()


async def until(cond, what: str, timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sigterm_stops_as_cleanly_as_ctrl_c(tmp_path: Path):
    db = tmp_path / "station.db"
    proc, port = await start_server(db)
    try:
        ws, task, got_reset = await charger_holding_a_reset(port)
        await until(lambda: stored(db)[0]["connected"] == 1, "the charger connected")
        cli(db, "command", "send", CHARGER, "Reset", '{"type": "Soft"}', "--wait", "0")
        await asyncio.wait_for(got_reset, 15)  # in flight now
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
        assert proc.returncode == 0
        await asyncio.wait_for(task, 5)
        assert ws.close_code == 1001  # going away, not an abnormal close (1006)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    row, cmds = stored(db)
    assert row["connected"] == 0 and row["disconnected_at"] is not None
    reset = next(c for c in cmds if c["action"] == "Reset")
    assert reset["status"] == commands.INTERRUPTED, reset
    assert "stopped" in reset["error"]


async def test_after_kill_9_stale_flags_and_sent_commands_are_resolved_at_start(tmp_path: Path):
    db = tmp_path / "station.db"
    proc, port = await start_server(db)
    try:
        _ws, task, got_reset = await charger_holding_a_reset(port)
        await until(lambda: stored(db)[0]["connected"] == 1, "the charger connected")
        cli(db, "command", "send", CHARGER, "Reset", '{"type": "Soft"}', "--wait", "0")
        await asyncio.wait_for(got_reset, 15)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        row, cmds = stored(db)
        assert row["connected"] == 1  # what kill -9 leaves behind
        assert next(c for c in cmds if c["action"] == "Reset")["status"] == "sent"
        proc, port = await start_server(db)
        row, cmds = stored(db)
        assert row["connected"] == 0
        reset = next(c for c in cmds if c["action"] == "Reset")
        assert reset["status"] == commands.INTERRUPTED
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0
