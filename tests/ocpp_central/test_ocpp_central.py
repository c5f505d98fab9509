"""A 1.6 and a 2.0.1 charger connect, are authorised and complete a transaction."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime

import pytest
import websockets
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from megastation.core import events
from megastation.store import Store, records
from ocpp_central.auth import hash_password
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import connect_charger, url
from tests.waiting import wait_until

TS = "2026-06-15T00:{:02d}:00Z"


def mv16(minute: int, energy_wh: float, power_w: float, soc: int | None = None) -> dict:
    sv = [
        {"value": str(energy_wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": str(power_w), "measurand": "Power.Active.Import", "unit": "W"},
    ]
    if soc is not None:
        sv.append({"value": str(soc), "measurand": "SoC", "unit": "Percent"})
    return {"timestamp": TS.format(minute), "sampledValue": sv}


def mv201(minute: int, energy_wh: float, power_w: float | None = None) -> dict:
    sv = [
        {
            "value": energy_wh,
            "measurand": "Energy.Active.Import.Register",
            "unitOfMeasure": {"unit": "Wh"},
        }
    ]
    if power_w is not None:
        sv.append(
            {
                "value": power_w / 1000,
                "measurand": "Power.Active.Import",
                "unitOfMeasure": {"unit": "kW"},
            }
        )
    return {"timestamp": TS.format(minute), "sampledValue": sv}


async def test_16_charger_completes_a_transaction(
    central: CentralSystem, store: Store, ocpp_events: list
):
    records.set_id_token(store, "TAG-1")
    async with connect_charger(central.port, "GJDG-DC-03", "1.6") as cp:
        boot = await cp.call(
            call16.BootNotification(charge_point_model="EVAR-100", charge_point_vendor="Chaevi")
        )
        assert boot.status == "Accepted"
        assert central.is_connected("GJDG-DC-03") and central.ocpp_version("GJDG-DC-03") == "1.6"
        await cp.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing")
        )
        auth = await cp.call(call16.Authorize(id_tag="TAG-1"))
        assert auth.id_tag_info["status"] == "Accepted"
        bad = await cp.call(call16.Authorize(id_tag="NOPE"))
        assert bad.id_tag_info["status"] == "Invalid"
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp=TS.format(0)
            )
        )
        tx_id = start.transaction_id
        await cp.call(
            call16.MeterValues(
                connector_id=1, transaction_id=tx_id, meter_value=[mv16(5, 9000, 96000, 40)]
            )
        )
        [open_tx] = records.open_transactions(store)
        assert open_tx.transaction_id == tx_id and open_tx.connector_id == 1
        assert open_tx.energy_kwh == pytest.approx(8.0)
        assert open_tx.power_kw == pytest.approx(96.0)
        assert open_tx.soc_frac == pytest.approx(0.40)
        await cp.call(
            call16.StopTransaction(
                meter_stop=21000,
                timestamp=TS.format(15),
                transaction_id=tx_id,
                reason="EVDisconnected",
                transaction_data=[mv16(10, 15000, 50000)],
            )
        )
    tx = records.get_transaction(store, tx_id)
    assert tx["state"] == "closed" and tx["energy_kwh"] == pytest.approx(20.0)
    assert tx["stop_reason"] == "EVDisconnected" and tx["id_token"] == "TAG-1"
    assert records.open_transactions(store) == []
    kinds = [type(e) for e in ocpp_events]
    for k in (
        events.ChargerConnected,
        events.ChargerBooted,
        events.ConnectorStatusChanged,
        events.TransactionStarted,
        events.MeterSampleReceived,
        events.TransactionEnded,
    ):
        assert k in kinds
    await wait_until(lambda: not central.is_connected("GJDG-DC-03"), "GJDG-DC-03 disconnected")


async def test_201_charger_completes_a_transaction(
    central: CentralSystem, store: Store, ocpp_events: list
):
    records.set_id_token(store, "TAG-2")
    async with connect_charger(central.port, "GJDG-DC-01", "2.0.1") as cp:
        boot = await cp.call(
            call201.BootNotification(
                charging_station={"model": "V2", "vendor_name": "SK Signet"}, reason="PowerUp"
            )
        )
        assert boot.status == "Accepted"
        assert central.ocpp_version("GJDG-DC-01") == "2.0.1"
        await cp.call(
            call201.StatusNotification(
                timestamp=TS.format(0), connector_status="Occupied", evse_id=1, connector_id=1
            )
        )
        auth = await cp.call(call201.Authorize(id_token={"id_token": "TAG-2", "type": "ISO14443"}))
        assert auth.id_token_info["status"] == "Accepted"
        started = await cp.call(
            call201.TransactionEvent(
                event_type="Started",
                timestamp=TS.format(0),
                trigger_reason="Authorized",
                seq_no=0,
                transaction_info={"transaction_id": "tx-a"},
                evse={"id": 1, "connector_id": 1},
                id_token={"id_token": "TAG-2", "type": "ISO14443"},
                meter_value=[mv201(0, 5000)],
            )
        )
        assert started.id_token_info["status"] == "Accepted"
        needs = await cp.call(
            call201.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "DC",
                    "departure_time": "2026-06-15T01:00:00Z",
                    "dc_charging_parameters": {
                        "ev_max_current": 300,
                        "ev_max_voltage": 800,
                        "energy_amount": 40000,
                        "ev_max_power": 150000,
                    },
                },
            )
        )
        assert needs.status == "Accepted"
        await cp.call(
            call201.TransactionEvent(
                event_type="Updated",
                timestamp=TS.format(10),
                trigger_reason="MeterValuePeriodic",
                seq_no=1,
                transaction_info={"transaction_id": "tx-a"},
                meter_value=[mv201(10, 20000, 100000)],
            )
        )
        [open_tx] = records.open_transactions(store)
        assert open_tx.energy_kwh == pytest.approx(15.0) and open_tx.power_kw == pytest.approx(100)
        n = records.latest_charging_needs(store, open_tx.transaction_id)
        assert n.requested_energy_kwh == pytest.approx(40.0)
        assert n.departure_time.isoformat() == "2026-06-15T01:00:00+00:00"
        assert n.max_power_kw == pytest.approx(150.0)
        await cp.call(
            call201.TransactionEvent(
                event_type="Ended",
                timestamp=TS.format(20),
                trigger_reason="EVCommunicationLost",
                seq_no=2,
                transaction_info={"transaction_id": "tx-a", "stopped_reason": "EVDisconnected"},
                meter_value=[mv201(20, 35000)],
            )
        )
        for msg in (
            call201.NotifyReport(request_id=1, generated_at=TS.format(0), seq_no=0),
            call201.SecurityEventNotification(type="StartupOfTheDevice", timestamp=TS.format(0)),
            call201.FirmwareStatusNotification(status="Installed"),
            call201.LogStatusNotification(status="Idle"),
            call201.Heartbeat(),
            call201.MeterValues(evse_id=1, meter_value=[mv201(21, 35000, 0)]),
        ):
            await cp.call(msg, suppress=False)
    tx = records.find_transaction(store, "GJDG-DC-01", "tx-a")
    assert tx["state"] == "closed" and tx["energy_kwh"] == pytest.approx(30.0)
    assert tx["connector_id"] == 1 and tx["stop_reason"] == "EVDisconnected"
    assert any(isinstance(e, events.ChargingNeedsReceived) for e in ocpp_events)
    assert any(
        isinstance(e, events.TransactionEnded) and e.energy_kwh == pytest.approx(30.0)
        for e in ocpp_events
    )


async def test_16_other_messages_are_answered(central: CentralSystem, clock):
    async with connect_charger(central.port, "GJDG-AC-01", "1.6") as cp:
        beat = await cp.call(call16.Heartbeat(), suppress=False)
        assert datetime.fromisoformat(beat.current_time.replace("Z", "+00:00")) == clock.now()
        dt = await cp.call(call16.DataTransfer(vendor_id="x", data="y"), suppress=False)
        assert dt.status == "UnknownVendorId"
        for msg in (
            call16.DiagnosticsStatusNotification(status="Idle"),
            call16.FirmwareStatusNotification(status="Installed"),
        ):
            answer = await cp.call(msg, suppress=False)
            assert answer is not None and dataclasses.asdict(answer) == {}


async def test_subprotocol_negotiation(central: CentralSystem):
    async with websockets.connect(
        url(central.port, "GJDG-AC-03"), subprotocols=["ocpp1.6", "ocpp2.0.1"]
    ) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
    async with websockets.connect(url(central.port, "GJDG-AC-03"), subprotocols=["ocpp1.6"]) as ws:
        assert ws.subprotocol == "ocpp1.6"
    # None offered: the handshake completes without a subprotocol, then the server closes.
    async with websockets.connect(url(central.port, "GJDG-AC-03")) as ws:
        assert ws.subprotocol is None
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
        assert info.value.rcvd.code == 1002


async def test_identity_is_last_path_segment_percent_decoded(central: CentralSystem, store: Store):
    uri = f"ws://127.0.0.1:{central.port}/any/prefix/GJDG%2DAC%2D02"
    async with websockets.connect(uri, subprotocols=["ocpp1.6"]) as ws:
        await ws.send('[2,"1","Heartbeat",{}]')
        assert (await ws.recv()).startswith('[3,"1"')
        assert central.is_connected("GJDG-AC-02")


async def test_unknown_charger_is_refused(central: CentralSystem, store: Store):
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url(central.port, "STRANGER"), subprotocols=["ocpp1.6"])
    assert info.value.response.status_code == 404
    assert records.get_charger(store, "STRANGER") is None


async def test_auto_registered_charger_is_pending_until_accepted(station, store, clock):
    import dataclasses

    site = dataclasses.replace(station.site, auto_register=True)
    cs = CentralSystem(dataclasses.replace(station, site=site), store, clock, response_timeout_s=2)
    await cs.start("127.0.0.1", 0)
    try:
        async with connect_charger(cs.port, "NEW-1", "1.6") as cp:
            boot = await cp.call(
                call16.BootNotification(charge_point_model="m", charge_point_vendor="v")
            )
            assert boot.status == "Pending"
        assert records.get_charger(store, "NEW-1")["registration"] == "Pending"
        assert records.accept_charger(store, "NEW-1")
        async with connect_charger(cs.port, "NEW-1", "1.6") as cp:
            boot = await cp.call(
                call16.BootNotification(charge_point_model="m", charge_point_vendor="v")
            )
            assert boot.status == "Accepted"
    finally:
        await cs.close()


async def test_basic_auth(central: CentralSystem, store: Store):
    records.set_password_hash(store, "GJDG-DC-04", hash_password("s3cret:pw"))
    for password, user in (("wrong", "GJDG-DC-04"), (None, None), ("s3cret:pw", "GJDG-DC-03")):
        uri = url(central.port, "GJDG-DC-04", password=password)
        if user and user != "GJDG-DC-04":
            uri = uri.replace("GJDG-DC-04:", f"{user}:", 1)
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(uri, subprotocols=["ocpp1.6"])
        assert info.value.response.status_code == 401
    async with connect_charger(central.port, "GJDG-DC-04", "1.6", password="s3cret:pw") as cp:
        await cp.call(call16.Heartbeat(), suppress=False)
    central.flush_log()
    refused = store.conn.execute(
        "SELECT COUNT(*) FROM message_log WHERE action = 'Handshake'"
    ).fetchone()[0]
    assert refused == 3
