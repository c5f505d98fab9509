"""How set points reach chargers: the :class:`ChargerGateway` interface the controller talks to.

OCPP is one implementation (:class:`ocpp_central.gateway.OcppGateway`); the socket-free
simulator is another (:class:`megastation.sim.gateway.DirectGateway`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from megastation.core.schedules import KwSchedule


@dataclass(frozen=True)
class ConnectorSetpoint:
    """A power limit schedule for one session's connector."""

    charger_id: str
    connector_id: int  # 1.6 connectorId / 2.0.1 evseId
    transaction_id: int  # internal transactions.id
    ocpp_tx_id: str  # the charger's transaction id (for the TxProfile)
    schedule: KwSchedule  # kW; the first period holds the first-step set point
    power_kw: float  # first-step set point [kW]
    force: bool = False  # an over-limit re-plan (the OCPP deadband still holds, #13)
    lease_end: datetime | None = None  # the schedule follows the plan until then, then fail-safe


@dataclass(frozen=True)
class ApplyOutcome:
    """What became of one profile."""

    charger_id: str
    connector_id: int
    target: str  # tx | max | tx_default
    status: str  # accepted | rejected | timeout | offline | error | deadband | uncontrollable
    power_kw: float | None = None
    transaction_id: int | None = None
    payload: dict[str, Any] | None = None
    detail: str | None = None


@runtime_checkable
class ChargerGateway(Protocol):
    """How set points reach chargers."""

    async def apply(self, setpoints: Sequence[ConnectorSetpoint]) -> list[ApplyOutcome]:
        """Send each session's schedule; one outcome per set point."""
        ...

    async def install_failsafe(
        self, charger_id: str, *, grid_import_limit_kw: float
    ) -> list[ApplyOutcome]:
        """Install the station maximum and TxDefault profiles on a charger."""
        ...
