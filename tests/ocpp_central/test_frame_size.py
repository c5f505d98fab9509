"""Frame size (issue #13, item 2): a long 1.6 StopTransaction fits; an oversize frame is logged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import timedelta

import pytest
import websockets

from megastation.core.config import load_station
from megastation.store import records
from ocpp_central.server import CentralSystem
from tests.conftest import T0
from tests.ocpp_clients import url


def iso_z(ts) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def stop_with_8h_of_data(transaction_id: int) -> list:
    """StopTransaction with 8 h of one-minute transaction data (energy, power, SoC): ~130 kB."""
    data = []
    for k in range(480):
        ts = T0 + timedelta(minutes=k)
        data.append(
            {
                "timestamp": iso_z(ts),
                "sampledValue": [
                    {"value": str(k * 125), "measurand": "Energy.Active.Import.Register",
                     "unit": "Wh", "context": "Sample.Periodic"},
                    {"value": "7.5", "measurand": "Power.Active.Import", "unit": "kW",
                     "context": "Sample.Periodic"},
                    {"value": str(20 + k // 8), "measurand": "SoC", "unit": "Percent",
                     "location": "EV", "context": "Sample.Periodic"},
                ],
            }
        )  # fmt: skip
    return [2, "stop-8h", "StopTransaction", {
        "transactionId": transaction_id, "meterStop": 480 * 125,
        "timestamp": iso_z(T0 + timedelta(hours=8)), "reason": "EVDisconnected",
        "transactionData": data}]  # fmt: skip


async def test_a_128_kb_stop_transaction_is_accepted(central: CentralSystem, store):
    async with websockets.connect(
        url(central.port, "GJDG-AC-01"), subprotocols=["ocpp1.6"], max_size=None
    ) as ws:
        await ws.send(json.dumps([2, "s", "StartTransaction", {
            "connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": iso_z(T0)}]))  # fmt: skip
        tx_id = json.loads(await asyncio.wait_for(ws.recv(), 3))[2]["transactionId"]
        frame = json.dumps(stop_with_8h_of_data(tx_id))
        assert len(frame) > 128_000
        await ws.send(frame)
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer[0] == 3 and answer[1] == "stop-8h"
    tx = records.get_transaction(store, tx_id)
    assert tx["state"] == "closed" and tx["energy_kwh"] == pytest.approx(60.0)
    n = store.conn.execute(
        "SELECT COUNT(*) FROM meter_samples WHERE transaction_id = ?", (tx_id,)
    ).fetchone()[0]
    assert n == 480 * 3


async def test_an_oversize_frame_is_logged_with_charger_and_size(
    station, store, clock, caplog: pytest.LogCaptureFixture
):
    small = dataclasses.replace(
        station, server=dataclasses.replace(station.server, max_frame_bytes=100_000)
    )
    cs = CentralSystem(small, store, clock, response_timeout_s=2)
    await cs.start("127.0.0.1", 0)
    try:
        frame = json.dumps(stop_with_8h_of_data(1))
        for charger_id, compression, expected in (
            ("GJDG-AC-01", None, f"GJDG-AC-01: frame of {len(frame)} bytes refused"),
            ("GJDG-AC-02", "deflate", "GJDG-AC-02: compressed frame of over 100000 bytes"),
        ):
            ws = await websockets.connect(
                url(cs.port, charger_id), subprotocols=["ocpp1.6"], compression=compression
            )
            with caplog.at_level(logging.WARNING, logger="megastation.ocpp"):
                await ws.send(frame)
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 3)
                assert info.value.rcvd.code == 1009
                for _ in range(300):  # the server logs once it has closed its side
                    if expected in caplog.text:
                        break
                    await asyncio.sleep(0.01)
            assert expected in caplog.text
        assert "max_frame_bytes = 100000" in caplog.text
    finally:
        await cs.close()
    logged = store.conn.execute(
        "SELECT payload FROM message_log WHERE charger_id = 'GJDG-AC-01' AND payload LIKE "
        "'frame of%'"
    ).fetchall()
    assert logged and str(len(frame)) in logged[0][0]


def test_max_frame_bytes_is_configurable(seed_path, tmp_path):
    text = seed_path.read_text()
    assert "[server]" in text
    path = tmp_path / "station.toml"
    path.write_text(text.replace("[server]", "[server]\nmax_frame_bytes = 8388608", 1))
    assert load_station(path).server.max_frame_bytes == 8 * 1024 * 1024
    assert load_station(seed_path).server.max_frame_bytes == 4 * 1024 * 1024
