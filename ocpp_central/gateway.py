"""The controller's set points to chargers over OCPP: :class:`OcppGateway`.

Implements :class:`megastation.core.gateway.ChargerGateway` on top of
:meth:`ocpp_central.server.CentralSystem.call` and :mod:`ocpp_central.profiles`:

- reads each charger's smart-charging configuration once (1.6 GetConfiguration:
  ChargingScheduleAllowedChargingRateUnit, ChargingScheduleMaxPeriods,
  ChargeProfileMaxStackLevel, SupportedFeatureProfiles; 2.0.1 GetVariables on
  SmartChargingCtrlr: RateUnit, PeriodsPerSchedule, ProfileStackLevel, Enabled) and
  keeps it in the store;
- sends a session's TxProfile only when it differs from the one the charger already
  has (kept in the store, so a restarted loop does not send it again) by more than the
  deadband, or when the one on the charger runs out soon;
- a charger that refuses a TxProfile (Rejected, NotSupported/NotImplemented) or says
  it has no smart charging is marked uncontrollable; the controller then plans its
  sessions as uncontrolled load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.core.gateway import ApplyOutcome, ConnectorSetpoint
from megastation.core.schedules import KwSchedule, failsafe_limits_kw
from megastation.store import Store, records
from megastation.store import control as cr
from ocpp_central import protocol
from ocpp_central.profiles import (
    ChargerCaps,
    caps_from_config_keys,
    failsafe_profiles,
    quantised,
    tx_profile,
    within_deadband,
)

log = logging.getLogger(__name__)

CONFIG_KEYS_16 = (
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "ChargeProfileMaxStackLevel",
    "SupportedFeatureProfiles",
)
# 2.0.1 SmartChargingCtrlr variable -> the 1.6 key name used by caps_from_config_keys
VARIABLES_201 = {
    "RateUnit": "ChargingScheduleAllowedChargingRateUnit",
    "PeriodsPerSchedule": "ChargingScheduleMaxPeriods",
    "ProfileStackLevel": "ChargeProfileMaxStackLevel",
    "Enabled": "SmartChargingEnabled",
}
UNSUPPORTED = ("NotSupported", "NotImplemented")


class CentralSystemLike(Protocol):
    """What the gateway needs from :class:`ocpp_central.server.CentralSystem`."""

    def is_connected(self, charger_id: str) -> bool: ...

    def ocpp_version(self, charger_id: str) -> str | None: ...

    async def call(self, charger_id: str, action: str, payload: dict[str, Any]) -> Any: ...


class OcppGateway:
    """Charging profiles to connected chargers through a central system."""

    def __init__(
        self,
        station: Station,
        store: Store,
        clock: Clock,
        central: CentralSystemLike,
        *,
        deadband_kw: float = 1.0,
        refresh_before_s: float | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.station = station
        self.store = store
        self.clock = clock
        self.central = central  # sends calls, records each as a command
        self.deadband_kw = deadband_kw  # smaller changes of a TxProfile are not re-sent [kW]
        # re-send when the profile on the charger ends within this [s]
        self.refresh_before_s = refresh_before_s or 3.0 * station.site.dispatch_interval_s
        self.sent = 0  # SetChargingProfile calls made by this gateway
        # how long a fail-safe install waits for a new connection's boot to be accepted [s]
        self.ready_timeout_s = ready_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}  # one configuration/fail-safe at a time

    def _lock(self, charger_id: str) -> asyncio.Lock:
        lock = self._locks.get(charger_id)
        if lock is None:
            lock = self._locks[charger_id] = asyncio.Lock()
        return lock

    async def _ready(self, charger_id: str, timeout_s: float) -> bool:
        """Whether the charger may be sent calls now: connected and, on a central system
        that knows, its boot on this connection accepted (waits up to ``timeout_s``)."""
        wait = getattr(self.central, "wait_ready", None)
        if wait is None:
            return self.central.is_connected(charger_id)
        if timeout_s <= 0:
            return self.central.is_ready(charger_id)
        return await wait(charger_id, timeout_s)

    # ----------------------------------------------------------------- capabilities

    async def caps(self, charger_id: str) -> ChargerCaps | None:
        """The charger's capabilities (configuration read once, kept in the store).

        None when it is not known: an unknown charger, or a read that failed (timeout,
        disconnect: not kept, so the next call reads again).
        """
        ch = self.station.charger(charger_id)
        version = self.central.ocpp_version(charger_id)
        if ch is None or version is None:
            return None
        keys = cr.charger_config_keys(self.store, charger_id)
        if keys is None:
            keys = await self._read_keys(charger_id, version)
            if keys is None:
                return None
            controllable, reason = True, None
            features = keys.get("SupportedFeatureProfiles")
            if version == "1.6" and features and "smartcharging" not in features.lower():
                controllable, reason = False, "no SmartCharging feature profile"
            if keys.get("SmartChargingEnabled", "").lower() == "false":
                controllable, reason = False, "SmartChargingCtrlr disabled"
            cr.set_charger_control(
                self.store,
                charger_id,
                config_keys=keys,
                controllable=controllable if not controllable else None,
                reason=reason,
            )
        return caps_from_config_keys(
            keys, ocpp_version=version, kind=ch.kind, phases=ch.phases, voltage_v=ch.voltage_v
        )

    async def _read_keys(self, charger_id: str, version: str) -> dict[str, str] | None:
        """The smart-charging configuration; {} if the charger does not support the read
        (its defaults apply), None if the read failed (retried later)."""
        keys: dict[str, str] = {}
        if version == "1.6":
            out = await self.central.call(
                charger_id, "GetConfiguration", {"key": list(CONFIG_KEYS_16)}
            )
            for item in (out.response or {}).get("configuration_key") or ():
                if item.get("value") is not None:
                    keys[item["key"]] = str(item["value"])
        else:
            out = await self.central.call(
                charger_id,
                "GetVariables",
                {
                    "get_variable_data": [
                        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": v}}
                        for v in VARIABLES_201
                    ]
                },
            )
            for item in (out.response or {}).get("get_variable_result") or ():
                name = (item.get("variable") or {}).get("name")
                if item.get("attribute_status") == "Accepted" and name in VARIABLES_201:
                    keys[VARIABLES_201[name]] = str(item.get("attribute_value", ""))
        failed = out.status in ("timeout", "offline", "error")
        if failed and not any(u in (out.error or "") for u in UNSUPPORTED):
            log.warning(
                "%s: configuration read failed (%s: %s); read again later",
                charger_id, out.status, out.error,
            )  # fmt: skip
            return None
        return keys

    # ----------------------------------------------------------------- sending

    async def _send(self, charger_id: str, payload: dict[str, Any]) -> tuple[str, str | None]:
        self.sent += 1
        out = await self.central.call(charger_id, "SetChargingProfile", protocol.to_snake(payload))
        status = out.status
        detail = out.error or (out.response or {}).get("status")
        if status == "error" and any(u in (out.error or "") for u in UNSUPPORTED):
            status = "rejected"
        return status, detail

    async def apply(self, setpoints: Sequence[ConnectorSetpoint]) -> list[ApplyOutcome]:
        by_charger: dict[str, list[ConnectorSetpoint]] = {}
        for sp in setpoints:
            by_charger.setdefault(sp.charger_id, []).append(sp)
        results = await asyncio.gather(
            *(self._apply_charger(cid, sps) for cid, sps in by_charger.items())
        )
        return [o for r in results for o in r]

    async def _apply_charger(
        self, charger_id: str, setpoints: list[ConnectorSetpoint]
    ) -> list[ApplyOutcome]:
        def outcome(sp: ConnectorSetpoint, status: str, payload=None, detail=None) -> ApplyOutcome:
            return ApplyOutcome(
                charger_id, sp.connector_id, "tx", status, sp.power_kw, sp.transaction_id,
                payload, detail,
            )  # fmt: skip

        if not self.central.is_connected(charger_id):
            return [outcome(sp, "offline") for sp in setpoints]
        if not await self._ready(charger_id, 0):
            return [outcome(sp, "offline", detail="boot not accepted yet") for sp in setpoints]
        async with self._lock(charger_id):
            caps = await self.caps(charger_id)
        if caps is None:
            detail = (
                "unknown charger"
                if self.station.charger(charger_id) is None
                else "configuration not read yet"
            )
            return [outcome(sp, "error", detail=detail) for sp in setpoints]
        if charger_id in cr.uncontrollable_chargers(self.store):
            return [outcome(sp, "uncontrollable") for sp in setpoints]
        out = []
        for sp in setpoints:
            now = self.clock.now()
            prev = cr.active_profile(self.store, charger_id, sp.connector_id, "tx")
            q = quantised(caps, sp.schedule, now)
            # the deadband holds on forced re-plans too: a profile (nearly) equal to the
            # one in force is not sent again (#13: 225 identical profiles in 2.5 min)
            if (
                prev is not None
                and prev.transaction_id == sp.transaction_id
                and within_deadband(
                    KwSchedule.from_json(prev.schedule),
                    q,
                    now,
                    deadband_kw=self.deadband_kw,
                    refresh_before_s=self.refresh_before_s,
                    until=sp.lease_end,
                    previous_until=_lease_end(prev.schedule),
                )
            ):
                out.append(outcome(sp, "deadband"))
                continue
            if not _still_open(self.store, sp.transaction_id):
                # the car left between planning and sending: never send a TxProfile for
                # an ended transaction (2.0.1 chargers may apply it to the next one)
                out.append(outcome(sp, "ended", detail="transaction ended before sending"))
                continue
            tx_id: str | int = sp.ocpp_tx_id
            if caps.ocpp_version == "1.6":
                tx_id = int(sp.ocpp_tx_id)
            payload, q = tx_profile(
                caps,
                connector_id=sp.connector_id,
                transaction_id=tx_id,
                schedule=sp.schedule,
                now=now,
            )
            status, detail = await self._send(charger_id, payload)
            if status == "accepted":
                cr.save_active_profile(
                    self.store,
                    cr.ActiveProfile(
                        charger_id,
                        sp.connector_id,
                        "tx",
                        sp.transaction_id,
                        {
                            **q.to_json(),
                            "lease_end": sp.lease_end.isoformat() if sp.lease_end else None,
                        },
                        payload,
                        now,
                    ),
                )
            elif status == "rejected" and not _still_open(self.store, sp.transaction_id):
                # the car left between planning and sending: a stale set point, not a
                # charger that refuses profiles
                out.append(outcome(sp, "ended", payload, f"transaction ended: {detail}"))
                continue
            elif status == "rejected":
                cr.set_charger_control(
                    self.store,
                    charger_id,
                    controllable=False,
                    reason=f"TxProfile refused: {detail}",
                )
                out.append(outcome(sp, "uncontrollable", payload, f"refused: {detail}"))
                continue
            out.append(outcome(sp, status, payload, detail))
        return out

    async def install_failsafe(
        self, charger_id: str, *, grid_import_limit_kw: float
    ) -> list[ApplyOutcome]:
        """Station maximum and TxDefault profiles; not re-sent when already on the charger."""
        if self.station.charger(charger_id) is None:
            return []
        if not await self._ready(charger_id, self.ready_timeout_s):
            # not connected, or its boot not (yet) accepted: nothing is sent before it is
            return [ApplyOutcome(charger_id, 0, t, "offline") for t in ("max", "tx_default")]
        async with self._lock(charger_id):  # one install per connection, not one per event
            return await self._install_failsafe(charger_id, grid_import_limit_kw)

    async def _install_failsafe(
        self, charger_id: str, grid_import_limit_kw: float
    ) -> list[ApplyOutcome]:
        caps = None
        for attempt in range(3):  # a failed configuration read is retried
            caps = await self.caps(charger_id)
            if caps is not None or not self.central.is_connected(charger_id):
                break
            await asyncio.sleep(2.0 * (attempt + 1))
        if caps is None:
            detail = "configuration not read"
            return [
                ApplyOutcome(charger_id, 0, t, "error", detail=detail)
                for t in ("max", "tx_default")
            ]
        fs = failsafe_limits_kw(
            self.station.chargers, grid_import_limit_kw, self.station.site.base_load_kw
        )[charger_id]
        now = self.clock.now()
        out = []
        for target, kw, payload in zip(
            ("max", "tx_default"),
            (fs.max_kw, fs.connector_kw),
            failsafe_profiles(caps, fs, now),
            strict=True,
        ):
            kw_q = caps.quantise_kw(kw)
            prev = cr.active_profile(self.store, charger_id, 0, target)
            if prev is not None and abs(prev.schedule["limits_kw"][0] - kw_q) < 1e-6:
                out.append(ApplyOutcome(charger_id, 0, target, "deadband", kw_q))
                continue
            status, detail = await self._send(charger_id, payload)
            if status == "accepted":
                sched = KwSchedule((now,), (kw_q,), now + timedelta(days=3650))
                cr.save_active_profile(
                    self.store,
                    cr.ActiveProfile(charger_id, 0, target, None, sched.to_json(), payload, now),
                )
            out.append(ApplyOutcome(charger_id, 0, target, status, kw_q, None, payload, detail))
        return out


def _still_open(store: Store, transaction_id: int) -> bool:
    """Whether the stored transaction is still open (no Stop/Ended received yet)."""
    tx = records.get_transaction(store, transaction_id)
    return tx is not None and tx.get("state") == "open"


def _lease_end(schedule: dict[str, Any]) -> datetime | None:
    text = schedule.get("lease_end")
    return datetime.fromisoformat(text) if text else None
