"""Operator actions of the console and API, each also a CLI command today.

Each checks its JSON body (an :class:`ApiError` names the bad field), calls the same
library function as the CLI command (``megastation limit`` -> ``control_records.
set_grid_limit``, ``policy`` -> ``set_policy``, ``session`` -> ``store.control.set_session_override``,
``chargers accept`` -> ``records.accept_charger``, ``command send`` ->
``commands.check_command`` + ``enqueue_command``) and records who did it in the audit
log (``web_audit``). Changes that steer the plan are announced to the controller in
this process (:class:`megastation.core.events.OperatorChanged`), so the next plan follows
at once rather than at the next interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from megastation.core import events
from megastation.core.clock import parse_local_time
from megastation.core.config import Station
from megastation.store import Store, commands, records
from megastation.store import control as cr
from megastation.store import web as wr
from megastation.web.auth import Principal
from ocpp_central.protocol import payload_problem


class ApiError(Exception):
    """A request the API refuses: HTTP ``status``, the ``field`` at fault, a message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "message": self.message}}


def bad(field: str, message: str) -> ApiError:
    return ApiError(422, message, field)


def parse_time(value: Any, station: Station, field: str) -> datetime | None:
    """ISO date or date-time; no zone = station local time (as the CLI's ``parse_when``)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad(field, f"must be an ISO date or time string, got {value!r}")
    try:
        return parse_local_time(value, station.site.tz)
    except ValueError:
        raise bad(field, f"not an ISO date or time: {value!r}") from None


def _number(body: dict[str, Any], field: str, *, required: bool = False) -> float | None:
    value = body.get(field)
    if value is None:
        if required:
            raise bad(field, "required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(field, f"must be a finite number, got {value!r}")
    return float(value)


def _bool(body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise bad(field, f"must be true or false, got {value!r}")
    return value


def _known_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise bad(key, f"unknown field; expected one of {', '.join(allowed)}")


class Actions:
    """The operator actions on one station's store, recorded with who did them."""

    def __init__(
        self,
        station: Station,
        store: Store,
        notify: Callable[[events.Event], Any] | None = None,
    ) -> None:
        self.station = station  # the station config (limits, charger ids)
        self.store = store  # where actions land and are audited
        self.notify = notify  # the controller's event sink in this process, or None

    def _audit(
        self, who: Principal, action: str, params: dict[str, Any], outcome: str, detail=None
    ):
        wr.record_action(
            self.store, user_name=who.name, via=who.via, action=action, params=params,
            outcome=outcome, detail=detail,
        )  # fmt: skip

    def _announce(self, what: str) -> None:
        if self.notify is not None:
            self.notify(events.OperatorChanged("", self.store.now(), what))

    # ----------------------------------------------------------------- plan inputs

    def grid_limit(self, who: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """``{"grid_kw": 250, "until": "2026-06-15T18:00", "force": false}`` or ``{"clear": true}``."""
        _known_fields(body, ("grid_kw", "until", "force", "clear"))
        site = self.station.site
        if _bool(body, "clear"):
            cr.set_grid_limit(self.store, None)
            self._audit(who, "grid_limit", body, "ok")
            self._announce("grid_limit")
            return {"grid_limit_kw": site.grid_import_limit_kw, "source": "config", "until": None}
        kw = _number(body, "grid_kw", required=True)
        until = parse_time(body.get("until"), self.station, "until")
        try:
            cr.set_grid_limit(
                self.store, kw, until,
                connection_kw=site.grid_import_limit_kw, force=_bool(body, "force"),
            )  # fmt: skip
        except records.InvalidValue as e:
            raise bad(e.field, e.message) from None
        self._audit(who, "grid_limit", body, "ok")
        self._announce("grid_limit")
        return {
            "grid_limit_kw": kw,
            "source": "operator",
            "until": until.isoformat() if until else None,
        }

    def policy(self, who: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """``{"policy": "re100" | "cost"}``."""
        _known_fields(body, ("policy",))
        policy = body.get("policy")
        if policy not in cr.POLICIES:
            raise bad("policy", f"must be one of {', '.join(cr.POLICIES)}, got {policy!r}")
        cr.set_policy(self.store, policy)
        self._audit(who, "policy", body, "ok")
        self._announce("policy")
        return {"policy": policy}

    def session_needs(self, who: Principal, session: int, body: dict[str, Any]) -> dict[str, Any]:
        """``{"departure": ISO, "energy_kwh": 30}`` (either or both) for a session."""
        _known_fields(body, ("departure", "energy_kwh"))
        if body.get("departure") is None and body.get("energy_kwh") is None:
            raise bad("departure", "give departure and/or energy_kwh")
        energy = _number(body, "energy_kwh")
        dep = parse_time(body.get("departure"), self.station, "departure")
        if records.get_transaction(self.store, session) is None:
            raise ApiError(404, f"no session {session}", "session")
        try:
            cr.set_session_override(self.store, session, departure=dep, energy_kwh=energy)
        except records.InvalidValue as e:
            raise bad(e.field, e.message) from None
        self._audit(who, "session", {"session": session, **body}, "ok")
        self._announce("session")
        return {
            "session": session,
            "departure": dep.isoformat() if dep else None,
            "energy_kwh": energy,
        }

    # ----------------------------------------------------------------- chargers

    def _charger(self, charger_id: str) -> dict[str, Any]:
        records.sync_station_chargers(self.store, self.station)
        row = records.get_charger(self.store, charger_id)
        if row is None:
            raise ApiError(404, f"no charger {charger_id!r}", "charger_id")
        return row

    def accept(self, who: Principal, charger_id: str) -> dict[str, Any]:
        self._charger(charger_id)
        records.accept_charger(self.store, charger_id)
        self._audit(who, "accept_charger", {"charger_id": charger_id}, "ok")
        return {"charger_id": charger_id, "registration": "Accepted"}

    def _command(
        self, who: Principal, name: str, charger_id: str, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:

        try:
            commands.check_command(
                self.store, charger_id, action, payload, payload_problem=payload_problem
            )
        except commands.CommandError as e:
            self._audit(who, name, {"charger_id": charger_id, **payload}, "refused", e.message)
            raise bad(e.argument.lower() if e.argument else "payload", e.message) from None
        cid = commands.enqueue_command(self.store, charger_id, action, payload)
        self._audit(who, name, {"charger_id": charger_id, **payload}, "queued", f"command {cid}")
        return {"command_id": cid, "charger_id": charger_id, "action": action, "status": "pending"}

    def reset(self, who: Principal, charger_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``{"type": "Soft" | "Hard"}``; for 2.0.1 chargers Soft is OnIdle, Hard Immediate."""
        _known_fields(body, ("type",))
        row = self._charger(charger_id)
        kind = body.get("type", "Soft")
        if kind not in ("Soft", "Hard"):
            raise bad("type", f"must be Soft or Hard, got {kind!r}")
        configured = self.station.charger(charger_id)  # None for an auto-registered one
        version = row.get("ocpp_version") or (configured.ocpp_version if configured else "1.6")
        if version == "2.0.1":
            payload = {"type": "OnIdle" if kind == "Soft" else "Immediate"}
        else:
            payload = {"type": kind}
        return self._command(who, "reset", charger_id, "Reset", payload)

    def remote_stop(self, who: Principal, session: int) -> dict[str, Any]:
        """Ask the charger of an open session to stop it (RemoteStop/RequestStopTransaction)."""
        tx = records.get_transaction(self.store, session)
        if tx is None:
            raise ApiError(404, f"no session {session}", "session")
        if tx.get("state") != "open":
            raise ApiError(409, f"session {session} has already ended", "session")
        if tx["ocpp_version"] == "2.0.1":
            action, payload = "RequestStopTransaction", {"transaction_id": tx["ocpp_tx_id"]}
        else:
            action, payload = "RemoteStopTransaction", {"transaction_id": int(tx["ocpp_tx_id"])}
        return self._command(who, "remote_stop", tx["charger_id"], action, payload)
