"""Domain events the OCPP central system publishes (no OCPP types here).

The controller subscribes through ``CentralSystem(on_event=...)`` and re-plans at once
when a car arrives, leaves, or says what it needs. Every event carries the charger id
and ``ts``, the time it happened (tz-aware UTC; the charger's timestamp when it gave one).
Connector ids are 1.6 ``connectorId`` or 2.0.1 ``evseId``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Event:
    charger_id: str
    ts: datetime


@dataclass(frozen=True)
class ChargerConnected(Event):
    ocpp_version: str  # "1.6" or "2.0.1"


@dataclass(frozen=True)
class ChargerDisconnected(Event):
    pass


@dataclass(frozen=True)
class ChargerBooted(Event):
    vendor: str
    model: str
    firmware_version: str | None
    registration: str  # Accepted | Pending | Rejected (what the charger was told)


@dataclass(frozen=True)
class ConnectorStatusChanged(Event):
    connector_id: int  # 0 = the whole charger
    status: str  # OCPP status, e.g. Available, Preparing, Charging, Occupied, Faulted
    error_code: str | None = None


@dataclass(frozen=True)
class TransactionStarted(Event):
    transaction_id: int  # internal transactions.id
    connector_id: int | None
    id_token: str | None
    meter_start_wh: float | None


@dataclass(frozen=True)
class TransactionEnded(Event):
    transaction_id: int
    connector_id: int | None
    energy_kwh: float | None
    stop_reason: str | None


@dataclass(frozen=True)
class MeterSampleReceived(Event):
    """One MeterValues / TransactionEvent sample set, already normalised."""

    connector_id: int
    transaction_id: int | None
    power_kw: float | None  # Power.Active.Import, all phases
    energy_kwh: float | None  # Energy.Active.Import.Register, the meter reading
    soc_frac: float | None  # SoC 0..1


@dataclass(frozen=True)
class ChargingNeedsReceived(Event):
    connector_id: int
    transaction_id: int | None
    requested_energy_kwh: float | None
    departure_time: datetime | None
    max_power_kw: float | None


@dataclass(frozen=True)
class OperatorChanged(Event):
    """An operator changed the grid limit, policy or a session's needs (``charger_id`` is "";
    raised by the web console in the server's process, so the next plan follows at once)."""

    what: str  # grid_limit | policy | session
