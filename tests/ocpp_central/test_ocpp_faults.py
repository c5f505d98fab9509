"""Bad input and faults: CallErrors, replays, reconnects, vanishing chargers, big frames."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16.enums import Action

from megastation.store import Store, commands, records
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import connect_charger, url
from tests.waiting import command_settled as _done
from tests.waiting import wait_until

TS = "2026-06-15T00:{:02d}:00Z"


async def raw(central: CentralSystem, charger_id: str = "GJDG-AC-01", proto: str = "ocpp1.6"):
    return await websockets.connect(url(central.port, charger_id), subprotocols=[proto])


async def ask(ws, frame: str | list) -> list:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), 3))


def count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize(
    ("proto", "frame", "code"),
    [
        ("ocpp1.6", "{not json", "FormationViolation"),
        ("ocpp2.0.1", "{not json", "FormatViolation"),
        ("ocpp1.6", '{"a": 1}', "FormationViolation"),
        ("ocpp1.6", '[7, "u1", "Heartbeat", {}]', "ProtocolError"),
        ("ocpp2.0.1", '[7, "u1", "Heartbeat", {}]', "MessageTypeNotSupported"),
        # OCPP-J: NotImplemented = action not known; NotSupported = known, not supported
        ("ocpp1.6", '[2, "u1", "FlyToTheMoon", {}]', "NotImplemented"),
        (
            "ocpp2.0.1",
            '[2, "u1", "Get15118EVCertificate", {"iso15118SchemaVersion": "x", '
            '"action": "Install", "exiRequest": "y"}]',
            "NotSupported",
        ),
        ("ocpp1.6", '[2, "u1", "Heartbeat", {"extra": 1}]', "FormationViolation"),
        (
            "ocpp1.6",
            '[2, "u1", "StartTransaction", {"connectorId": 1, "idTag": "T", '
            '"timestamp": "2026-06-15T00:00:00Z"}]',
            "OccurenceConstraintViolation",
        ),
        (
            "ocpp1.6",
            '[2, "u1", "StartTransaction", {"connectorId": "one", "idTag": "T", '
            '"meterStart": 0, "timestamp": "2026-06-15T00:00:00Z"}]',
            "TypeConstraintViolation",
        ),
        (
            "ocpp2.0.1",
            '[2, "u1", "StatusNotification", {"timestamp": "2026-06-15T00:00:00Z", '
            '"connectorStatus": "Sleepy", "evseId": 1, "connectorId": 1}]',
            "PropertyConstraintViolation",
        ),
    ],
)
async def test_bad_frames_get_call_errors_and_connection_stays_open(
    central: CentralSystem, store: Store, proto: str, frame: str, code: str
):
    ws = await raw(central, "GJDG-AC-03" if proto == "ocpp2.0.1" else "GJDG-AC-01", proto)
    async with ws:
        answer = await ask(ws, frame)
        assert answer[0] == 4 and answer[2] == code, answer
        assert answer[1] in ("u1", "-1")
        ok = await ask(ws, [2, "after", "Heartbeat", {}])
        assert ok[0] == 3 and ok[1] == "after"
    assert count(store, "transactions") == 0
    assert count(store, "connector_status_history") == 0


async def test_resent_call_after_reconnect_is_not_duplicated(central: CentralSystem, store: Store):
    start = [
        2,
        "start-1",
        "StartTransaction",
        {"connectorId": 1, "idTag": "T", "meterStart": 100, "timestamp": TS.format(0)},
    ]
    async with await raw(central) as ws:
        first = await ask(ws, start)
    async with await raw(central) as ws:  # reconnect, same unique id
        again = await ask(ws, start)
        start[1] = "start-2"  # replayed from the offline queue under a new id
        replay = await ask(ws, start)
        stop = [
            2,
            "stop-1",
            "StopTransaction",
            {
                "transactionId": first[2]["transactionId"],
                "meterStop": 10100,
                "timestamp": TS.format(30),
            },
        ]
        await ask(ws, stop)
        stop[1] = "stop-2"
        await ask(ws, stop)
    assert first[2] == again[2] == replay[2]
    assert count(store, "transactions") == 1
    [tx] = records.list_transactions(store)
    assert tx["energy_kwh"] == pytest.approx(10.0)


async def test_transaction_event_replay_and_late_meter_values(central: CentralSystem, store: Store):
    def ev(seq, kind, minute, wh, uid):
        return [
            2,
            uid,
            "TransactionEvent",
            {
                "eventType": kind,
                "timestamp": TS.format(minute),
                "triggerReason": "MeterValuePeriodic",
                "seqNo": seq,
                "offline": True,
                "transactionInfo": {"transactionId": "T-9"},
                "evse": {"id": 1},
                "meterValue": [
                    {
                        "timestamp": TS.format(minute),
                        "sampledValue": [{"value": wh, "unitOfMeasure": {"unit": "Wh"}}],
                    }
                ],
            },
        ]

    async with await raw(central, "GJDG-AC-03", "ocpp2.0.1") as ws:
        # The offline queue arrives out of order and partly twice.
        for frame in (
            ev(1, "Updated", 10, 4000, "a"),
            ev(0, "Started", 0, 1000, "b"),
            ev(1, "Updated", 10, 4000, "c"),
            ev(2, "Updated", 20, 7000, "d"),
            ev(0, "Started", 0, 1000, "e"),
        ):
            assert (await ask(ws, frame))[0] == 3
        # Late MeterValues for an earlier minute arrive after later ones.
        for minute, wh in ((15, 5500), (5, 2500)):
            mv = [
                2,
                f"mv{minute}",
                "MeterValues",
                {
                    "evseId": 1,
                    "meterValue": [
                        {
                            "timestamp": TS.format(minute),
                            "sampledValue": [{"value": wh, "unitOfMeasure": {"unit": "Wh"}}],
                        }
                    ],
                },
            ]
            assert (await ask(ws, mv))[0] == 3
        await ask(ws, ev(3, "Ended", 30, 10000, "f"))
        await ask(ws, ev(3, "Ended", 30, 10000, "g"))
    [tx] = records.list_transactions(store)
    assert tx["start_time"].startswith("2026-06-15T00:00:00")
    assert tx["offline"] == 1 and tx["state"] == "closed"
    assert tx["energy_kwh"] == pytest.approx(9.0)
    samples = records.list_meter_samples(store, transaction_id=tx["id"])
    assert [s["value"] for s in samples] == pytest.approx([1, 2.5, 4, 5.5, 7, 10])
    assert count(store, "transaction_events") == 4


async def test_reconnect_replaces_old_connection(central: CentralSystem):
    old = await raw(central)
    await ask(old, [2, "1", "Heartbeat", {}])
    new = await raw(central)
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(old.recv(), 3)
    assert (await ask(new, [2, "2", "Heartbeat", {}]))[0] == 3
    assert central.is_connected("GJDG-AC-01")
    await new.close()
    await wait_until(lambda: not central.is_connected("GJDG-AC-01"), "GJDG-AC-01 disconnected")


async def test_charger_vanishing_mid_call(station, store, clock):
    cs = CentralSystem(station, store, clock, response_timeout_s=0.3)
    await cs.start("127.0.0.1", 0)
    try:
        ws = await raw(cs)
        await ask(ws, [2, "1", "Heartbeat", {}])
        outcome = await cs.call("GJDG-AC-01", "Reset", {"type": "Soft"})  # never answered
        assert outcome.status == commands.TIMEOUT
        task = asyncio.create_task(cs.call("GJDG-AC-01", "Reset", {"type": "Hard"}))
        await asyncio.wait_for(ws.recv(), 3)  # the call arrived; now the charger vanishes
        ws.transport.abort()
        outcome = await asyncio.wait_for(task, 3)
        assert outcome.status in (commands.OFFLINE, commands.TIMEOUT)
        await wait_until(lambda: not cs.is_connected("GJDG-AC-01"), "GJDG-AC-01 disconnected")
        offline = await cs.call("GJDG-AC-01", "Reset", {"type": "Soft"})
        assert offline.status == commands.OFFLINE
        stored = [c["status"] for c in commands.list_commands(store)]
        assert stored[-1] == commands.TIMEOUT and stored[0] == commands.OFFLINE
        assert not [t for t in cs._tasks if not t.done()]
    finally:
        await cs.close()


async def test_oversized_frame_closes_that_connection_only(central: CentralSystem):
    other = await raw(central, "GJDG-AC-02")
    ws = await raw(central)
    big = central.max_frame_bytes + 1000
    await ws.send(json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * big}]))
    with pytest.raises(websockets.ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 3)
    assert info.value.rcvd.code == 1009
    assert (await ask(other, [2, "1", "Heartbeat", {}]))[0] == 3
    await other.close()


async def test_commands_reach_the_charger(central: CentralSystem, store: Store):
    from ocpp.v16 import call_result

    class CP(CP16):
        @on(Action.remote_start_transaction)
        def on_remote_start(self, id_tag, **kw):
            return call_result.RemoteStartTransaction(
                status="Accepted" if id_tag == "OK" else "Rejected"
            )

    async with connect_charger(central.port, "GJDG-AC-01", "1.6", cp_class=CP):
        ok = await central.call("GJDG-AC-01", "RemoteStartTransaction", {"id_tag": "OK"})
        assert ok.status == commands.ACCEPTED and ok.response == {"status": "Accepted"}
        no = await central.call("GJDG-AC-01", "RemoteStartTransaction", {"id_tag": "NO"})
        assert no.status == commands.REJECTED
        unknown = await central.call("GJDG-AC-01", "UnlockConnector", {"connector_id": 1})
        assert unknown.status == commands.ERROR and "NotImplemented" in unknown.error
        invalid = await central.call("GJDG-AC-01", "Reset", {"type": "Sideways"})
        assert invalid.status == commands.ERROR
        # The operator's durable path: a row in the command table, picked up by the server.
        cid = commands.enqueue_command(
            store, "GJDG-AC-01", "RemoteStartTransaction", {"id_tag": "OK"}
        )
        assert await central.process_pending_commands() == [cid]
        await wait_until(lambda: _done(store, cid), f"command {cid} answered")
        assert commands.get_command(store, cid)["status"] == commands.ACCEPTED
    cid = commands.enqueue_command(store, "GJDG-AC-01", "Reset", {"type": "Soft"})
    await central.process_pending_commands()
    await wait_until(lambda: _done(store, cid), f"command {cid} settled")
    assert commands.get_command(store, cid)["status"] == commands.OFFLINE


async def test_charging_profiles_both_versions(central: CentralSystem):
    from ocpp.v16 import call_result as r16
    from ocpp.v201 import ChargePoint as CP201
    from ocpp.v201 import call_result as r201
    from ocpp.v201.enums import Action as A201

    seen = {}

    class C16(CP16):
        @on(Action.set_charging_profile)
        def on_scp(self, connector_id, cs_charging_profiles, **kw):
            seen["1.6"] = cs_charging_profiles
            return r16.SetChargingProfile(status="Accepted")

    class C201(CP201):
        @on(A201.set_charging_profile)
        def on_scp(self, evse_id, charging_profile, **kw):
            seen["2.0.1"] = charging_profile
            return r201.SetChargingProfile(status="Accepted")

    async with (
        connect_charger(central.port, "GJDG-AC-01", "1.6", cp_class=C16),
        connect_charger(central.port, "GJDG-AC-03", "2.0.1", cp_class=C201),
    ):
        o16 = await central.call(
            "GJDG-AC-01",
            "SetChargingProfile",
            {
                "connector_id": 1,
                "cs_charging_profiles": {
                    "charging_profile_id": 1,
                    "stack_level": 0,
                    "charging_profile_purpose": "TxDefaultProfile",
                    "charging_profile_kind": "Absolute",
                    "charging_schedule": {
                        "charging_rate_unit": "W",
                        "start_schedule": TS.format(0),
                        "charging_schedule_period": [{"start_period": 0, "limit": 7000.5}],
                    },
                },
            },
        )
        assert o16.status == commands.ACCEPTED, o16
        o201 = await central.call(
            "GJDG-AC-03",
            "SetChargingProfile",
            {
                "evse_id": 1,
                "charging_profile": {
                    "id": 1,
                    "stack_level": 0,
                    "charging_profile_purpose": "TxDefaultProfile",
                    "charging_profile_kind": "Absolute",
                    "charging_schedule": [
                        {
                            "id": 1,
                            "charging_rate_unit": "W",
                            "start_schedule": TS.format(0),
                            "charging_schedule_period": [{"start_period": 0, "limit": 7000.0}],
                        }
                    ],
                },
            },
        )
        assert o201.status == commands.ACCEPTED, o201
    assert seen["1.6"]["charging_schedule"]["charging_schedule_period"][0]["limit"] == 7000.5
    assert seen["2.0.1"]["charging_schedule"][0]["charging_rate_unit"] == "W"
