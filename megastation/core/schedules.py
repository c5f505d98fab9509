"""Power schedules and fail-safe limits: what the controller asks of a charger, in kW.

Protocol-free: :mod:`ocpp_central.profiles` turns these into OCPP charging profiles.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["FailSafe", "KwSchedule", "failsafe_limits_kw"]


@dataclass(frozen=True)
class KwSchedule:
    """A piecewise-constant power limit: ``limits_kw[i]`` from ``starts[i]`` to the next start.

    The last period runs until ``end``. All times UTC.
    """

    starts: tuple[datetime, ...]
    limits_kw: tuple[float, ...]
    end: datetime

    def __post_init__(self) -> None:
        if len(self.starts) != len(self.limits_kw) or not self.starts:
            raise ValueError("KwSchedule: starts and limits_kw must be non-empty and equal length")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False)):
            raise ValueError("KwSchedule: starts must increase")
        if self.end <= self.starts[-1]:
            raise ValueError("KwSchedule: end must be after the last start")

    @classmethod
    def regular(cls, start: datetime, step_s: float, limits_kw: Sequence[float]) -> KwSchedule:
        """Equal steps of ``step_s`` seconds from ``start``."""
        starts = tuple(start + timedelta(seconds=i * step_s) for i in range(len(limits_kw)))
        return cls(
            starts, tuple(float(x) for x in limits_kw), starts[-1] + timedelta(seconds=step_s)
        )

    def value_at(self, ts: datetime) -> float | None:
        """The limit [kW] at ``ts``, None outside the schedule."""
        if ts < self.starts[0] or ts >= self.end:
            return None
        return self.limits_kw[bisect.bisect_right(self.starts, ts) - 1]

    def capped_after(self, ts: datetime, cap_kw: float) -> KwSchedule:
        """The schedule with every limit from ``ts`` on capped at ``cap_kw``."""
        own_starts, own_limits = tuple(self.starts), tuple(self.limits_kw)
        k = bisect.bisect_left(own_starts, ts)  # periods before k start before ts
        nxt = own_starts[k] if k < len(own_starts) else self.end
        split = k > 0 and ts < nxt  # ts falls inside period k - 1: split it there
        starts = own_starts[:k] + ((ts,) if split else ()) + own_starts[k:]
        capped = own_limits[k - 1 if split else k :]  # the split period's second part too
        limits = own_limits[:k] + tuple(min(x, cap_kw) for x in capped)
        return KwSchedule(starts, limits, self.end)

    def to_json(self) -> dict[str, Any]:
        return {
            "starts": [s.isoformat() for s in self.starts],
            "limits_kw": list(self.limits_kw),
            "end": self.end.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KwSchedule:
        return cls(
            tuple(datetime.fromisoformat(s) for s in data["starts"]),
            tuple(float(x) for x in data["limits_kw"]),
            datetime.fromisoformat(data["end"]),
        )


@dataclass(frozen=True)
class FailSafe:
    """Fail-safe limits of one charger [kW]."""

    charger_kw: float  # the whole charger at its TxDefaultProfile (sum over connectors)
    connector_kw: float  # each connector's TxDefaultProfile limit
    max_kw: float  # the ChargePointMaxProfile / ChargingStationMaxProfile limit


def failsafe_limits_kw(
    chargers: Sequence[Any], grid_import_limit_kw: float, base_load_kw: float
) -> dict[str, FailSafe]:
    """Share ``grid_import_limit_kw - base_load_kw`` among chargers by max power.

    ``chargers`` are :class:`megastation.core.config.Charger` objects. The battery is
    assumed idle and PV zero, so with every charger at its TxDefaultProfile the site
    import stays within the limit. Each charger's share is split equally among its
    connectors and never above the charger's (or connector's) own maximum. The station
    maximum profile caps a charger at ``min(max_power_kw, limit - base load)``: no
    single charger may ever draw more than the grid connection can give.
    """
    available_kw = max(0.0, grid_import_limit_kw - base_load_kw)
    total_kw = sum(c.max_power_kw for c in chargers) or 1.0
    out = {}
    for c in chargers:
        share_kw = min(c.max_power_kw, available_kw * c.max_power_kw / total_kw)
        connector_kw = min(share_kw / c.connectors, c.connector_power_kw)
        out[c.id] = FailSafe(
            charger_kw=connector_kw * c.connectors,
            connector_kw=connector_kw,
            max_kw=min(c.max_power_kw, available_kw),
        )
    return out
