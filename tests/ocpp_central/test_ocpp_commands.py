"""Operator commands over the durable path, both OCPP versions.

`megastation command send` queues a row -> the running central system sends it to an
``ocpp`` library charge point -> the outcome is stored and `megastation command` shows it.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as r16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call_result as r201
from ocpp.v201.enums import Action as A201

from megastation.cli import main
from megastation.store import Store, commands, records
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import connect_charger
from tests.waiting import command_settled as _done
from tests.waiting import wait_until

TS = "2026-06-15T00:00:00Z"


def cli(db: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.output


async def run_commands(
    central: CentralSystem, store: Store, db: Path, charger_id: str, cases: list[tuple]
) -> dict[int, dict]:
    """Queue each (action, payload) with the CLI, let the server send them, return the CLI list."""
    ids = []
    for action, payload, _status, _check in cases:
        out = cli(db, "command", "send", charger_id, action, json.dumps(payload), "--wait", "0")
        ids.append(int(out.split()[1]))
    assert sorted(await central.process_pending_commands()) == ids
    await wait_until(lambda: all(_done(store, i) for i in ids), f"commands {ids} answered")
    listed = {c["id"]: c for c in json.loads(cli(db, "command", "--json"))}
    for cid, (action, _payload, status, check) in zip(ids, cases, strict=True):
        row = listed[cid]
        assert (row["action"], row["status"]) == (action, status), row
        assert check(row["response"]), row
    return listed


async def test_16_commands(central: CentralSystem, store: Store, db_path: Path):
    config = {"HeartbeatInterval": "300", "ChargeProfileMaxStackLevel": "8"}

    class CP(CP16):
        @on(A16.clear_charging_profile)
        def on_clear(self, **kw):
            return r16.ClearChargingProfile(status="Accepted" if kw.get("id") == 7 else "Unknown")

        @on(A16.get_composite_schedule)
        def on_composite(self, connector_id, duration, **kw):
            return r16.GetCompositeSchedule(
                status="Accepted",
                connector_id=connector_id,
                schedule_start=TS,
                charging_schedule={
                    "duration": duration,
                    "charging_rate_unit": "W",
                    "charging_schedule_period": [{"start_period": 0, "limit": 7000.0}],
                },
            )

        @on(A16.get_configuration)
        def on_get_config(self, key=None, **kw):
            keys = key or list(config)
            return r16.GetConfiguration(
                configuration_key=[
                    {"key": k, "readonly": False, "value": config[k]} for k in keys if k in config
                ],
                unknown_key=[k for k in keys if k not in config] or None,
            )

        @on(A16.change_configuration)
        def on_change_config(self, key, value, **kw):
            if key not in config:
                return r16.ChangeConfiguration(status="NotSupported")
            config[key] = value
            return r16.ChangeConfiguration(status="Accepted")

        @on(A16.trigger_message)
        def on_trigger(self, requested_message, **kw):
            return r16.TriggerMessage(status="Accepted")

        @after(A16.trigger_message)
        async def after_trigger(self, requested_message, **kw):
            if requested_message == "StatusNotification":
                await self.call(
                    call16.StatusNotification(
                        connector_id=1, error_code="NoError", status="Faulted"
                    )
                )

        @on(A16.change_availability)
        def on_availability(self, connector_id, type, **kw):
            return r16.ChangeAvailability(status="Scheduled" if connector_id == 1 else "Rejected")

    cases = [
        ("ClearChargingProfile", {"id": 7}, commands.ACCEPTED, lambda r: r["status"] == "Accepted"),
        ("ClearChargingProfile", {"id": 8}, commands.REJECTED, lambda r: r["status"] == "Unknown"),
        (
            "GetCompositeSchedule",
            {"connector_id": 1, "duration": 3600, "charging_rate_unit": "W"},
            commands.ACCEPTED,
            lambda r: r["charging_schedule"]["charging_schedule_period"][0]["limit"] == 7000,
        ),
        (
            "GetConfiguration",
            {"key": ["HeartbeatInterval", "Nope"]},
            commands.ACCEPTED,
            lambda r: r["configuration_key"][0]["value"] == "300" and r["unknown_key"] == ["Nope"],
        ),
        ("GetConfiguration", {"key": ["Nope"]}, commands.REJECTED, lambda r: "unknown_key" in r),
        (
            "ChangeConfiguration",
            {"key": "HeartbeatInterval", "value": "60"},
            commands.ACCEPTED,
            lambda r: r["status"] == "Accepted",
        ),
        (
            "ChangeConfiguration",
            {"key": "Nope", "value": "1"},
            commands.REJECTED,
            lambda r: r["status"] == "NotSupported",
        ),
        (
            "TriggerMessage",
            {"requested_message": "StatusNotification", "connector_id": 1},
            commands.ACCEPTED,
            lambda r: r["status"] == "Accepted",
        ),
        (
            "ChangeAvailability",
            {"connector_id": 1, "type": "Inoperative"},
            commands.ACCEPTED,
            lambda r: r["status"] == "Scheduled",
        ),
        (
            "ChangeAvailability",
            {"connector_id": 2, "type": "Operative"},
            commands.REJECTED,
            lambda r: r["status"] == "Rejected",
        ),
    ]
    async with connect_charger(central.port, "GJDG-AC-01", "1.6", cp_class=CP):
        await run_commands(central, store, db_path, "GJDG-AC-01", cases)
        assert config["HeartbeatInterval"] == "60"
        # the triggered StatusNotification arrives after the answer
        await wait_until(lambda: records.connector_statuses(store), "triggered StatusNotification")
        # A payload the 1.6 schema refuses never leaves the server.
        cid = commands.enqueue_command(store, "GJDG-AC-01", "GetCompositeSchedule", {"duration": 1})
        await central.process_pending_commands()
        await wait_until(lambda: _done(store, cid), f"command {cid} settled")
        assert commands.get_command(store, cid)["status"] == commands.ERROR
    assert [(c["charger_id"], c["status"]) for c in records.connector_statuses(store)] == [
        ("GJDG-AC-01", "Faulted")
    ]


async def test_201_commands(central: CentralSystem, store: Store, db_path: Path):
    variables = {("SmartChargingCtrlr", "Enabled"): "true"}

    class CP(CP201):
        @on(A201.clear_charging_profile)
        def on_clear(self, **kw):
            return r201.ClearChargingProfile(status="Accepted")

        @on(A201.get_composite_schedule)
        def on_composite(self, duration, evse_id, **kw):
            return r201.GetCompositeSchedule(
                status="Accepted",
                schedule={
                    "evse_id": evse_id,
                    "duration": duration,
                    "schedule_start": TS,
                    "charging_rate_unit": "W",
                    "charging_schedule_period": [{"start_period": 0, "limit": 11000.0}],
                },
            )

        @on(A201.get_variables)
        def on_get(self, get_variable_data, **kw):
            out = []
            for d in get_variable_data:
                key = (d["component"]["name"], d["variable"]["name"])
                item = {"component": d["component"], "variable": d["variable"]}
                if key in variables:
                    item |= {"attribute_status": "Accepted", "attribute_value": variables[key]}
                else:
                    item |= {"attribute_status": "UnknownVariable"}
                out.append(item)
            return r201.GetVariables(get_variable_result=out)

        @on(A201.set_variables)
        def on_set(self, set_variable_data, **kw):
            out = []
            for d in set_variable_data:
                key = (d["component"]["name"], d["variable"]["name"])
                ok = key in variables
                if ok:
                    variables[key] = d["attribute_value"]
                out.append(
                    {
                        "component": d["component"],
                        "variable": d["variable"],
                        "attribute_status": "Accepted" if ok else "UnknownVariable",
                    }
                )
            return r201.SetVariables(set_variable_result=out)

        @on(A201.trigger_message)
        def on_trigger(self, requested_message, **kw):
            return r201.TriggerMessage(status="Accepted")

        @on(A201.change_availability)
        def on_availability(self, operational_status, **kw):
            return r201.ChangeAvailability(status="Accepted")

    smart = {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "Enabled"}}
    nope = {"component": {"name": "Nope"}, "variable": {"name": "Nope"}}
    cases = [
        (
            "ClearChargingProfile",
            {"charging_profile_criteria": {"charging_profile_purpose": "TxProfile"}},
            commands.ACCEPTED,
            lambda r: r["status"] == "Accepted",
        ),
        (
            "GetCompositeSchedule",
            {"duration": 3600, "evse_id": 1, "charging_rate_unit": "W"},
            commands.ACCEPTED,
            lambda r: r["schedule"]["charging_schedule_period"][0]["limit"] == 11000,
        ),
        (
            "GetVariables",
            {"get_variable_data": [smart]},
            commands.ACCEPTED,
            lambda r: r["get_variable_result"][0]["attribute_value"] == "true",
        ),
        (
            "SetVariables",
            {"set_variable_data": [smart | {"attribute_value": "false"}]},
            commands.ACCEPTED,
            lambda r: r["set_variable_result"][0]["attribute_status"] == "Accepted",
        ),
        (
            "SetVariables",
            {"set_variable_data": [nope | {"attribute_value": "1"}]},
            commands.REJECTED,
            lambda r: r["set_variable_result"][0]["attribute_status"] == "UnknownVariable",
        ),
        (
            "TriggerMessage",
            {"requested_message": "Heartbeat"},
            commands.ACCEPTED,
            lambda r: r["status"] == "Accepted",
        ),
        (
            "ChangeAvailability",
            {"operational_status": "Inoperative", "evse": {"id": 1}},
            commands.ACCEPTED,
            lambda r: r["status"] == "Accepted",
        ),
    ]
    async with connect_charger(central.port, "GJDG-AC-03", "2.0.1", cp_class=CP):
        await run_commands(central, store, db_path, "GJDG-AC-03", cases)
    assert variables[("SmartChargingCtrlr", "Enabled")] == "false"
    # The charger is gone: the next command is recorded as offline and shown so.
    out = cli(
        db_path,
        "command",
        "send",
        "GJDG-AC-03",
        "TriggerMessage",
        '{"requested_message": "Heartbeat"}',
        "--wait",
        "0",
    )
    await central.process_pending_commands()
    await wait_until(lambda: _done(store, int(out.split()[1])), "offline command settled")
    listed = json.loads(cli(db_path, "command", "--json"))
    assert listed[0]["id"] == int(out.split()[1]) and listed[0]["status"] == commands.OFFLINE
