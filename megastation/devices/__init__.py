"""Real site devices over Modbus TCP: battery, PV inverters and the grid meter.

- :mod:`megastation.devices.modbus`: the connection (timeouts, reconnects, faults) and
  pure register decoding (word/byte order, SunSpec "not implemented" values);
- :mod:`megastation.devices.sunspec`: SunSpec discovery, model chain, scale factors;
- :mod:`megastation.devices.drivers`: the drivers implementing the protocols of
  :mod:`megastation.core.devices` (``Battery``, ``PVMeter``, ``SiteMeter``);
- ``profiles/*.toml``: register maps of devices without SunSpec (data, not code).

:func:`build_devices` turns the station's ``[[devices]]`` into what the controller is
given, with simulated (or absent) stand-ins for the kinds that are not configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from megastation.core.clock import Clock
from megastation.core.config import DeviceConfig, Station
from megastation.core.devices import Battery, PVMeter, SimulatedBattery, SimulatedPVMeter, SiteMeter
from megastation.devices.drivers import (
    DeviceState,
    ModbusBattery,
    ModbusDevice,
    ModbusMeter,
    ModbusPVInverter,
    PVGroup,
)
from megastation.devices.modbus import DeviceFault


def default_max_power_kw(station: Station, kind: str) -> float:
    """Beyond this a reading of ``kind`` is garbage (unless the device sets ``max_power_kw``)."""
    b = station.battery
    if kind == "battery":
        return 1.5 * max(b.max_charge_kw, b.max_discharge_kw, 1.0) if b else 10_000.0
    if kind == "pv":
        return 1.5 * station.pv_peak_kw if station.pv_peak_kw > 0 else 10_000.0
    site = station.site
    return 3.0 * max(site.grid_import_limit_kw, site.grid_export_limit_kw, station.pv_peak_kw)


def make_driver(
    config: DeviceConfig,
    station: Station,
    clock: Clock,
    on_reading: Callable[[DeviceState], Any] | None = None,
) -> ModbusDevice:
    cls = {"battery": ModbusBattery, "pv": ModbusPVInverter, "meter": ModbusMeter}[config.kind]
    return cls(
        config, clock, max_power_kw=default_max_power_kw(station, config.kind),
        on_reading=on_reading,
    )  # fmt: skip


@dataclass
class StationDevices:
    """What the controller reads and steers, and which of it is real."""

    battery: Battery | None
    pv: PVMeter | None
    meter: SiteMeter | None
    drivers: list[ModbusDevice] = field(default_factory=list)  # polled while serving
    notes: dict[str, str] = field(default_factory=dict)  # kind -> what stands in, for logs

    def describe(self) -> list[str]:
        """One line per kind: the device(s), or what stands in for them."""
        lines = []
        for kind, label in (("battery", "battery"), ("pv", "PV"), ("meter", "grid meter")):
            real = [d for d in self.drivers if d.kind == kind]
            if real:
                lines.append(
                    f"{label}: "
                    + ", ".join(
                        f"{d.name} (Modbus {d.config.address}, {d.config.model})" for d in real
                    )
                )
            else:
                lines.append(f"{label}: {self.notes[kind]}")
        return lines

    def placeholders(self, now: datetime) -> list[DeviceState]:
        """States of the kinds that have no real device (for the store)."""
        kinds = {d.kind for d in self.drivers}
        return [
            DeviceState(kind, kind, "simulated" if "SIMULATED" in note else "none",
                        "simulated" if "SIMULATED" in note else "none", now, None, {}, None, True)
            for kind, note in self.notes.items()
            if kind not in kinds
        ]  # fmt: skip

    async def run(self) -> None:
        """Poll every real device until cancelled."""
        if self.drivers:
            await asyncio.gather(*(d.run() for d in self.drivers))
        else:
            await asyncio.Future()


def build_devices(
    station: Station,
    clock: Clock,
    *,
    on_reading: Callable[[DeviceState], Any] | None = None,
    pv_kw: Callable[[datetime], float] | None = None,
) -> StationDevices:
    """The station's devices: Modbus drivers for ``[[devices]]``; for a kind without one,
    the simulated battery (if there is a ``[battery]``), a simulated PV meter (if
    ``pv_kw(t)`` is given), else nothing (PV from the forecast, site balance from the
    chargers)."""
    drivers = [make_driver(c, station, clock, on_reading) for c in station.devices]
    notes: dict[str, str] = {}
    batteries = [d for d in drivers if isinstance(d, ModbusBattery)]
    inverters = [d for d in drivers if isinstance(d, ModbusPVInverter)]
    meters = [d for d in drivers if isinstance(d, ModbusMeter)]
    battery: Battery | None = batteries[0] if batteries else None
    if battery is None and station.battery is not None:
        battery = SimulatedBattery(station.battery, clock)
        notes["battery"] = "SIMULATED (no battery in [[devices]]: a model of the [battery] table)"
    elif battery is None:
        notes["battery"] = "none (no [battery])"
    pv: PVMeter | None = PVGroup(inverters) if inverters else None
    if pv is None and pv_kw is not None:
        pv = SimulatedPVMeter(pv_kw, clock)
        notes["pv"] = "SIMULATED PV meter"
    elif pv is None:
        notes["pv"] = "not metered (no pv in [[devices]]: PV from the forecast alone)"
    meter: SiteMeter | None = meters[0] if meters else None
    if meter is None:
        notes["meter"] = (
            "none (no meter in [[devices]]: site balance from the chargers' meter values)"
        )
    return StationDevices(battery, pv, meter, drivers, notes)


__all__ = [
    "DeviceFault",
    "DeviceState",
    "ModbusBattery",
    "ModbusMeter",
    "ModbusPVInverter",
    "PVGroup",
    "StationDevices",
    "build_devices",
    "make_driver",
]
