"""Stage 1 of a cycle, gather: what the loop reads before it plans.

- :class:`SiteDevices` reads the battery, PV meter and site meter; a read that fails is
  logged and gives None (a device hiccup never stops the loop).
- :func:`read_site` adds the settings in force (grid limit with the operator's
  override, policy) to one reading of the devices: :class:`SiteReadings`.
- :func:`read_sessions` reads the open transactions and what the plan needs of each
  from the store: :class:`TxReading`.

Powers in kW (battery > 0 discharge), times tz-aware UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from megastation.control.caps import CarCaps
from megastation.control.pv import PV_HISTORY
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.core.devices import Battery, BatteryReading, GridReading, PVMeter, SiteMeter
from megastation.store import Store, records
from megastation.store import control as cr

log = logging.getLogger(__name__)


class SiteDevices:
    """The site's devices as the loop sees them (each may be None: not present)."""

    def __init__(
        self,
        clock: Clock,
        *,
        battery: Battery | None,
        site_meter: SiteMeter | None,
        pv_meter: PVMeter | None,
        on_battery_fault: Callable[[], None],
    ) -> None:
        self.clock = clock
        self.battery = battery  # None: no battery or not steerable
        self.site_meter = site_meter  # None: import computed from known flows
        self.pv_meter = pv_meter  # None: PV unmeasured (forecast only)
        self.on_battery_fault = on_battery_fault  # called when a new fault appears
        self.pv_history: list[tuple[datetime, float]] = []  # measured PV for the nowcast
        self._fault: str | None = None

    async def read_battery(self) -> BatteryReading | None:
        """The battery's reading; a new fault calls ``on_battery_fault``."""
        if self.battery is None:
            return None
        try:
            r = await self.battery.read()
        except Exception as exc:
            log.warning("battery read failed: %s", exc)
            return None
        if r.fault and r.fault != self._fault:
            self.on_battery_fault()
        self._fault = r.fault
        return r

    async def read_pv_kw(self, *, remember: bool = False, quiet: bool = False) -> float | None:
        """PV now [kW]; ``remember`` keeps it (for :data:`PV_HISTORY`) for the nowcast;
        ``quiet`` logs a failed read at debug level (frequent polls: the driver logs a fault)."""
        if self.pv_meter is None:
            return None
        try:
            kw = float(await self.pv_meter.read_pv_kw())
        except Exception as exc:
            (log.debug if quiet else log.warning)("PV meter read failed: %s", exc)
            return None
        if remember:
            now = self.clock.now()
            self.pv_history.append((now, kw))
            cutoff = now - PV_HISTORY
            while self.pv_history and self.pv_history[0][0] < cutoff:
                self.pv_history.pop(0)
        return kw

    async def read_grid(self) -> GridReading | None:
        """The site meter's reading (None: no meter or it failed)."""
        if self.site_meter is None:
            return None
        try:
            return await self.site_meter.read()
        except Exception as exc:  # polled twice a second: a faulted meter's driver logs it once
            log.debug("site meter read failed: %s", exc)
            return None

    async def measured_import_kw(self) -> float | None:
        """The metered net import [kW] (None: no site meter); a failed read raises."""
        if self.site_meter is None:
            return None
        return (await self.site_meter.read()).net_import_kw


@dataclass(frozen=True)
class SiteReadings:
    """One reading of the site and of the settings in force."""

    battery: BatteryReading | None
    pv_kw: float | None  # PV meter now [kW]
    grid: GridReading | None  # site meter
    limit_kw: float  # grid import limit in force [kW]
    limit_source: str  # 'operator' | 'config'
    policy: str  # re100 | cost


async def read_site(
    devices: SiteDevices, store: Store, station: Station, now: datetime
) -> SiteReadings:
    """Battery, PV (kept for the nowcast), site meter, then the grid limit and policy in force."""
    battery = await devices.read_battery()
    pv_kw = await devices.read_pv_kw(remember=True)
    grid = await devices.read_grid()
    limit_kw, source = cr.grid_limit_kw(store, station.site.grid_import_limit_kw, now)
    return SiteReadings(
        battery, pv_kw, grid, limit_kw, source, cr.policy(store, station.site.policy)
    )


@dataclass(frozen=True)
class TxReading:
    """An open transaction with what the plan needs of it from the store."""

    tx: records.OpenTransaction
    needs: records.ChargingNeeds | None  # the latest ChargingNeeds (2.0.1), if any
    first_soc_frac: float | None  # the first SoC it reported (capacity estimate)
    sample_at: datetime | None  # its latest power sample (read when a limit was sent)
    ocpp_tx_id: str  # the charger's transaction id


def read_sessions(store: Store, caps: CarCaps) -> tuple[dict[str, str], list[TxReading]]:
    """The chargers that take no profiles (id -> why) and the open transactions on a
    connector, oldest first."""
    uncontrollable = cr.uncontrollable_chargers(store)
    out = []
    open_txs = records.open_transactions(store)
    ocpp_ids = cr.open_ocpp_tx_ids(store) if open_txs else {}
    for t in open_txs:
        if not t.connector_id:
            continue
        out.append(
            TxReading(
                tx=t,
                needs=records.charging_needs_of(
                    store, t.transaction_id, t.charger_id, t.connector_id, t.start_time
                ),
                first_soc_frac=records.first_soc_frac(store, t.transaction_id)
                if t.soc_frac is not None
                else None,
                sample_at=records.latest_sample_at(store, t.transaction_id)
                if t.transaction_id in caps.sent
                else None,
                ocpp_tx_id=str(ocpp_ids[t.transaction_id])
                if t.transaction_id in ocpp_ids
                else str(t.transaction_id),
            )
        )
    return uncontrollable, out
