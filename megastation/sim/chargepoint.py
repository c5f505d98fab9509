"""Simulated OCPP charge points: the station's chargers, played over real WebSockets.

One :class:`SimulatedChargePoint` per charger of the station config speaks OCPP 1.6
or 2.0.1 (``charger.ocpp_version``) through the ``ocpp`` library's client side
(``ocpp.v16.ChargePoint`` / ``ocpp.v201.ChargePoint``) to the central system at
``ws://host:port/<charger_id>``. :class:`Fleet` runs them all for a list of
:class:`~megastation.core.fleet.CarVisit`.

What a charge point does, on the injected clock:

- boots (BootNotification), reports every connector Available, heartbeats at the
  interval the central system gave;
- for each visit: plugs in (1.6 Preparing / 2.0.1 Occupied), Authorize, then
  StartTransaction (1.6) or TransactionEvent Started (2.0.1); an ISO 15118 car on a
  2.0.1 charger sends NotifyEVChargingNeeds (departure time, energy amount);
- charges at ``min(composite limit, car max, connector max, taper)``
  (:mod:`megastation.sim.composite`, :mod:`megastation.sim.car`); the chargers' own
  max profile also caps the sum of its connectors;
- every ``meter_interval_s`` reports energy register [Wh], power [W] and SoC [%]
  (1.6 MeterValues, 2.0.1 TransactionEvent Updated);
- at departure stops the transaction (StopTransaction / TransactionEvent Ended, reason
  EVDisconnected) and unplugs;
- answers SetChargingProfile, ClearChargingProfile, GetCompositeSchedule,
  Remote/RequestStart and Stop, Reset, Change/GetConfiguration, Set/GetVariables,
  TriggerMessage, UnlockConnector and ChangeAvailability.

Calls to the central system are made from the charge point's own tasks, never from
inside an ``@on`` handler (that would deadlock the connection).

Left out: offline queueing and reconnects (a charger that loses its connection stops),
firmware/diagnostics, reservations, local authorisation lists.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as r16
from ocpp.v16.enums import Action as A16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as r201
from ocpp.v201.enums import Action as A201
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from megastation.core.clock import Clock, SimClock
from megastation.core.config import Charger, Station
from megastation.core.fleet import CarVisit
from megastation.sim.car import ConnectorSim
from megastation.sim.composite import Electrical, ProfileSet

log = logging.getLogger("megastation.sim")

ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
SOC = "SoC"


def ocpp_time(ts: datetime) -> str:
    """OCPP date-time: UTC, whole seconds, ``Z``."""
    return ts.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Connector:
    """The charger side of one connector (EVSE in 2.0.1, one connector each)."""

    id: int
    queue: list[CarVisit]  # visits still to come, in arrival order
    register_wh: float = 0.0  # lifetime energy register
    car: ConnectorSim | None = None  # the car plugged in, if any
    tx_id: str | None = None  # active transaction (1.6: str of the int id)
    tx_start: datetime | None = None
    tx_register_start_wh: float = 0.0
    seq_no: int = 0  # 2.0.1 TransactionEvent sequence
    id_token: str | None = None
    status: str = ""  # last status reported
    last_meter: datetime | None = None
    available: bool = True  # ChangeAvailability

    @property
    def power_kw(self) -> float:
        return self.car.power_kw if self.car is not None and self.tx_id is not None else 0.0


@dataclass(frozen=True)
class TransactionRecord:
    """A transaction as the charge point saw it (for tests and the demo summary)."""

    charger_id: str
    connector_id: int
    transaction_id: str
    id_token: str
    start: datetime
    stop: datetime
    meter_start_wh: int
    meter_stop_wh: int
    reason: str

    @property
    def energy_kwh(self) -> float:
        return (self.meter_stop_wh - self.meter_start_wh) / 1000.0


class _CP16(ChargePoint16):
    """``ocpp`` 1.6 client with handlers that delegate to the simulated charger."""

    sim: SimulatedChargePoint

    @on(A16.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict, **kw):
        return r16.SetChargingProfile(
            status=self.sim.set_profile(connector_id, cs_charging_profiles)
        )

    @on(A16.clear_charging_profile)
    def on_clear_charging_profile(self, **kw):
        found = self.sim.profiles.clear(
            profile_id=kw.get("id"),
            connector_id=kw.get("connector_id"),
            purpose=kw.get("charging_profile_purpose"),
            stack_level=kw.get("stack_level"),
        )
        return r16.ClearChargingProfile(status="Accepted" if found else "Unknown")

    # The library's own check of this answer fails on float limits (multipleOf 0.1 with
    # Decimal); the answer is built from rounded limits, so skip it.
    @on(A16.get_composite_schedule, skip_schema_validation=True)
    def on_get_composite_schedule(self, connector_id: int, duration: int, **kw):
        return r16.GetCompositeSchedule(
            **self.sim.composite_answer(connector_id, duration, kw.get("charging_rate_unit"))
        )

    @on(A16.remote_start_transaction)
    def on_remote_start_transaction(self, id_tag: str, **kw):
        return r16.RemoteStartTransaction(
            status=self.sim.remote_start(kw.get("connector_id"), id_tag)
        )

    @on(A16.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **kw):
        return r16.RemoteStopTransaction(status=self.sim.remote_stop(str(transaction_id)))

    @on(A16.reset)
    def on_reset(self, type: str, **kw):
        self.sim.defer(self.sim.boot)
        return r16.Reset(status="Accepted")

    @on(A16.change_configuration)
    def on_change_configuration(self, key: str, value: str, **kw):
        return r16.ChangeConfiguration(status=self.sim.set_config(key, value))

    @on(A16.get_configuration)
    def on_get_configuration(self, **kw):
        keys = kw.get("key") or list(self.sim.config)
        known = [
            {"key": k, "readonly": k in self.sim.readonly, "value": self.sim.config[k]}
            for k in keys
            if k in self.sim.config
        ]
        unknown = [k for k in keys if k not in self.sim.config]
        out: dict[str, Any] = {"configuration_key": known}
        if unknown:
            out["unknown_key"] = unknown
        return r16.GetConfiguration(**out)

    @on(A16.trigger_message)
    def on_trigger_message(self, requested_message: str, **kw):
        return r16.TriggerMessage(
            status=self.sim.trigger(requested_message, kw.get("connector_id"))
        )

    @on(A16.unlock_connector)
    def on_unlock_connector(self, connector_id: int, **kw):
        ok = self.sim.unlock(connector_id)
        return r16.UnlockConnector(status="Unlocked" if ok else "NotSupported")

    @on(A16.change_availability)
    def on_change_availability(self, connector_id: int, type: str, **kw):
        return r16.ChangeAvailability(
            status=self.sim.change_availability(connector_id, type == "Operative")
        )

    @on(A16.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kw):
        return r16.DataTransfer(status="UnknownVendorId")


class _CP201(ChargePoint201):
    """``ocpp`` 2.0.1 client with handlers that delegate to the simulated charger."""

    sim: SimulatedChargePoint

    @on(A201.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict, **kw):
        return r201.SetChargingProfile(status=self.sim.set_profile(evse_id, charging_profile))

    @on(A201.clear_charging_profile)
    def on_clear_charging_profile(self, **kw):
        crit = kw.get("charging_profile_criteria") or {}
        found = self.sim.profiles.clear(
            profile_id=kw.get("charging_profile_id"),
            connector_id=crit.get("evse_id"),
            purpose=crit.get("charging_profile_purpose"),
            stack_level=crit.get("stack_level"),
        )
        return r201.ClearChargingProfile(status="Accepted" if found else "Unknown")

    @on(A201.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int, **kw):
        return r201.GetCompositeSchedule(
            **self.sim.composite_answer(evse_id, duration, kw.get("charging_rate_unit"))
        )

    @on(A201.request_start_transaction)
    def on_request_start_transaction(self, id_token: dict, remote_start_id: int, **kw):
        status = self.sim.remote_start(kw.get("evse_id"), id_token.get("id_token", ""))
        return r201.RequestStartTransaction(status=status)

    @on(A201.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **kw):
        return r201.RequestStopTransaction(status=self.sim.remote_stop(str(transaction_id)))

    @on(A201.reset)
    def on_reset(self, type: str, **kw):
        self.sim.defer(self.sim.boot)
        return r201.Reset(status="Accepted")

    @on(A201.get_variables)
    def on_get_variables(self, get_variable_data: list, **kw):
        results = []
        for item in get_variable_data:
            comp = item["component"]["name"]
            var = item["variable"]["name"]
            value = self.sim.variables.get((comp, var))
            res: dict[str, Any] = {
                "attribute_status": "Accepted" if value is not None else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                res["attribute_value"] = value
            results.append(res)
        return r201.GetVariables(get_variable_result=results)

    @on(A201.set_variables)
    def on_set_variables(self, set_variable_data: list, **kw):
        results = []
        for item in set_variable_data:
            key = (item["component"]["name"], item["variable"]["name"])
            status = self.sim.set_variable(key, str(item["attribute_value"]))
            results.append(
                {
                    "attribute_status": status,
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        return r201.SetVariables(set_variable_result=results)

    @on(A201.trigger_message)
    def on_trigger_message(self, requested_message: str, **kw):
        evse = (kw.get("evse") or {}).get("id")
        return r201.TriggerMessage(status=self.sim.trigger(requested_message, evse))

    @on(A201.unlock_connector)
    def on_unlock_connector(self, evse_id: int, connector_id: int, **kw):
        ok = self.sim.unlock(evse_id)
        return r201.UnlockConnector(status="Unlocked" if ok else "UnknownConnector")

    @on(A201.change_availability)
    def on_change_availability(self, operational_status: str, **kw):
        evse = (kw.get("evse") or {}).get("id", 0)
        return r201.ChangeAvailability(
            status=self.sim.change_availability(evse, operational_status == "Operative")
        )

    @on(A201.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kw):
        return r201.DataTransfer(status="UnknownVendorId")


class SimulatedChargePoint:
    """One simulated charger: connectors, cars, installed profiles, an OCPP connection."""

    def __init__(
        self,
        charger: Charger,
        visits: Sequence[CarVisit],
        url: str,
        clock: Clock,
        *,
        meter_interval_s: float = 60.0,
        tick_s: float = 10.0,
        password: str | None = None,
        response_timeout_s: float = 30.0,
    ) -> None:
        self.charger = charger  # from the station config
        self.url = url  # full URL ending in the charger identity
        self.clock = clock  # injected time
        self.meter_interval_s = meter_interval_s  # clock seconds between MeterValues
        self.tick_s = tick_s  # clock seconds between physics steps
        self.password = password  # HTTP Basic (security profile 1/2), or None
        self.response_timeout_s = response_timeout_s  # real seconds
        self.version = charger.ocpp_version
        dc = charger.kind == "DC"
        self.elec = Electrical(
            hardware_max_kw=charger.connector_power_kw,
            phases=charger.phases if not dc else 3,
            voltage_v=charger.voltage_v,
        )
        self.profiles = ProfileSet(
            self.elec,
            charger_max_kw=charger.max_power_kw,
            max_stack_level=8,
            max_periods=48,
            allowed_units=("W",) if dc else ("A",),
        )
        mine = sorted((v for v in visits if v.charger_id == charger.id), key=lambda v: v.arrival)
        self.connectors = {
            cid: _Connector(cid, [v for v in mine if v.connector_id == cid])
            for cid in charger.connector_ids
        }
        unit_16 = "Power" if dc else "Current"
        self.config: dict[str, str] = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": str(int(meter_interval_s)),
            "NumberOfConnectors": str(charger.connectors),
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
            "ChargingScheduleAllowedChargingRateUnit": unit_16,
            "ChargeProfileMaxStackLevel": str(self.profiles.max_stack_level),
            "ChargingScheduleMaxPeriods": str(self.profiles.max_periods),
            "MaxChargingProfilesInstalled": "16",
            "ConnectorSwitch3to1PhaseSupported": "false",
            "AuthorizeRemoteTxRequests": "false",
        }
        self.readonly = {
            "NumberOfConnectors",
            "SupportedFeatureProfiles",
            "ChargingScheduleAllowedChargingRateUnit",
            "ChargeProfileMaxStackLevel",
            "ChargingScheduleMaxPeriods",
            "MaxChargingProfilesInstalled",
            "ConnectorSwitch3to1PhaseSupported",
        }
        self.variables: dict[tuple[str, str], str] = {
            ("SmartChargingCtrlr", "Enabled"): "true",
            ("SmartChargingCtrlr", "RateUnit"): "W" if dc else "A",
            ("SmartChargingCtrlr", "ProfileStackLevel"): str(self.profiles.max_stack_level),
            ("SmartChargingCtrlr", "PeriodsPerSchedule"): str(self.profiles.max_periods),
            ("SmartChargingCtrlr", "Entries"): "16",
            ("OCPPCommCtrlr", "HeartbeatInterval"): "300",
            ("SampledDataCtrlr", "TxUpdatedInterval"): str(int(meter_interval_s)),
        }
        self.records: list[TransactionRecord] = []  # finished transactions
        self.boot_status: str | None = None
        self.idle = asyncio.Event()  # set while waiting on the clock (see drive_sim_clock)
        self._sleeping = False  # the main loop waits on the clock
        self._jobs = 0  # deferred jobs queued or running
        self._heartbeat_s = 300.0
        self._last_heartbeat: datetime | None = None
        self._last_step: datetime | None = None
        self._lock = asyncio.Lock()  # one state-changing sequence at a time
        self._deferred: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._tx_counter = 0
        self.cp: _CP16 | _CP201 | None = None

    # ------------------------------------------------------------------ running

    def power_kw(self, connector_id: int) -> float:
        """The power [kW] connector ``connector_id`` draws now."""
        return self.connectors[connector_id].power_kw

    def limits_kw(self) -> dict[int, float]:
        """The limit [kW] each charging connector follows now (composite of its profiles)."""
        return self._limits_kw(self.clock.now())

    def _headers(self) -> dict[str, str]:
        if self.password is None:
            return {}
        token = base64.b64encode(f"{self.charger.id}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def run(self, until: datetime) -> None:
        """Connect, boot and play the visits until clock time ``until``; then disconnect."""
        proto = "ocpp1.6" if self.version == "1.6" else "ocpp2.0.1"
        try:
            async with connect(
                self.url,
                subprotocols=[Subprotocol(proto)],
                additional_headers=self._headers(),
                open_timeout=self.response_timeout_s,
            ) as ws:
                cls = _CP16 if self.version == "1.6" else _CP201
                self.cp = cls(self.charger.id, ws, response_timeout=self.response_timeout_s)
                self.cp.sim = self
                reader = asyncio.create_task(self.cp.start())
                worker = asyncio.create_task(self._work_deferred())
                main = asyncio.create_task(self._main(until))
                try:
                    await asyncio.wait({main, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if not main.done():  # the connection (or the ocpp library) gave up
                        main.cancel()
                        exc = reader.exception() if not reader.cancelled() else None
                        raise ConnectionError(f"{self.charger.id}: connection lost: {exc!r}")
                    main.result()
                finally:
                    for task in (main, worker, reader):
                        task.cancel()
                    await asyncio.gather(main, worker, reader, return_exceptions=True)
        finally:
            self._jobs = 0
            self.idle.set()

    async def _main(self, until: datetime) -> None:
        async with self._lock:
            await self.boot()
            for c in self.connectors.values():
                await self._status(c, "Available")
        self._last_step = self.clock.now()
        while self.clock.now() < until:
            async with self._lock:
                await self._tick(self.clock.now())
            wait = min(self.tick_s, (until - self.clock.now()).total_seconds())
            if wait <= 0:
                break
            self._set_sleeping(True)
            try:
                await self.clock.sleep(wait)
            finally:
                self._set_sleeping(False)
        async with self._lock:
            await self._tick(self.clock.now())

    def _set_sleeping(self, sleeping: bool) -> None:
        self._sleeping = sleeping
        if sleeping and self._jobs == 0:
            self.idle.set()
        else:
            self.idle.clear()

    async def _work_deferred(self) -> None:
        while True:
            job = await self._deferred.get()
            try:
                async with self._lock:
                    await job()
            except Exception:  # a failed call must not kill the charger
                log.exception("%s: deferred action failed", self.charger.id)
            finally:
                self._jobs -= 1
                self._set_sleeping(self._sleeping)

    def defer(self, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` after the current handler has answered (never inside it)."""
        self._jobs += 1
        self.idle.clear()
        self._deferred.put_nowait(job)

    async def _call(self, payload: Any) -> Any:
        assert self.cp is not None
        return await self.cp.call(payload, suppress=False)

    async def boot(self) -> None:
        if self.version == "1.6":
            res = await self._call(
                call16.BootNotification(
                    charge_point_model=self.charger.model or "SimCharger",
                    charge_point_vendor=self.charger.vendor or "megastation",
                    firmware_version="sim-1",
                )
            )
        else:
            res = await self._call(
                call201.BootNotification(
                    charging_station={
                        "model": self.charger.model or "SimCharger",
                        "vendor_name": self.charger.vendor or "megastation",
                        "firmware_version": "sim-1",
                    },
                    reason="PowerUp",
                )
            )
        self.boot_status = res.status
        if res.interval:
            self._heartbeat_s = float(res.interval)
            self.config["HeartbeatInterval"] = str(int(res.interval))
            self.variables[("OCPPCommCtrlr", "HeartbeatInterval")] = str(int(res.interval))
        self._last_heartbeat = self.clock.now()

    async def heartbeat(self) -> None:
        await self._call(call16.Heartbeat() if self.version == "1.6" else call201.Heartbeat())
        self._last_heartbeat = self.clock.now()

    # ------------------------------------------------------------------ the tick

    async def _tick(self, now: datetime) -> None:
        last = self._last_step or now
        dt = (now - last).total_seconds()
        if dt > 0:
            self._step_physics(last, dt)
        self._last_step = now
        for c in self.connectors.values():
            await self._connector_events(c, now)
        if (
            self._last_heartbeat is not None
            and (now - self._last_heartbeat).total_seconds() >= self._heartbeat_s
        ):
            await self.heartbeat()

    def _limits_kw(self, at: datetime) -> dict[int, float]:
        """Per-connector limits at ``at``, with the charger-wide cap shared out."""
        want: dict[int, float] = {}
        for c in self.connectors.values():
            if c.car is None or c.tx_id is None:
                continue
            limit = self.profiles.limit_kw(
                c.id, at, transaction_id=c.tx_id, transaction_start=c.tx_start
            )
            want[c.id] = min(limit, c.car.max_power_kw())
        cap = self.profiles.limit_kw(0, at)
        total = sum(want.values())
        if total > cap > 0:
            return {k: v * cap / total for k, v in want.items()}
        if cap <= 0:
            return dict.fromkeys(want, 0.0)
        return want

    def _step_physics(self, start: datetime, dt_s: float) -> None:
        limits = self._limits_kw(start)
        for c in self.connectors.values():
            if c.car is None:
                continue
            if c.tx_id is None:
                c.car.power_kw = 0.0
                continue
            before = c.car.energy_kwh
            c.car.step(start, dt_s, limits.get(c.id, 0.0))
            c.register_wh += (c.car.energy_kwh - before) * 1000.0

    async def _connector_events(self, c: _Connector, now: datetime) -> None:
        # Departure: stop and unplug.
        if c.car is not None and now >= c.car.visit.departure:
            if c.tx_id is not None:
                await self._stop_tx(c, c.car.visit.departure, "EVDisconnected")
            c.car = None
            c.id_token = None
            await self._status(c, "Available" if c.available else "Unavailable")
        # Visits whose time has passed entirely are skipped (e.g. the run started late).
        while c.queue and c.queue[0].departure <= now:
            c.queue.pop(0)
        # Arrival: plug in and start.
        if c.car is None and c.queue and c.queue[0].arrival <= now:
            visit = c.queue.pop(0)
            if not c.available:
                return  # the car finds the connector out of order and drives on
            c.car = ConnectorSim(
                visit,
                connector_max_kw=self.charger.connector_power_kw,
                kind=self.charger.kind,
                phases=self.charger.phases,
                voltage_v=self.charger.voltage_v,
            )
            await self._plug_in(c, now)
        # Meter values and 1.6 charging state.
        if c.tx_id is not None and c.car is not None:
            if (
                c.last_meter is None
                or (now - c.last_meter).total_seconds() >= self.meter_interval_s
            ):
                await self._meter_values(c, now)
            if self.version == "1.6":
                state = "Charging"
                if c.car.power_kw <= 0:
                    state = "SuspendedEV" if c.car.full else "SuspendedEVSE"
                if state != c.status:
                    await self._status(c, state)

    # ------------------------------------------------------------------ messages

    async def _status(self, c: _Connector, status: str) -> None:
        now = self.clock.now()
        if self.version == "1.6":
            await self._call(
                call16.StatusNotification(
                    connector_id=c.id,
                    error_code="NoError",
                    status=status,
                    timestamp=ocpp_time(now),
                )
            )
        else:
            status201 = {
                "Preparing": "Occupied",
                "Charging": "Occupied",
                "SuspendedEV": "Occupied",
                "SuspendedEVSE": "Occupied",
                "Finishing": "Occupied",
            }.get(status, status)
            await self._call(
                call201.StatusNotification(
                    timestamp=ocpp_time(now),
                    connector_status=status201,
                    evse_id=c.id,
                    connector_id=1,
                )
            )
        c.status = status

    async def _authorize(self, token: str) -> str:
        if self.version == "1.6":
            res = await self._call(call16.Authorize(id_tag=token))
            return res.id_tag_info["status"]
        res = await self._call(call201.Authorize(id_token={"id_token": token, "type": "ISO14443"}))
        return res.id_token_info["status"]

    async def _plug_in(self, c: _Connector, now: datetime) -> None:
        assert c.car is not None
        await self._status(c, "Preparing" if self.version == "1.6" else "Occupied")
        token = c.car.visit.id_token
        if await self._authorize(token) != "Accepted":
            return  # stays plugged in, waiting for a remote start
        await self._start_tx(c, token, now)

    async def _start_tx(self, c: _Connector, token: str, now: datetime) -> None:
        assert c.car is not None
        c.id_token = token
        c.tx_start = now
        c.tx_register_start_wh = c.register_wh
        c.last_meter = now
        meter_start = round(c.register_wh)
        if self.version == "1.6":
            res = await self._call(
                call16.StartTransaction(
                    connector_id=c.id,
                    id_tag=token,
                    meter_start=meter_start,
                    timestamp=ocpp_time(now),
                )
            )
            c.tx_id = str(res.transaction_id)
            if res.id_tag_info.get("status") != "Accepted":
                await self._stop_tx(c, now, "DeAuthorized")
                return
            await self._status(c, "Charging")
        else:
            self._tx_counter += 1
            c.tx_id = f"{self.charger.id}-{c.id}-{int(now.timestamp())}-{self._tx_counter}"
            c.seq_no = 0
            res = await self._call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp=ocpp_time(now),
                    trigger_reason="Authorized",
                    seq_no=c.seq_no,
                    transaction_info={"transaction_id": c.tx_id, "charging_state": "Charging"},
                    id_token={"id_token": token, "type": "ISO14443"},
                    evse={"id": c.id, "connector_id": 1},
                    meter_value=[self._meter_value_201(c, now, context="Transaction.Begin")],
                )
            )
            info = res.id_token_info or {}
            if info.get("status", "Accepted") != "Accepted":
                await self._stop_tx(c, now, "DeAuthorized")
                return
            if c.car.visit.sends_charging_needs:
                await self._charging_needs(c)

    async def _charging_needs(self, c: _Connector) -> None:
        assert c.car is not None
        v = c.car.visit
        energy_wh = round(c.car.energy_remaining_kwh * 1000.0)
        if self.charger.kind == "DC":
            voltage = 400
            needs: dict[str, Any] = {
                "requested_energy_transfer": "DC",
                "departure_time": ocpp_time(v.departure),
                "dc_charging_parameters": {
                    "ev_max_current": int(v.car_max_power_kw * 1000 / voltage),
                    "ev_max_voltage": 500,
                    "energy_amount": energy_wh,
                    "ev_max_power": int(v.car_max_power_kw * 1000),
                    "state_of_charge": round(c.car.soc_frac * 100),
                    "ev_energy_capacity": int(v.battery_kwh * 1000),
                    "full_soc": 100,
                },
            }
        else:
            phases = self.charger.phases
            needs = {
                "requested_energy_transfer": "AC_single_phase" if phases == 1 else "AC_three_phase",
                "departure_time": ocpp_time(v.departure),
                "ac_charging_parameters": {
                    "energy_amount": energy_wh,
                    "ev_min_current": 6,
                    "ev_max_current": int(
                        v.car_max_power_kw * 1000 / (phases * self.charger.voltage_v)
                    ),
                    "ev_max_voltage": int(self.charger.voltage_v),
                },
            }
        await self._call(call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=c.id))

    def _samples(self, c: _Connector) -> list[tuple[str, float, str]]:
        assert c.car is not None
        return [
            (ENERGY, round(c.register_wh), "Wh"),
            (POWER, round(c.car.power_kw * 1000.0, 1), "W"),
            (SOC, round(c.car.soc_frac * 100.0, 1), "Percent"),
        ]

    def _meter_value_16(self, c: _Connector, ts: datetime, context: str) -> dict[str, Any]:
        return {
            "timestamp": ocpp_time(ts),
            "sampled_value": [
                {
                    "value": f"{value:g}" if unit != "Wh" else str(int(value)),
                    "measurand": m,
                    "unit": unit,
                    "context": context,
                    **({"location": "EV"} if m == SOC else {"location": "Outlet"}),
                }
                for m, value, unit in self._samples(c)
            ],
        }

    def _meter_value_201(self, c: _Connector, ts: datetime, context: str) -> dict[str, Any]:
        return {
            "timestamp": ocpp_time(ts),
            "sampled_value": [
                {
                    "value": value,
                    "measurand": m,
                    "context": context,
                    "location": "EV" if m == SOC else "Outlet",
                    "unit_of_measure": {"unit": unit},
                }
                for m, value, unit in self._samples(c)
            ],
        }

    async def _meter_values(self, c: _Connector, now: datetime, context: str = "") -> None:
        context = context or "Sample.Periodic"
        c.last_meter = now
        if self.version == "1.6":
            await self._call(
                call16.MeterValues(
                    connector_id=c.id,
                    transaction_id=int(c.tx_id) if c.tx_id and c.tx_id.isdigit() else None,
                    meter_value=[self._meter_value_16(c, now, context)],
                )
            )
        else:
            c.seq_no += 1
            assert c.car is not None
            state = "Charging" if c.car.power_kw > 0 else "SuspendedEVSE"
            if c.car.full:
                state = "SuspendedEV"
            await self._call(
                call201.TransactionEvent(
                    event_type="Updated",
                    timestamp=ocpp_time(now),
                    trigger_reason="MeterValuePeriodic"
                    if context == "Sample.Periodic"
                    else "Trigger",
                    seq_no=c.seq_no,
                    transaction_info={"transaction_id": c.tx_id, "charging_state": state},
                    meter_value=[self._meter_value_201(c, now, context)],
                )
            )

    async def _stop_tx(self, c: _Connector, when: datetime, reason: str) -> None:
        assert c.tx_id is not None and c.car is not None
        meter_stop = round(c.register_wh)
        if self.version == "1.6":
            await self._call(
                call16.StopTransaction(
                    meter_stop=meter_stop,
                    timestamp=ocpp_time(when),
                    transaction_id=int(c.tx_id),
                    reason=reason,
                    id_tag=c.id_token,
                )
            )
        else:
            c.seq_no += 1
            trigger = {"EVDisconnected": "EVCommunicationLost", "Remote": "RemoteStop"}.get(
                reason, "StopAuthorized"
            )
            if reason == "EVDisconnected":
                trigger = "EVDeparted"
            await self._call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp=ocpp_time(when),
                    trigger_reason=trigger,
                    seq_no=c.seq_no,
                    transaction_info={
                        "transaction_id": c.tx_id,
                        "charging_state": "Idle",
                        "stopped_reason": reason,
                    },
                    meter_value=[self._meter_value_201(c, when, context="Transaction.End")],
                )
            )
        self.records.append(
            TransactionRecord(
                charger_id=self.charger.id,
                connector_id=c.id,
                transaction_id=c.tx_id,
                id_token=c.id_token or "",
                start=c.tx_start or when,
                stop=when,
                meter_start_wh=round(c.tx_register_start_wh),
                meter_stop_wh=meter_stop,
                reason=reason,
            )
        )
        self.profiles.end_transaction(c.id)
        c.tx_id = None
        c.car.power_kw = 0.0
        if self.version == "1.6" and c.car.plugged_in(self.clock.now()):
            await self._status(c, "Finishing")

    # ------------------------------------------------------------------ commands

    def _connector(self, connector_id: int | None) -> _Connector | None:
        if connector_id is None:
            return None
        return self.connectors.get(int(connector_id))

    def set_profile(self, connector_id: int, profile: Mapping[str, Any]) -> str:
        c = self._connector(connector_id)
        if connector_id != 0 and c is None:
            return "Rejected"
        tx = c.tx_id if c is not None else None
        return self.profiles.install(connector_id, profile, self.clock.now(), transaction_id=tx)

    def composite_answer(self, connector_id: int, duration: int, unit: str | None) -> dict:
        if connector_id != 0 and self._connector(connector_id) is None:
            return {"status": "Rejected"}
        unit = unit or self.profiles.allowed_units[0]
        c = self._connector(connector_id)
        now = self.clock.now()
        comp = self.profiles.composite_schedule(
            connector_id,
            now,
            int(duration),
            unit,
            transaction_id=c.tx_id if c else None,
            transaction_start=c.tx_start if c else None,
        )
        periods = [{"start_period": s, "limit": lim} for s, lim in comp["periods"]]
        if self.version == "1.6":
            return {
                "status": "Accepted",
                "connector_id": connector_id,
                "schedule_start": ocpp_time(now),
                "charging_schedule": {
                    "duration": int(duration),
                    "start_schedule": ocpp_time(now),
                    "charging_rate_unit": unit,
                    "charging_schedule_period": periods,
                },
            }
        return {
            "status": "Accepted",
            "schedule": {
                "evse_id": connector_id,
                "duration": int(duration),
                "schedule_start": ocpp_time(now),
                "charging_rate_unit": unit,
                "charging_schedule_period": periods,
            },
        }

    def remote_start(self, connector_id: int | None, token: str) -> str:
        candidates = (
            [self._connector(connector_id)] if connector_id else list(self.connectors.values())
        )
        for c in candidates:
            if c is not None and c.car is not None and c.tx_id is None:
                self.defer(lambda c=c: self._start_tx(c, token, self.clock.now()))
                return "Accepted"
        return "Rejected"

    def remote_stop(self, transaction_id: str) -> str:
        for c in self.connectors.values():
            if c.tx_id == transaction_id:

                async def stop(target: _Connector = c) -> None:
                    if target.tx_id == transaction_id:
                        await self._stop_tx(target, self.clock.now(), "Remote")

                self.defer(stop)
                return "Accepted"
        return "Rejected"

    def set_config(self, key: str, value: str) -> str:
        if key not in self.config:
            return "NotSupported"
        if key in self.readonly:
            return "Rejected"
        if key == "HeartbeatInterval":
            try:
                self._heartbeat_s = float(value)
            except ValueError:
                return "Rejected"
        if key == "MeterValueSampleInterval":
            try:
                self.meter_interval_s = float(value)
            except ValueError:
                return "Rejected"
        self.config[key] = value
        return "Accepted"

    def set_variable(self, key: tuple[str, str], value: str) -> str:
        writable = {
            ("OCPPCommCtrlr", "HeartbeatInterval"),
            ("SampledDataCtrlr", "TxUpdatedInterval"),
        }
        if key not in self.variables:
            return "UnknownVariable"
        if key not in writable:
            return "Rejected"
        try:
            seconds = float(value)
        except ValueError:
            return "Rejected"
        if key[1] == "HeartbeatInterval":
            self._heartbeat_s = seconds
        else:
            self.meter_interval_s = seconds
        self.variables[key] = value
        return "Accepted"

    def trigger(self, message: str, connector_id: int | None) -> str:
        targets = (
            [self._connector(connector_id)] if connector_id else list(self.connectors.values())
        )
        targets = [c for c in targets if c is not None]
        if message == "BootNotification":
            self.defer(self.boot)
        elif message == "Heartbeat":
            self.defer(self.heartbeat)
        elif message == "StatusNotification":
            for c in targets:
                self.defer(lambda c=c: self._status(c, c.status or "Available"))
        elif message in ("MeterValues", "TransactionEvent"):
            for c in targets:

                async def send(c: _Connector = c) -> None:
                    if c.tx_id is not None and c.car is not None:
                        await self._meter_values(c, self.clock.now(), "Trigger")

                self.defer(send)
        else:
            return "NotImplemented"
        return "Accepted"

    def unlock(self, connector_id: int) -> bool:
        c = self._connector(connector_id)
        if c is None:
            return False
        if c.tx_id is not None:
            target = c

            async def stop() -> None:
                if target.tx_id is not None:
                    await self._stop_tx(target, self.clock.now(), "UnlockCommand")

            self.defer(stop)
        return True

    def change_availability(self, connector_id: int, operative: bool) -> str:
        targets = (
            list(self.connectors.values())
            if connector_id == 0
            else [c for c in [self._connector(connector_id)] if c is not None]
        )
        if not targets:
            return "Rejected"
        busy = False
        for c in targets:
            c.available = operative
            if c.car is not None:
                busy = True
            else:
                self.defer(
                    lambda c=c, op=operative: self._status(c, "Available" if op else "Unavailable")
                )
        return "Scheduled" if busy else "Accepted"


