"""Stage 5 of a cycle, apply: set points to the chargers (through the gateway) and the
battery, and what each charger follows afterwards.

A gateway or battery that fails is logged and recorded as an ``error`` outcome; the loop
goes on. Powers in kW (battery > 0 discharge, device convention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from megastation.control.caps import CarCaps
from megastation.core.devices import Battery
from megastation.core.gateway import ApplyOutcome, ChargerGateway, ConnectorSetpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What applying one plan did."""

    outcomes: list[ApplyOutcome]  # one or more per connector set point
    battery_kw: float  # the battery set point of the plan [kW, > 0 discharge]
    battery: tuple[str, str | None] | None  # (status, detail); None: no battery was set

    @property
    def rejected(self) -> set[str]:
        """Chargers that refused profiles (now uncontrollable)."""
        return {o.charger_id for o in self.outcomes if o.status == "uncontrollable"}


async def apply_setpoints(
    gateway: ChargerGateway, setpoints: Sequence[ConnectorSetpoint]
) -> list[ApplyOutcome]:
    """Send the set points; a gateway failure is an ``error`` outcome for each."""
    try:
        return await gateway.apply(list(setpoints))
    except Exception as exc:
        log.exception("applying set points failed")
        return [
            ApplyOutcome(s.charger_id, s.connector_id, "tx", "error", s.power_kw,
                         s.transaction_id, detail=str(exc))
            for s in setpoints
        ]  # fmt: skip


async def apply_battery(battery: Battery, kw: float) -> tuple[str, str | None]:
    """Set the battery to ``kw`` [kW, > 0 discharge]: ``('accepted', None)`` or
    ``('error', why)``."""
    try:
        await battery.set_power_kw(kw)
    except Exception as exc:
        log.warning("battery set point failed: %s", exc)
        return "error", f"{type(exc).__name__}: {exc}"
    return "accepted", None


def note_sent(
    caps: CarCaps,
    outcomes: Sequence[ApplyOutcome],
    setpoints: Sequence[ConnectorSetpoint],
    now: datetime,
) -> None:
    """What each charger follows now: an accepted schedule from ``now``; after a
    ``deadband`` outcome the older one; after any other, nothing known."""
    by_tx = {sp.transaction_id: sp for sp in setpoints}
    for o in outcomes:
        if o.transaction_id is None or o.target != "tx":
            continue
        if o.status == "accepted" and o.transaction_id in by_tx:
            caps.sent[o.transaction_id] = (now, by_tx[o.transaction_id].schedule)
        elif o.status != "deadband":
            caps.sent.pop(o.transaction_id, None)
