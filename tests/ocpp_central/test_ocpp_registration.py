"""Auto-registered chargers stay Pending (SecurityError for other CALLs) until an operator accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner
from ocpp.exceptions import SecurityError
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as A201

from megastation.cli import main
from megastation.store import commands, records
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import connect_charger

TS = "2026-06-15T00:00:00Z"


@pytest.fixture
async def auto_central(station, store, clock):
    site = dataclasses.replace(station.site, auto_register=True)
    cs = CentralSystem(dataclasses.replace(station, site=site), store, clock, response_timeout_s=2)
    await cs.start("127.0.0.1", 0)
    yield cs
    await cs.close()


def cli(db: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.output


async def test_16_pending_charger_is_refused_until_accepted(auto_central, store, db_path):
    async with connect_charger(auto_central.port, "NEW-16", "1.6") as cp:
        boot = await cp.call(
            call16.BootNotification(charge_point_model="m", charge_point_vendor="v")
        )
        assert boot.status == "Pending"
        for msg in (
            call16.Heartbeat(),
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
            call16.StartTransaction(connector_id=1, id_tag="T", meter_start=0, timestamp=TS),
        ):
            with pytest.raises(SecurityError):
                await cp.call(msg, suppress=False)
        assert records.list_transactions(store) == []
        assert records.connector_statuses(store) == []

        assert "Accepted" in cli(db_path, "chargers", "accept", "NEW-16")
        # Accepted in the store, but the charger is told so only at its next boot.
        with pytest.raises(SecurityError):
            await cp.call(call16.Heartbeat(), suppress=False)
        boot = await cp.call(
            call16.BootNotification(charge_point_model="m", charge_point_vendor="v")
        )
        assert boot.status == "Accepted"
        await cp.call(
            call16.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
            suppress=False,
        )
    assert [c["status"] for c in records.connector_statuses(store)] == ["Available"]
    # Reconnecting later: Accepted from the first message on.
    async with connect_charger(auto_central.port, "NEW-16", "1.6") as cp:
        await cp.call(call16.Heartbeat(), suppress=False)


async def test_201_pending_station_may_answer_what_the_csms_asked_for(auto_central, store):
    class CP(CP201):
        @on(A201.trigger_message)
        def on_trigger(self, requested_message, **kw):
            return result201.TriggerMessage(status="Accepted")

    async with connect_charger(auto_central.port, "NEW-201", "2.0.1", cp_class=CP) as cp:
        boot = await cp.call(
            call201.BootNotification(
                charging_station={"model": "m", "vendor_name": "v"}, reason="PowerUp"
            )
        )
        assert boot.status == "Pending"
        status = call201.StatusNotification(
            timestamp=TS, connector_status="Available", evse_id=1, connector_id=1
        )
        with pytest.raises(SecurityError):
            await cp.call(status, suppress=False)
        # A report the CSMS asked for (GetBaseReport) is allowed while Pending.
        await cp.call(call201.NotifyReport(request_id=1, generated_at=TS, seq_no=0), suppress=False)
        # So is one message the CSMS triggered, once.
        outcome = await auto_central.call(
            "NEW-201", "TriggerMessage", {"requested_message": "StatusNotification"}
        )
        assert outcome.status == commands.ACCEPTED
        await cp.call(status, suppress=False)
        with pytest.raises(SecurityError):
            await cp.call(status, suppress=False)
        assert records.accept_charger(store, "NEW-201")
        boot = await cp.call(
            call201.BootNotification(
                charging_station={"model": "m", "vendor_name": "v"}, reason="PowerUp"
            )
        )
        assert boot.status == "Accepted"
        await cp.call(status, suppress=False)
