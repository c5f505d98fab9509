"""Dead chargers are noticed (issue #13, item 5): WebSocket ping, heartbeat timeout, and a
new connection replacing a frozen one at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import websockets

from megastation.core import events
from megastation.store import records
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import url

BOOT = [2, "boot", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]


async def server(station, store, clock, got: list, cs_kw=None, **server_cfg) -> CentralSystem:
    st = dataclasses.replace(station, server=dataclasses.replace(station.server, **server_cfg))
    cs = CentralSystem(st, store, clock, on_event=got.append, response_timeout_s=2, **(cs_kw or {}))
    await cs.start("127.0.0.1", 0)
    return cs


async def connect(cs: CentralSystem, charger_id: str = "GJDG-AC-01"):
    ws = await websockets.connect(
        url(cs.port, charger_id), subprotocols=["ocpp1.6"], ping_interval=None
    )
    await ws.send(json.dumps(BOOT))
    assert json.loads(await asyncio.wait_for(ws.recv(), 3))[0] == 3
    return ws


async def until(cond, what: str, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def disconnected(store, got, charger_id="GJDG-AC-01") -> bool:
    return not records.get_charger(store, charger_id)["connected"] and any(
        isinstance(e, events.ChargerDisconnected) and e.charger_id == charger_id for e in got
    )


async def test_a_silent_charger_is_disconnected_after_the_heartbeat_timeout(station, store, clock):
    got: list = []
    cs = await server(station, store, clock, got, heartbeat_timeout_s=0.4, ping_interval_s=0)
    try:
        other = await connect(cs, "GJDG-AC-02")
        ws = await connect(cs)  # boots, then says nothing (its socket stays open)
        t = time.monotonic()
        for _ in range(30):  # the bystander keeps talking and stays connected
            await other.send(json.dumps([2, "hb", "Heartbeat", {}]))
            await asyncio.wait_for(other.recv(), 3)
            if disconnected(store, got):
                break
            await asyncio.sleep(0.05)
        await until(lambda: disconnected(store, got), "the silent charger dropped", 3)
        assert time.monotonic() - t < 2.0  # 0.4 s timeout, checked every 0.1 s
        assert cs.is_connected("GJDG-AC-02") and not cs.is_connected("GJDG-AC-01")
        await until(lambda: ws.state is websockets.protocol.State.CLOSED, "socket closed", 3)
        await other.close()
    finally:
        await cs.close()


async def test_a_charger_that_stops_answering_pings_is_disconnected(station, store, clock):
    got: list = []
    cs = await server(
        station, store, clock, got, {"close_timeout_s": 0.5}, ping_interval_s=0.2,
        ping_timeout_s=0.3, heartbeat_timeout_s=0,
    )  # fmt: skip
    try:
        ws = await connect(cs)
        ws.transport.pause_reading()  # frozen: pings are not answered
        took = await until(lambda: disconnected(store, got), "the frozen charger dropped", 5)
        assert took < 3.0
    finally:
        ws.transport.abort()
        await cs.close()


async def test_a_new_connection_replaces_a_frozen_one_at_once(station, store, clock):
    got: list = []
    cs = await server(station, store, clock, got, ping_interval_s=0, heartbeat_timeout_s=0)
    try:
        frozen = await connect(cs)
        frozen.transport.pause_reading()  # will never answer the close of the old session
        t0 = time.monotonic()
        fresh = await connect(cs)  # its BootNotification is answered at once
        assert time.monotonic() - t0 < 1.5  # was 10 s (websockets' close timeout)
        await fresh.send(json.dumps([2, "hb", "Heartbeat", {}]))
        assert json.loads(await asyncio.wait_for(fresh.recv(), 3))[0] == 3
        assert cs.is_connected("GJDG-AC-01")
        assert records.get_charger(store, "GJDG-AC-01")["connected"] == 1
        await fresh.close()
    finally:
        frozen.transport.abort()
        await cs.close()
