"""OCPP 1.6 and 2.0.1 message handlers: frames in, domain calls and events out.

Each ``@on`` method takes the payload as snake_case keyword arguments and returns the
snake_case response payload. Persistence lives in :mod:`megastation.store.records`; no SQL
here, and no calls back to the charger (they would deadlock the connection: see
:meth:`ocpp_central.server.CentralSystem.call`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import on
from ocpp.v16.enums import Action as A16
from ocpp.v201.enums import Action as A201

from megastation.core import events
from megastation.store import parse_iso, records
from ocpp_central import protocol

if TYPE_CHECKING:
    from ocpp_central.server import ChargerSession

log = logging.getLogger("megastation.ocpp")


def _ocpp_time(session: ChargerSession) -> str:
    return session.system.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _sample_event(
    session: ChargerSession,
    connector_id: int,
    transaction_id: int | None,
    samples: list[records.Sample],
) -> events.MeterSampleReceived | None:
    """Summarise the newest sample set: total power, energy register, SoC."""
    if not samples:
        return None
    last_ts = max(s.ts for s in samples)
    power = energy = soc = None
    phase_power = 0.0
    have_phase_power = False
    for s in samples:
        if s.ts != last_ts:
            continue
        if s.measurand == records.SOC:  # the car's SoC: sampled at location EV (or none)
            soc = s.value / 100.0
            continue
        if s.location not in ("", "Outlet"):
            continue
        if s.measurand == records.POWER_IMPORT and s.unit == "kW":
            if s.phase:
                phase_power += s.value
                have_phase_power = True
            else:
                power = s.value
        elif s.measurand == records.ENERGY_REGISTER and s.unit == "kWh" and not s.phase:
            energy = s.value
    if power is None and have_phase_power:
        power = phase_power
    return events.MeterSampleReceived(
        session.charger_id, last_ts, connector_id, transaction_id, power, energy, soc
    )


class _Base:
    def __init__(self, session: ChargerSession) -> None:
        self.session = session
        self.charger_id = session.charger_id
        self.store = session.system.store
        self.station = session.system.station
        self.emit = session.system.emit

    def now(self):
        return self.session.system.clock.now()

    def _boot(
        self,
        vendor: str,
        model: str,
        serial: str | None,
        firmware: str | None,
        reason: str | None,
        payload: dict[str, Any],
    ) -> dict[str, Any]:
        ts = self.now()
        registration = records.record_boot(
            self.store,
            self.charger_id,
            ocpp_version=self.session.version,
            vendor=vendor,
            model=model,
            serial_number=serial,
            firmware_version=firmware,
            reason=reason,
            payload=payload,
            ts=ts,
        )
        self.emit(events.ChargerBooted(self.charger_id, ts, vendor, model, firmware, registration))
        self.session.registration = registration
        interval = self.station.server.heartbeat_interval_s
        return {
            "current_time": _ocpp_time(self.session),
            "interval": interval,
            "status": registration,
        }

    def _status(
        self,
        connector_id: int,
        status: str,
        ts_text: str | None,
        error_code: str | None,
        info: str | None = None,
    ) -> None:
        ts = records.parse_time(ts_text) or self.now()
        if records.record_status(
            self.store, self.charger_id, connector_id, status, ts, error_code=error_code, info=info
        ):
            self.emit(
                events.ConnectorStatusChanged(self.charger_id, ts, connector_id, status, error_code)
            )

    def _meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None
    ) -> None:
        samples = records.normalise_meter_values(meter_value, self.charger_id)
        if (
            records.record_meter_values(
                self.store, self.charger_id, connector_id, samples, transaction_id=transaction_id
            )
            and self.session.system.on_event
        ):
            ev = _sample_event(self.session, connector_id, transaction_id, samples)
            if ev:
                self.emit(ev)

    def _data_transfer(self, vendor_id: str, message_id: str | None, data: Any) -> dict[str, Any]:
        """Hand vendor data to the station's handler for that vendor, if any."""
        handler = self.session.system.data_transfer.get(vendor_id)
        if handler is None:
            log.info("%s: DataTransfer from unknown vendor %s", self.charger_id, vendor_id)
            return {"status": "UnknownVendorId"}
        status, out = handler(self.charger_id, message_id, data)
        return {"status": status, "data": out}

    def _authorize(self, id_token: str | None) -> records.Authorization:
        return records.authorize(self.store, id_token, free_vend=self.station.site.free_vend)


