"""What the central system sends a charger, and when (issue #13, item 6).

Nothing before its BootNotification is accepted; the configuration read and fail-safe
profiles once per connection; a failed read retried; a profile equal to the one in force
not sent again, also on forced (over-limit) re-plans; no TxProfile for an ended transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta

import pytest
import websockets

from megastation.control.controller import Controller
from megastation.core.gateway import ConnectorSetpoint
from megastation.core.schedules import KwSchedule
from megastation.store import control as cr
from megastation.store import records
from ocpp_central.gateway import OcppGateway
from ocpp_central.server import CentralSystem
from tests.control.test_control_loop import flat_forecaster
from tests.control_chargepoints import Car, cp_class
from tests.ocpp_clients import connect_charger, url

BOOT = [2, "boot", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]
CONFIG = {"configurationKey": [
    {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current,Power"},
    {"key": "SupportedFeatureProfiles", "readonly": True, "value": "Core,SmartCharging"}]}  # fmt: skip


@contextlib.asynccontextmanager
async def loop_with_controller(station, store, clock, *, response_timeout_s=2.0):
    """Central system + OcppGateway + a running controller (events wired)."""
    ctl_box: list = []
    cs = CentralSystem(
        station, store, clock, response_timeout_s=response_timeout_s,
        on_event=lambda e: ctl_box[0].notify(e) if ctl_box else None,
    )  # fmt: skip
    await cs.start("127.0.0.1", 0)
    gw = OcppGateway(station, store, clock, cs)
    ctl = Controller(station, store, clock, gateway=gw, forecaster=flat_forecaster(0.0))
    ctl_box.append(ctl)
    task = asyncio.create_task(ctl.run())
    try:
        yield cs, ctl
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cs.close()


class RawCharger:
    """A 1.6 charger on a bare socket that records every CALL it gets, in order."""

    def __init__(self, ws, *, ignore_first_get_configuration: bool = False) -> None:
        self.ws = ws
        self.calls: list[tuple[str, dict]] = []
        self.answers: asyncio.Queue = asyncio.Queue()
        self.ignore_first = ignore_first_get_configuration
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            msg = json.loads(text)
            if msg[0] != 2:
                await self.answers.put(msg)
                continue
            self.calls.append((msg[2], msg[3]))
            if msg[2] == "GetConfiguration" and self.ignore_first:
                self.ignore_first = False
                continue  # no answer: the read times out
            payload = CONFIG if msg[2] == "GetConfiguration" else {"status": "Accepted"}
            await self.ws.send(json.dumps([3, msg[1], payload]))

    async def ask(self, frame: list) -> list:
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(self.answers.get(), 5)

    def actions(self) -> list[str]:
        out = []
        for action, payload in self.calls:
            if action == "SetChargingProfile":
                action += ":" + payload["csChargingProfiles"]["chargingProfilePurpose"]
            out.append(action)
        return out


async def until(cond, what: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


EXPECTED = ["GetConfiguration", "SetChargingProfile:ChargePointMaxProfile",
            "SetChargingProfile:TxDefaultProfile"]  # fmt: skip


async def test_nothing_before_boot_accepted_and_fail_safe_once(station, store, clock):
    async with loop_with_controller(station, store, clock) as (cs, ctl):
        ws = await websockets.connect(url(cs.port, "GJDG-AC-01"), subprotocols=["ocpp1.6"])
        cp = RawCharger(ws)
        await until(lambda: cs.is_connected("GJDG-AC-01"), "connected")
        # a charger that answers nothing before its boot is accepted: the server waits
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_first_call(cp), 0.5)
        answer = await cp.ask(BOOT)
        assert answer[2]["status"] == "Accepted"
        await until(lambda: len(cp.calls) >= 3, "configuration read and fail-safe profiles")
        await ctl.wait_idle()
        with pytest.raises(TimeoutError):  # and nothing more (was: all of it twice)
            await asyncio.wait_for(_nth_call(cp, 4), 0.5)
        assert cp.actions() == EXPECTED
        await ws.close()


async def test_a_failed_configuration_read_is_retried(station, store, clock):
    async with loop_with_controller(station, store, clock, response_timeout_s=0.5) as (cs, _ctl):
        ws = await websockets.connect(url(cs.port, "GJDG-AC-01"), subprotocols=["ocpp1.6"])
        cp = RawCharger(ws, ignore_first_get_configuration=True)
        await cp.ask(BOOT)
        await until(lambda: len(cp.calls) >= 4, lambda: f"a second read: {cp.actions()}", 15)
        assert cp.actions() == ["GetConfiguration", *EXPECTED]
        keys = cr.charger_config_keys(store, "GJDG-AC-01")
        assert keys["ChargingScheduleAllowedChargingRateUnit"] == "Current,Power"
        await ws.close()


async def _first_call(cp: RawCharger) -> None:
    await _nth_call(cp, 1)


async def _nth_call(cp: RawCharger, n: int) -> None:
    while len(cp.calls) < n:
        await asyncio.sleep(0.01)


def setpoint(charger_id, tx, ocpp_tx_id, kw, now, *, force):
    sched = KwSchedule((now, now + timedelta(minutes=15)), (kw, kw), now + timedelta(hours=1))
    return ConnectorSetpoint(
        charger_id, 1, tx, str(ocpp_tx_id), sched, kw, force=force,
        lease_end=now + timedelta(minutes=30),
    )  # fmt: skip


async def test_an_equal_profile_is_not_resent_even_when_forced(central, station, store, clock):
    records.set_id_token(store, "TAG")
    ch = station.charger("GJDG-DC-03")
    gw = OcppGateway(station, store, clock, central)
    async with connect_charger(
        central.port, ch.id, "1.6", cp_class=cp_class("1.6"), charger=ch, clock=clock
    ) as cp:
        await cp.boot()
        ocpp_tx = await cp.plug(1, Car(energy_wanted_kwh=30, max_kw=50))
        tx = records.find_transaction(store, ch.id, str(ocpp_tx))["id"]
        now = clock.now()
        first = await gw.apply([setpoint(ch.id, tx, ocpp_tx, 40.0, now, force=True)])
        assert [o.status for o in first] == ["accepted"]
        again = await gw.apply([setpoint(ch.id, tx, ocpp_tx, 40.0, now, force=True)])
        assert [o.status for o in again] == ["deadband"]  # was re-sent on every forced plan
        lower = await gw.apply([setpoint(ch.id, tx, ocpp_tx, 20.0, now, force=True)])
        assert [o.status for o in lower] == ["accepted"]
        tx_profiles = [p for p in cp.received if p["charging_profile_purpose"] == "TxProfile"]
        assert len(tx_profiles) == 2


async def test_no_tx_profile_after_the_transaction_ended(central, station, store, clock):
    records.set_id_token(store, "TAG")
    ch = station.charger("GJDG-DC-01")  # OCPP 2.0.1
    gw = OcppGateway(station, store, clock, central)
    async with connect_charger(
        central.port, ch.id, "2.0.1", cp_class=cp_class("2.0.1"), charger=ch, clock=clock
    ) as cp:
        await cp.boot()
        car = Car(energy_wanted_kwh=30, max_kw=50)
        await cp.plug(1, car)
        tx = records.find_transaction(store, ch.id, car.tx_id)["id"]
        sp = setpoint(ch.id, tx, car.tx_id, 40.0, clock.now(), force=False)  # planned ...
        await cp.unplug(1)  # ... then the car leaves before it is sent
        assert records.get_transaction(store, tx)["state"] != "open"
        out = await gw.apply([sp])
        assert [o.status for o in out] == ["ended"]
        assert not [p for p in cp.received if p["charging_profile_purpose"] == "TxProfile"]
