"""Time-weighted means over one step: the one accumulator behind every energy-flow record.

Readings held over pieces of a step are added as (seconds, {name: kW}); the step's mean
of each power is its energy over the time covered [kW] (:meth:`StepMean.means`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class StepMean:
    """Sums of power x time over one step starting at ``ts`` [kW x s]."""

    ts: datetime
    seconds: float = 0.0  # time covered so far
    sums: dict[str, float] = field(default_factory=dict)  # kW x s

    def add(self, seconds: float, values: Mapping[str, float]) -> None:
        """Hold ``values`` [kW] for ``seconds`` more."""
        self.seconds += seconds
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * seconds

    def means(self) -> dict[str, float]:
        """Each power's mean over the time covered [kW] (empty before anything was added)."""
        if self.seconds <= 0:
            return {}
        return {k: v / self.seconds for k, v in self.sums.items()}
