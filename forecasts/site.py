"""The PV system the forecasts describe: a site and its arrays, as plain frozen dataclasses.

``forecasts`` takes this description and nothing else from the application (the
station controller adapts its own configuration to it: ``Station.pv_site()`` in
megastation). Standard library only, so importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

#: SAPM temperature models accepted for ``PVArray.mounting``.
MOUNTINGS = ("open_rack", "close_mount", "insulated_back")


@dataclass(frozen=True)
class PVArray:
    """One array (one orientation behind one AC limit)."""

    name: str
    peak_power_kw: float  # [kWp], DC at STC
    tilt_deg: float  # [deg] from horizontal
    azimuth_deg: float  # [deg], 180 = south
    temp_coeff_per_c: float = -0.0037  # [1/K], relative DC power change
    losses_frac: float = 0.14  # [-], PVWatts-style system losses
    inverter_ac_kw: float | None = None  # [kW] AC limit; None = peak_power_kw
    mounting: str = "open_rack"  # SAPM temperature model, one of MOUNTINGS

    @property
    def ac_limit_kw(self) -> float:
        """AC limit [kW] (``inverter_ac_kw``, else ``peak_power_kw``)."""
        return self.inverter_ac_kw or self.peak_power_kw


@dataclass(frozen=True)
class PVSite:
    """Where the arrays stand, and the arrays."""

    latitude: float  # [deg] north
    longitude: float  # [deg] east
    altitude_m: float  # [m] above sea level; used as given, never looked up
    timezone: str = "UTC"  # IANA name, for local days in scores and CSV output
    arrays: tuple[PVArray, ...] = ()
    step_min: int = 15  # default forecast step [min]; must divide 60

    @property
    def peak_power_kw(self) -> float:
        """Installed DC power [kWp], the normaliser of the scores."""
        return sum(a.peak_power_kw for a in self.arrays)

    @property
    def ac_limit_kw(self) -> float:
        """Sum of the arrays' AC limits [kW]."""
        return sum(a.ac_limit_kw for a in self.arrays)
