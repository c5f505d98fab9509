"""A car on a connector: energy integration, taper and profile obedience, no I/O.

:class:`ConnectorSim` is the physics both simulators share: the OCPP charge points
(:mod:`megastation.sim.chargepoint`) and a socket-free simulator step it with the limit
in force, and it answers with the power the car actually draws.

Model: the car draws ``min(limit, car max, connector max, taper(SoC))``, where the
taper holds full power up to ``taper_start_soc`` (DC 0.80, AC 0.95) and falls
linearly to ``taper_floor_frac`` of the car's max at 100 %. It stops at the driver's
target (``soc_arrival + energy_wanted / battery``). An AC car cannot charge below
6 A (IEC 61851): a smaller limit means 0. The power of a step is held for the step
(explicit Euler, exact at constant power); no charging losses (the meter and the
battery see the same energy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from megastation.core.fleet import CarVisit

MIN_AC_CURRENT_A = 6.0


@dataclass
class ConnectorSim:
    """One car's charge at one connector; mutable state advanced by :meth:`step`."""

    visit: CarVisit  # the car, its arrival, departure and wish
    connector_max_kw: float  # hardware limit of the connector
    kind: str = "DC"  # "AC" or "DC"
    phases: int = 3  # AC phases wired
    voltage_v: float = 230.0  # AC phase voltage [V]
    taper_start_soc: float | None = None  # None: 0.80 for DC, 0.95 for AC
    taper_floor_frac: float = 0.05  # power at 100 % SoC, as a share of the car's max
    energy_kwh: float = 0.0  # delivered so far
    power_kw: float = 0.0  # drawn in the last step

    def __post_init__(self) -> None:
        if self.taper_start_soc is None:
            self.taper_start_soc = 0.80 if self.kind == "DC" else 0.95

    @property
    def soc_frac(self) -> float:
        """The car's state of charge now [0..1]."""
        return min(1.0, self.visit.soc_arrival_frac + self.energy_kwh / self.visit.battery_kwh)

    @property
    def energy_remaining_kwh(self) -> float:
        """What the driver still wants [kWh]."""
        return max(0.0, self.visit.energy_wanted_kwh - self.energy_kwh)

    @property
    def full(self) -> bool:
        return self.energy_remaining_kwh <= 1e-9

    @property
    def min_power_kw(self) -> float:
        """Below this limit the car does not charge at all (AC: 6 A)."""
        if self.kind == "AC":
            return MIN_AC_CURRENT_A * self.phases * self.voltage_v / 1000.0
        return 0.0

    def plugged_in(self, now: datetime) -> bool:
        return self.visit.arrival <= now < self.visit.departure

    def max_power_kw(self) -> float:
        """What the car would draw now without a profile [kW] (car, connector, taper)."""
        if self.full:
            return 0.0
        car = self.visit.car_max_power_kw
        soc = self.soc_frac
        start = float(self.taper_start_soc or 1.0)
        if soc > start:
            frac = (1.0 - soc) / max(1e-9, 1.0 - start)
            car *= max(self.taper_floor_frac, frac)
        return max(0.0, min(car, self.connector_max_kw))

    def step(self, now: datetime, dt_s: float, limit_kw: float) -> float:
        """Charge for ``dt_s`` seconds from ``now`` under ``limit_kw``; return the mean power [kW].

        Outside the visit (before arrival, from departure on) the power is 0; a step
        that crosses the departure charges only until it (the power returned is the
        mean over the part charged).
        """
        if dt_s <= 0 or not self.plugged_in(now):
            self.power_kw = 0.0
            return 0.0
        # The car leaves at departure: a step never charges past it.
        dt_s = min(dt_s, (self.visit.departure - now).total_seconds())
        limit_kw = max(0.0, limit_kw)
        power = min(limit_kw, self.max_power_kw())
        if power < self.min_power_kw - 1e-9:
            power = 0.0
        energy = power * dt_s / 3600.0
        if energy > self.energy_remaining_kwh:
            energy = self.energy_remaining_kwh
            power = energy * 3600.0 / dt_s
        self.energy_kwh += energy
        self.power_kw = power
        return power
