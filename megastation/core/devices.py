"""Site devices the control loop reads and steers: battery, site meter, PV meter.

Each device is a small :class:`typing.Protocol` with async methods (a Modbus/SunSpec
driver does I/O); the loop in :mod:`megastation.control.controller` talks only to these
protocols, so a real device is added by writing one class, never by touching the loop.

Sign conventions (fixed everywhere in megastation):

- battery ``power_kw`` > 0 discharges (power flows *into* the site), < 0 charges;
- grid ``import_kw`` and ``export_kw`` are both >= 0; ``net_import_kw = import - export``;
- PV ``power_kw`` >= 0 is AC power fed into the site.

The simulated implementations here are the defaults: a battery that integrates its
state of charge on the injected clock, and meters computed from the known flows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from megastation.core.clock import Clock
from megastation.core.config import BatteryConfig


@dataclass(frozen=True)
class BatteryReading:
    """One reading of the battery."""

    soc_frac: float  # state of charge, 0..1 of capacity
    power_kw: float  # > 0 discharging into the site, < 0 charging
    time: datetime  # UTC
    fault: str | None = None  # a fault text; None = healthy


@dataclass(frozen=True)
class GridReading:
    """One reading of the site's grid connection point."""

    import_kw: float  # >= 0
    export_kw: float  # >= 0
    time: datetime  # UTC

    @property
    def net_import_kw(self) -> float:
        return self.import_kw - self.export_kw


@runtime_checkable
class Battery(Protocol):
    """A stationary battery the loop can read and steer."""

    async def read(self) -> BatteryReading:
        """Current state of charge, power and fault state."""
        ...

    async def set_power_kw(self, power_kw: float) -> None:
        """Ask for ``power_kw`` [kW]: > 0 discharge, < 0 charge, 0 idle.

        The device clamps the request to its own limits; read back to see what it does.
        """
        ...


@runtime_checkable
class SiteMeter(Protocol):
    """The meter at the grid connection point."""

    async def read(self) -> GridReading:
        """Grid import and export [kW] now."""
        ...


@runtime_checkable
class PVMeter(Protocol):
    """The PV inverters' output."""

    async def read_pv_kw(self) -> float:
        """PV AC power [kW] now, >= 0."""
        ...


# --------------------------------------------------------------------------- simulations


class SimulatedBattery:
    """A battery that integrates its state of charge on the injected clock.

    Between calls the last accepted set point is held; energy is integrated up to
    ``clock.now()`` on every read or set. Charging stores ``power * charge_efficiency``,
    discharging takes ``power / discharge_efficiency`` from the cells. The set point is
    clamped to the power limits and to what the state of charge still allows
    (the battery goes idle at ``soc_min_frac`` / ``soc_max_frac``).
    """

    def __init__(self, config: BatteryConfig, clock: Clock, *, soc_frac: float | None = None):
        self.config = config  # capacity, limits and efficiencies
        self.clock = clock  # the time SoC is integrated on
        self.soc_frac = config.initial_soc_frac if soc_frac is None else soc_frac
        self.setpoint_kw = 0.0  # last requested power (> 0 discharge)
        self.fault: str | None = None  # set by tests / drivers to simulate a fault
        self._t = clock.now()

    def _effective_kw(self) -> float:
        c = self.config
        if self.fault:
            return 0.0
        p = min(max(self.setpoint_kw, -c.max_charge_kw), c.max_discharge_kw)
        if p > 0 and self.soc_frac <= c.soc_min_frac + 1e-9:
            return 0.0
        if p < 0 and self.soc_frac >= c.soc_max_frac - 1e-9:
            return 0.0
        return p

    def _integrate(self) -> None:
        now = self.clock.now()
        dt_h = (now - self._t).total_seconds() / 3600.0
        self._t = now
        if dt_h <= 0:
            return
        c = self.config
        p = self._effective_kw()
        delta_kwh = -p * dt_h / c.discharge_efficiency if p > 0 else -p * dt_h * c.charge_efficiency
        soc = self.soc_frac + delta_kwh / c.capacity_kwh
        self.soc_frac = min(max(soc, c.soc_min_frac), c.soc_max_frac)

    @property
    def power_kw(self) -> float:
        """Power the battery delivers now [kW] (> 0 discharge)."""
        self._integrate()
        return self._effective_kw()

    async def read(self) -> BatteryReading:
        self._integrate()
        return BatteryReading(self.soc_frac, self._effective_kw(), self.clock.now(), self.fault)

    async def set_power_kw(self, power_kw: float) -> None:
        self._integrate()
        self.setpoint_kw = float(power_kw)


class SimulatedPVMeter:
    """PV power from a callable of time (a weather file, a clear-sky model, a test's lambda)."""

    def __init__(self, pv_kw: Callable[[datetime], float], clock: Clock) -> None:
        self.pv_kw = pv_kw  # time -> PV AC power [kW]
        self.clock = clock

    async def read_pv_kw(self) -> float:
        return max(0.0, float(self.pv_kw(self.clock.now())))


class SimulatedSiteMeter:
    """Grid import computed from the known flows: EV + base load - PV - battery.

    ``ev_kw`` returns the chargers' total power now [kW] (the controller passes the sum
    of the latest MeterValues); ``extra_kw`` lets tests add an unmetered load.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        ev_kw: Callable[[], float],
        pv: PVMeter | None = None,
        battery: Battery | None = None,
        base_load_kw: float = 0.0,
    ) -> None:
        self.clock = clock
        self.ev_kw = ev_kw  # () -> EV charging power [kW]
        self.pv = pv  # PV meter, or None for no PV
        self.battery = battery  # battery, or None
        self.base_load_kw = base_load_kw  # other site load [kW]
        self.extra_kw = 0.0  # an extra load [kW], e.g. a test's surprise

    async def read(self) -> GridReading:
        pv_kw = await self.pv.read_pv_kw() if self.pv else 0.0
        batt_kw = (await self.battery.read()).power_kw if self.battery else 0.0
        net = self.ev_kw() + self.base_load_kw + self.extra_kw - pv_kw - batt_kw
        return GridReading(max(net, 0.0), max(-net, 0.0), self.clock.now())
