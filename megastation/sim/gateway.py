"""Set points for the socket-free simulator: :class:`DirectGateway`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.core.gateway import ApplyOutcome, ConnectorSetpoint
from megastation.core.schedules import FailSafe, KwSchedule, failsafe_limits_kw
from megastation.store import Store


class DirectGateway:
    """Set points for the socket-free simulator: kept in memory, read by simulated chargers.

    ``limit_kw(charger, connector, t)`` is the composite limit a charger would follow:
    the TxProfile (while its transaction is the one given) else the TxDefault, capped
    by the station maximum.
    """

    def __init__(self, station: Station, store: Store, clock: Clock) -> None:
        self.station = station
        self.store = store
        self.clock = clock
        self.tx: dict[tuple[str, int], tuple[int, KwSchedule]] = {}  # (charger, connector) -> tx
        self.failsafe: dict[str, FailSafe] = {}
        self.sent = 0  # profiles "sent"
        # each charger's connector rating [kW] (Station.charger: the first of an id)
        self._connector_kw: dict[str, float] = {}
        for c in station.chargers:
            self._connector_kw.setdefault(c.id, c.connector_power_kw)

    async def apply(self, setpoints: Sequence[ConnectorSetpoint]) -> list[ApplyOutcome]:
        out = []
        for sp in setpoints:
            self.tx[(sp.charger_id, sp.connector_id)] = (sp.transaction_id, sp.schedule)
            self.sent += 1
            out.append(
                ApplyOutcome(
                    sp.charger_id, sp.connector_id, "tx", "accepted", sp.power_kw, sp.transaction_id
                )
            )
        return out

    async def install_failsafe(
        self, charger_id: str, *, grid_import_limit_kw: float
    ) -> list[ApplyOutcome]:
        limits = failsafe_limits_kw(
            self.station.chargers, grid_import_limit_kw, self.station.site.base_load_kw
        )
        self.failsafe[charger_id] = limits[charger_id]
        return [
            ApplyOutcome(charger_id, 0, "max", "accepted", limits[charger_id].max_kw),
            ApplyOutcome(charger_id, 0, "tx_default", "accepted", limits[charger_id].connector_kw),
        ]

    def limit_kw(
        self, charger_id: str, connector_id: int, transaction_id: int | None, t: datetime
    ) -> float:
        limit = self._connector_kw.get(charger_id, math.inf)
        fs = self.failsafe.get(charger_id)
        if fs is not None:
            limit = min(limit, fs.max_kw)
        got = self.tx.get((charger_id, connector_id))
        value = got[1].value_at(t) if got is not None and got[0] == transaction_id else None
        if value is None and fs is not None:
            value = fs.connector_kw
        return limit if value is None else min(limit, value)
