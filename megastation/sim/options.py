"""What ``megastation simulate`` and the demo accept: policy and weather names, and the
error that names a wrong input. Light (no numpy, pandas or pvlib): the CLI imports it
to build its help and check its options."""

from __future__ import annotations

from pathlib import Path

from megastation.core.config import seeds_dir

POLICIES = ("re100", "cost", "uncontrolled", "uncontrolled-idle", "greedy")
WEATHER_NAMES = ("clear-day", "cloudy-day", "mixed-week")


class SimulationError(ValueError):
    """A simulation input is wrong; the message names it."""


def weather_path(weather: str | Path) -> Path:
    """A seed weather name (``clear-day``, ``cloudy-day``, ``mixed-week``) or a file."""
    if str(weather) in WEATHER_NAMES:
        return seeds_dir() / "weather" / f"{weather}.csv"
    p = Path(weather)
    if not p.is_file():
        raise SimulationError(
            f"weather: {weather}: no such file (or use one of {', '.join(WEATHER_NAMES)})"
        )
    return p
