"""Minimal ``ocpp``-library charge points that obey the profiles they are sent.

Each keeps its accepted profiles in a :class:`megastation.sim.composite.ProfileSet`
(composite of max, TxDefault and Tx profiles) and draws, per connector with a car,
``min(composite limit, what the car still wants at its max power)``. The test drives
time: :meth:`ObeyingCP.step` integrates energy and reports MeterValues.

Installing and clearing follow OCPP 1.6 §3.13 as the ProfileSet does: a profile with
the id of an installed one, or the same connector, stackLevel and purpose, replaces it
(so one TxProfile id for two connectors would leave only the last); ClearChargingProfile
removes what it names and answers Unknown when nothing matched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as res16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as res201

from megastation.core.config import Charger
from megastation.sim.composite import Electrical, ProfileSet


def t_ocpp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Car:
    energy_wanted_kwh: float
    max_kw: float
    tx_id: str = ""  # the charger's transaction id
    started: datetime | None = None
    energy_kwh: float = 0.0
    power_kw: float = 0.0


class _Obeying:
    """Shared logic of the 1.6 and 2.0.1 charge points."""

    charger: Charger
    reject_profiles: bool
    profiles: ProfileSet
    cars: dict[int, Car]
    clock: Any
    received: list[dict[str, Any]]

    def _setup(self, charger: Charger, clock: Any, reject_profiles: bool) -> None:
        self.charger = charger
        self.clock = clock
        self.reject_profiles = reject_profiles
        self.profiles = ProfileSet(
            Electrical(charger.connector_power_kw, charger.phases, charger.voltage_v),
            charger_max_kw=charger.max_power_kw,
        )
        self.cars = {}
        self.received = []

    def _install(self, connector_id: int, profile: dict[str, Any]) -> str:
        self.received.append({"connector_id": connector_id, **profile})
        purpose = profile.get("charging_profile_purpose")
        if self.reject_profiles and purpose == "TxProfile":
            return "Rejected"
        car = self.cars.get(connector_id)
        return self.profiles.install(
            connector_id, profile, self.clock.now(), transaction_id=car.tx_id if car else None
        )

    def limit_kw(self, connector_id: int, now: datetime) -> float:
        car = self.cars.get(connector_id)
        if self.reject_profiles and car is not None:
            return self.charger.connector_power_kw  # ignores everything: full power
        return self.profiles.limit_kw(
            connector_id,
            now,
            transaction_id=car.tx_id if car else None,
            transaction_start=car.started if car else None,
        )

    def update_power(self, now: datetime) -> float:
        """Set each car's power from the limit in force; return the charger's total [kW]."""
        total = 0.0
        for k, car in self.cars.items():
            want = car.max_kw if car.energy_kwh < car.energy_wanted_kwh - 1e-6 else 0.0
            car.power_kw = max(0.0, min(want, self.limit_kw(k, now)))
            total += car.power_kw
        # the station maximum caps the whole charger
        return total

    def integrate(self, dt_s: float) -> None:
        for car in self.cars.values():
            car.energy_kwh += car.power_kw * dt_s / 3600.0

    @property
    def power_kw(self) -> float:
        return sum(c.power_kw for c in self.cars.values())


class ObeyingCP16(_Obeying, CP16):
    def __init__(self, charger_id, connection, *, charger, clock, reject_profiles=False, **kw):
        super().__init__(charger_id, connection, **kw)
        self._setup(charger, clock, reject_profiles)

    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id, cs_charging_profiles, **kw):
        return res16.SetChargingProfile(status=self._install(connector_id, cs_charging_profiles))

    @on("GetConfiguration")
    def on_get_configuration(self, key=None, **kw):
        values = {
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargingScheduleMaxPeriods": "24",
            "ChargeProfileMaxStackLevel": "8",
            "SupportedFeatureProfiles": "Core,SmartCharging",
        }
        return res16.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": True, "value": v}
                for k, v in values.items()
                if not key or k in key
            ]
        )

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kw):
        found = self.profiles.clear(
            profile_id=kw.get("id"),
            connector_id=kw.get("connector_id"),
            purpose=kw.get("charging_profile_purpose"),
            stack_level=kw.get("stack_level"),
        )
        return res16.ClearChargingProfile(status="Accepted" if found else "Unknown")

    async def boot(self) -> None:
        await self.call(
            call16.BootNotification(charge_point_vendor="test", charge_point_model="obey"),
            suppress=False,
        )
        for k in self.charger.connector_ids:
            await self.call(
                call16.StatusNotification(connector_id=k, error_code="NoError", status="Available")
            )

    async def plug(self, connector_id: int, car: Car) -> int:
        now = self.clock.now()
        res = await self.call(
            call16.StartTransaction(
                connector_id=connector_id, id_tag="TAG", meter_start=0, timestamp=t_ocpp(now)
            ),
            suppress=False,
        )
        car.tx_id, car.started = str(res.transaction_id), now
        self.cars[connector_id] = car
        return res.transaction_id

    async def unplug(self, connector_id: int) -> None:
        car = self.cars.pop(connector_id)
        self.profiles.end_transaction(connector_id)
        await self.call(
            call16.StopTransaction(
                meter_stop=int(car.energy_kwh * 1000),
                timestamp=t_ocpp(self.clock.now()),
                transaction_id=int(car.tx_id),
            )
        )

    async def report(self) -> None:
        ts = t_ocpp(self.clock.now())
        for k, car in self.cars.items():
            await self.call(
                call16.MeterValues(
                    connector_id=k,
                    transaction_id=int(car.tx_id),
                    meter_value=[
                        {
                            "timestamp": ts,
                            "sampled_value": [
                                {"value": f"{car.energy_kwh * 1000:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                                {"value": f"{car.power_kw * 1000:.1f}", "measurand": "Power.Active.Import", "unit": "W"},
                            ],
                        }
                    ],
                )
            )  # fmt: skip


class ObeyingCP201(_Obeying, CP201):
    def __init__(self, charger_id, connection, *, charger, clock, reject_profiles=False, **kw):
        super().__init__(charger_id, connection, **kw)
        self._setup(charger, clock, reject_profiles)
        self._seq = 0

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id, charging_profile, **kw):
        return res201.SetChargingProfile(status=self._install(evse_id, charging_profile))

    @on("GetVariables")
    def on_get_variables(self, get_variable_data, **kw):
        values = {
            "RateUnit": "A,W",
            "PeriodsPerSchedule": "24",
            "ProfileStackLevel": "8",
            "Enabled": "true",
        }
        return res201.GetVariables(
            get_variable_result=[
                {
                    "attribute_status": "Accepted" if d["variable"]["name"] in values else "UnknownVariable",
                    "attribute_value": values.get(d["variable"]["name"]),
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in get_variable_data
            ]
        )  # fmt: skip

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **kw):
        crit = kw.get("charging_profile_criteria") or {}
        found = self.profiles.clear(
            profile_id=kw.get("charging_profile_id"),
            connector_id=crit.get("evse_id"),
            purpose=crit.get("charging_profile_purpose"),
            stack_level=crit.get("stack_level"),
        )
        return res201.ClearChargingProfile(status="Accepted" if found else "Unknown")

    def _seq_no(self) -> int:
        self._seq += 1
        return self._seq

    async def boot(self) -> None:
        await self.call(
            call201.BootNotification(
                charging_station={"model": "obey", "vendor_name": "test"}, reason="PowerUp"
            ),
            suppress=False,
        )
        for k in self.charger.connector_ids:
            await self.call(
                call201.StatusNotification(
                    timestamp=t_ocpp(self.clock.now()),
                    connector_status="Available",
                    evse_id=k,
                    connector_id=1,
                )
            )

    def _meter(self, car: Car) -> list[dict[str, Any]]:
        return [
            {
                "timestamp": t_ocpp(self.clock.now()),
                "sampled_value": [
                    {"value": round(car.energy_kwh * 1000, 1), "measurand": "Energy.Active.Import.Register", "unit_of_measure": {"unit": "Wh"}},
                    {"value": round(car.power_kw * 1000, 1), "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}},
                ],
            }
        ]  # fmt: skip

    async def plug(
        self, connector_id: int, car: Car, *, needs: tuple[datetime, float] | None = None
    ) -> str:
        now = self.clock.now()
        car.tx_id, car.started = uuid.uuid4().hex[:16], now
        self.cars[connector_id] = car
        await self.call(
            call201.TransactionEvent(
                event_type="Started",
                timestamp=t_ocpp(now),
                trigger_reason="CablePluggedIn",
                seq_no=self._seq_no(),
                transaction_info={"transaction_id": car.tx_id, "charging_state": "Charging"},
                evse={"id": connector_id, "connector_id": 1},
                id_token={"id_token": "TAG", "type": "ISO14443"},
                meter_value=self._meter(car),
            ),
            suppress=False,
        )
        if needs is not None:
            await self.call(
                call201.NotifyEVChargingNeeds(
                    evse_id=connector_id,
                    charging_needs={
                        "requested_energy_transfer": "DC" if self.charger.kind == "DC" else "AC_single_phase",
                        "departure_time": t_ocpp(needs[0]),
                        "dc_charging_parameters" if self.charger.kind == "DC" else "ac_charging_parameters": (
                            {"ev_max_current": 400, "ev_max_voltage": 800, "energy_amount": int(needs[1] * 1000)}
                            if self.charger.kind == "DC"
                            else {"energy_amount": int(needs[1] * 1000), "ev_min_current": 6, "ev_max_current": 32, "ev_max_voltage": 230}
                        ),
                    },
                ),
                suppress=False,
            )  # fmt: skip
        return car.tx_id

    async def unplug(self, connector_id: int) -> None:
        car = self.cars.pop(connector_id)
        self.profiles.end_transaction(connector_id)
        await self.call(
            call201.TransactionEvent(
                event_type="Ended",
                timestamp=t_ocpp(self.clock.now()),
                trigger_reason="EVDeparted",
                seq_no=self._seq_no(),
                transaction_info={"transaction_id": car.tx_id, "stopped_reason": "EVDisconnected"},
                meter_value=self._meter(car),
            )
        )

    async def report(self) -> None:
        for k, car in self.cars.items():
            await self.call(
                call201.TransactionEvent(
                    event_type="Updated",
                    timestamp=t_ocpp(self.clock.now()),
                    trigger_reason="MeterValuePeriodic",
                    seq_no=self._seq_no(),
                    transaction_info={"transaction_id": car.tx_id},
                    evse={"id": k, "connector_id": 1},
                    meter_value=self._meter(car),
                )
            )


def cp_class(version: str) -> type:
    return ObeyingCP16 if version == "1.6" else ObeyingCP201