class Handlers16(_Base):
    """OCPP 1.6 charge point -> central system messages."""

    @on(A16.boot_notification)
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kw: Any
    ) -> dict[str, Any]:
        return self._boot(
            charge_point_vendor,
            charge_point_model,
            kw.get("charge_point_serial_number") or kw.get("charge_box_serial_number"),
            kw.get("firmware_version"),
            None,
            kw,
        )

    @on(A16.heartbeat)
    def on_heartbeat(self, **kw: Any) -> dict[str, Any]:
        records.touch_charger(self.store, self.charger_id, self.now())
        return {"current_time": _ocpp_time(self.session)}

    @on(A16.status_notification)
    def on_status_notification(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        timestamp: str | None = None,
        info: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        self._status(
            connector_id, status, timestamp, None if error_code == "NoError" else error_code, info
        )
        return {}

    def _id_tag_info(self, auth: records.Authorization) -> dict[str, Any]:
        info: dict[str, Any] = {"status": auth.status}
        if auth.expiry:
            info["expiry_date"] = auth.expiry.isoformat()
        if auth.parent_id_token:
            info["parent_id_tag"] = auth.parent_id_token
        return info

    @on(A16.authorize)
    def on_authorize(self, id_tag: str, **kw: Any) -> dict[str, Any]:
        return {"id_tag_info": self._id_tag_info(self._authorize(id_tag))}

    @on(A16.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kw: Any
    ) -> dict[str, Any]:
        ts = records.required_time(timestamp)
        meter_start_wh = records.checked(meter_start, "meterStart")
        auth = self._authorize(id_tag)
        res = records.start_transaction(
            self.store,
            self.charger_id,
            connector_id=connector_id,
            id_token=id_tag,
            auth_status=auth.status,
            meter_start_wh=meter_start_wh,
            ts=ts,
        )
        if res.created:
            self.emit(
                events.TransactionStarted(
                    self.charger_id,
                    ts,
                    res.transaction_id,
                    connector_id,
                    id_tag,
                    meter_start_wh,
                )
            )
        return {"transaction_id": res.transaction_id, "id_tag_info": self._id_tag_info(auth)}

    @on(A16.stop_transaction)
    def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        ts = records.required_time(timestamp)
        meter_stop_wh = records.checked(meter_stop, "meterStop")
        samples = records.normalise_meter_values(transaction_data or [], self.charger_id)
        res = records.stop_transaction(
            self.store,
            self.charger_id,
            transaction_id,
            meter_stop_wh=meter_stop_wh,
            ts=ts,
            reason=reason,
            id_token=id_tag,
            samples=samples,
        )
        if res is None:
            log.warning(
                "%s: StopTransaction for unknown transaction %s", self.charger_id, transaction_id
            )
        elif res.changed:
            tx = records.get_transaction(self.store, transaction_id)
            self.emit(
                events.TransactionEnded(
                    self.charger_id,
                    ts,
                    transaction_id,
                    tx["connector_id"],
                    tx["energy_kwh"],
                    tx["stop_reason"],
                )
            )
        if id_tag:
            return {"id_tag_info": self._id_tag_info(self._authorize(id_tag))}
        return {}

    @on(A16.meter_values)
    def on_meter_values(
        self,
        connector_id: int,
        meter_value: list[dict[str, Any]],
        transaction_id: int | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        tx_id = None
        if (
            transaction_id is not None
            and records.transaction_charger(self.store, transaction_id) == self.charger_id
        ):
            tx_id = transaction_id
        self._meter_values(connector_id, meter_value, tx_id)
        return {}

    @on(A16.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> dict[str, Any]:
        return self._data_transfer(vendor_id, kw.get("message_id"), kw.get("data"))

    @on(A16.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, status: str, **kw: Any) -> dict[str, Any]:
        log.info("%s: diagnostics %s", self.charger_id, status)
        return {}

    @on(A16.firmware_status_notification)
    def on_firmware_status_notification(self, status: str, **kw: Any) -> dict[str, Any]:
        log.info("%s: firmware %s", self.charger_id, status)
        return {}


class Handlers201(_Base):
    """OCPP 2.0.1 charging station -> CSMS messages."""

    @on(A201.boot_notification)
    def on_boot_notification(
        self, charging_station: dict[str, Any], reason: str, **kw: Any
    ) -> dict[str, Any]:
        cs = charging_station
        return self._boot(
            cs.get("vendor_name", ""),
            cs.get("model", ""),
            cs.get("serial_number"),
            cs.get("firmware_version"),
            reason,
            {"charging_station": cs, "reason": reason},
        )

    @on(A201.heartbeat)
    def on_heartbeat(self, **kw: Any) -> dict[str, Any]:
        records.touch_charger(self.store, self.charger_id, self.now())
        return {"current_time": _ocpp_time(self.session)}

    @on(A201.status_notification)
    def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **kw: Any
    ) -> dict[str, Any]:
        self._status(evse_id, connector_status, timestamp, None)
        return {}

    def _id_token_info(self, auth: records.Authorization) -> dict[str, Any]:
        info: dict[str, Any] = {"status": auth.status}
        if auth.expiry:
            info["cache_expiry_date_time"] = auth.expiry.isoformat()
        return info

    @on(A201.authorize)
    def on_authorize(self, id_token: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {"id_token_info": self._id_token_info(self._authorize(id_token.get("id_token")))}

    @on(A201.transaction_event)
    def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        offline: bool = False,
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
        meter_value: list[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        ts = records.required_time(timestamp)
        token = id_token.get("id_token") if id_token else None
        auth = self._authorize(token) if id_token else None
        samples = records.normalise_meter_values(meter_value or [], self.charger_id)
        connector_id = evse.get("id") if evse else None
        res = records.transaction_event(
            self.store,
            self.charger_id,
            event_type=event_type,
            ocpp_tx_id=transaction_info["transaction_id"],
            seq_no=seq_no,
            ts=ts,
            trigger_reason=trigger_reason,
            offline=offline,
            connector_id=connector_id,
            id_token=token,
            auth_status=auth.status if auth else None,
            stopped_reason=transaction_info.get("stopped_reason"),
            samples=samples,
        )
        if res.changed:
            tx = records.get_transaction(self.store, res.transaction_id)
            if res.created:
                self.emit(
                    events.TransactionStarted(
                        self.charger_id,
                        parse(tx["start_time"]),
                        res.transaction_id,
                        tx["connector_id"],
                        tx["id_token"],
                        tx["meter_start_wh"],
                    )
                )
            if samples:
                ev = _sample_event(
                    self.session, tx["connector_id"] or 0, res.transaction_id, samples
                )
                if ev:
                    self.emit(ev)
            if event_type == "Ended":
                self.emit(
                    events.TransactionEnded(
                        self.charger_id,
                        ts,
                        res.transaction_id,
                        tx["connector_id"],
                        tx["energy_kwh"],
                        tx["stop_reason"],
                    )
                )
        if auth is not None:
            return {"id_token_info": self._id_token_info(auth)}
        return {}

    @on(A201.meter_values)
    def on_meter_values(
        self, evse_id: int, meter_value: list[dict[str, Any]], **kw: Any
    ) -> dict[str, Any]:
        self._meter_values(evse_id, meter_value, None)
        return {}

    @on(A201.notify_ev_charging_needs)
    def on_notify_ev_charging_needs(
        self, evse_id: int, charging_needs: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        ac = _checked_params(charging_needs.get("ac_charging_parameters"), "ac")
        dc = _checked_params(charging_needs.get("dc_charging_parameters"), "dc")
        energy_wh = ac.get("energy_amount", dc.get("energy_amount"))
        max_power_kw = None
        if dc.get("ev_max_power") is not None:
            max_power_kw = dc["ev_max_power"] / 1000.0
        elif ac:
            charger = self.station.charger(self.charger_id)
            phases = charger.phases if charger else 3
            max_power_kw = ac["ev_max_current"] * ac["ev_max_voltage"] * phases / 1000.0
        elif dc.get("ev_max_current") is not None:
            max_power_kw = dc["ev_max_current"] * dc["ev_max_voltage"] / 1000.0
        departure = records.parse_time(
            charging_needs.get("departure_time"), "chargingNeeds.departureTime"
        )
        needs = records.record_charging_needs(
            self.store,
            self.charger_id,
            evse_id,
            requested_energy_kwh=None if energy_wh is None else energy_wh / 1000.0,
            departure_time=departure,
            max_power_kw=max_power_kw,
            energy_transfer_mode=charging_needs.get("requested_energy_transfer"),
            payload=charging_needs,
        )
        self.emit(
            events.ChargingNeedsReceived(
                self.charger_id,
                needs.received_at,
                evse_id,
                needs.transaction_id,
                needs.requested_energy_kwh,
                departure,
                max_power_kw,
            )
        )
        return {"status": "Accepted"}

    @on(A201.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> dict[str, Any]:
        return self._data_transfer(vendor_id, kw.get("message_id"), kw.get("data"))

    @on(A201.notify_report)
    def on_notify_report(self, request_id: int, seq_no: int, **kw: Any) -> dict[str, Any]:
        return {}

    @on(A201.security_event_notification)
    def on_security_event_notification(
        self, type: str, timestamp: str, **kw: Any
    ) -> dict[str, Any]:
        log.warning("%s: security event %s at %s", self.charger_id, type, timestamp)
        return {}

    @on(A201.firmware_status_notification)
    def on_firmware_status_notification(self, status: str, **kw: Any) -> dict[str, Any]:
        log.info("%s: firmware %s", self.charger_id, status)
        return {}

    @on(A201.log_status_notification)
    def on_log_status_notification(self, status: str, **kw: Any) -> dict[str, Any]:
        log.info("%s: log upload %s", self.charger_id, status)
        return {}


# NotifyEVChargingNeeds numbers the plan uses: field -> largest plausible value (>= 0)
_NEEDS_RANGE = {
    "energy_amount": 1e9,  # Wh
    "ev_max_power": 1e7,  # W
    "ev_max_current": 1e4,  # A
    "ev_max_voltage": 1e5,  # V
    "ev_min_current": 1e4,  # A
    "ev_max_energy_request": 1e9,  # Wh
    "ev_min_energy_request": 1e9,  # Wh
    "ev_energy_capacity": 1e9,  # Wh
    "full_so_c": 100,  # %
    "bulk_so_c": 100,  # %
}


def _checked_params(params: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """AC/DC charging parameters with every number finite and in range (else InvalidValue)."""
    out = dict(params or {})
    for key, hi in _NEEDS_RANGE.items():
        if out.get(key) is not None:
            field = f"chargingNeeds.{kind}ChargingParameters.{protocol.camel_key(key)}"
            out[key] = records.checked(out[key], field, lo=0.0, hi=hi)
    return out


def parse(text: str):

    return parse_iso(text)
