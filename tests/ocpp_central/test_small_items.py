"""The smaller items of issue #13: free vend and blocked tags, SoC sampled at the EV."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import websockets

from megastation.store import records
from ocpp_central.server import CentralSystem
from tests.conftest import T0
from tests.ocpp_clients import url


async def ask(ws, frame: list) -> list:
    await ws.send(json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), 3))


async def test_free_vend_refuses_blocked_tags(station, store, clock):
    st = dataclasses.replace(station, site=dataclasses.replace(station.site, free_vend=True))
    records.set_id_token(store, "STOLEN", status="Blocked")
    cs = CentralSystem(st, store, clock, response_timeout_s=2)
    await cs.start("127.0.0.1", 0)
    try:
        ws = await websockets.connect(url(cs.port, "GJDG-AC-01"), subprotocols=["ocpp1.6"])
        async with ws:
            blocked = await ask(ws, [2, "a1", "Authorize", {"idTag": "STOLEN"}])
            assert blocked[2]["idTagInfo"]["status"] == "Blocked"
            anyone = await ask(ws, [2, "a2", "Authorize", {"idTag": "WHOEVER"}])
            assert anyone[2]["idTagInfo"]["status"] == "Accepted"
    finally:
        await cs.close()


async def test_soc_sampled_at_the_ev_is_read(central, store, ocpp_events):
    ws = await websockets.connect(url(central.port, "GJDG-AC-01"), subprotocols=["ocpp1.6"])
    async with ws:
        start = await ask(ws, [2, "s", "StartTransaction", {
            "connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-06-15T00:00:00Z"}])  # fmt: skip
        tx = start[2]["transactionId"]
        await ask(ws, [2, "m", "MeterValues", {"connectorId": 1, "transactionId": tx,
            "meterValue": [{"timestamp": "2026-06-15T00:01:00Z", "sampledValue": [
                {"value": "7000", "measurand": "Power.Active.Import", "unit": "W",
                 "location": "Outlet"},
                {"value": "42", "measurand": "SoC", "unit": "Percent", "location": "EV"}]}]}])  # fmt: skip
    (open_tx,) = records.open_transactions(store)
    assert open_tx.soc_frac == 0.42 and open_tx.power_kw == 7.0
    sample = [e for e in ocpp_events if type(e).__name__ == "MeterSampleReceived"][-1]
    assert sample.soc_frac == 0.42 and sample.ts > T0