class Fleet:
    """Every charger of a station as a :class:`SimulatedChargePoint`, playing ``visits``.

    ``url`` is the central system's base URL (``ws://127.0.0.1:9000``); each charger
    connects to ``<url>/<charger_id>``. ``password`` is one password for all chargers
    or a mapping by charger id.
    """

    def __init__(
        self,
        station: Station,
        visits: Sequence[CarVisit],
        url: str,
        clock: Clock,
        *,
        meter_interval_s: float = 60.0,
        tick_s: float = 10.0,
        password: str | Mapping[str, str] | None = None,
        response_timeout_s: float = 30.0,
    ) -> None:
        self.station = station
        self.clock = clock
        base = url.rstrip("/")
        self.chargepoints: dict[str, SimulatedChargePoint] = {}
        for ch in station.chargers:
            pw = password.get(ch.id) if isinstance(password, Mapping) else password
            self.chargepoints[ch.id] = SimulatedChargePoint(
                ch,
                visits,
                f"{base}/{quote(ch.id, safe='')}",
                clock,
                meter_interval_s=meter_interval_s,
                tick_s=tick_s,
                password=pw,
                response_timeout_s=response_timeout_s,
            )

    async def run(self, until: datetime) -> None:
        """Run every charge point until clock time ``until``; a failing one is logged."""
        results = await asyncio.gather(
            *(cp.run(until) for cp in self.chargepoints.values()), return_exceptions=True
        )
        for cp, res in zip(self.chargepoints.values(), results, strict=True):
            if isinstance(res, BaseException):
                log.error("%s stopped: %r", cp.charger.id, res)

    def power_kw(self) -> dict[tuple[str, int], float]:
        """Each connector's power now [kW], keyed ``(charger_id, connector_id)``."""
        return {
            (cid, n): cp.power_kw(n) for cid, cp in self.chargepoints.items() for n in cp.connectors
        }

    def limits_kw(self) -> dict[tuple[str, int], float]:
        """The limit [kW] each charging connector follows now, keyed like :meth:`power_kw`."""
        return {
            (cid, n): kw
            for cid, cp in self.chargepoints.items()
            for n, kw in cp.limits_kw().items()
        }

    def registers_wh(self) -> dict[tuple[str, int], float]:
        """Each connector's energy register [Wh] (what its meter values report)."""
        return {
            (cid, n): c.register_wh
            for cid, cp in self.chargepoints.items()
            for n, c in cp.connectors.items()
        }

    def total_power_kw(self) -> float:
        """All chargers together now [kW]."""
        return sum(self.power_kw().values())

    @property
    def records(self) -> list[TransactionRecord]:
        """Finished transactions of all chargers, by stop time."""
        out = [r for cp in self.chargepoints.values() for r in cp.records]
        return sorted(out, key=lambda r: (r.stop, r.charger_id, r.connector_id))

    async def wait_idle(self) -> None:
        """Until every charge point waits on the clock (or has stopped)."""
        await asyncio.gather(*(cp.idle.wait() for cp in self.chargepoints.values()))


async def drive_sim_clock(
    fleet: Fleet,
    clock: SimClock,
    until: datetime,
    *,
    step_s: float = 10.0,
    settle: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Run ``fleet`` to ``until`` on a :class:`SimClock`, advancing it only when idle.

    Before each step of ``step_s`` clock seconds it waits until every charge point is
    sleeping on the clock (its messages answered), then ``settle()`` if given (e.g. a
    controller's own idle wait). No real sleeping: time moves as fast as the sockets.
    """
    task = asyncio.create_task(fleet.run(until))
    try:
        while not task.done() and clock.now() < until:
            idle = asyncio.ensure_future(fleet.wait_idle())
            await asyncio.wait({idle, task}, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            if task.done():
                break
            if settle is not None:
                await settle()
            await clock.advance(min(step_s, (until - clock.now()).total_seconds()))
        await task
    finally:
        if not task.done():
            task.cancel()


__all__ = [
    "Fleet",
    "SimulatedChargePoint",
    "TransactionRecord",
    "drive_sim_clock",
    "ocpp_time",
]
