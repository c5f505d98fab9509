"""The battery's renewable content, carried from plan to plan.

The LP needs the share of the stored energy that came from PV (green energy out of the
battery counts as renewable). The loop takes it from the last plan's path at the time
elapsed since it was made and keeps it in the store, so a restarted loop resumes it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from megastation.core.config import Station
from megastation.dispatch import Plan
from megastation.store import Store

BATTERY_GREEN_KEY = "control.battery_renewable_frac"  # store setting: share 0..1
SETTING_DECIMALS = 6  # the share is stored rounded to this many decimals
_EMPTY_KWH = 1e-6  # a battery holding less than this [kWh] holds no green energy


class StoredRenewable:
    """The renewable share of the battery's content, from plan to plan."""

    def __init__(self, store: Store, station: Station) -> None:
        self.store = store
        self.station = station
        self.last_plan: tuple[datetime, Plan] | None = None  # (made at, plan)
        self._frac: float | None = None

    def frac(self, now: datetime) -> float:
        """Share [0..1] of the stored energy that came from PV at ``now``.

        The last plan's renewable content at the time elapsed since it was made (linear
        within its steps) over its stored energy then; else the stored setting; 0 when
        nothing is known.
        """
        frac = self._frac
        if frac is None:
            got = self.store.get_setting(BATTERY_GREEN_KEY)
            frac = float(got) if got is not None else 0.0
        if self.last_plan is not None and self.station.battery is not None:
            made, plan = self.last_plan
            el = (now - made).total_seconds()
            edges = plan.problem.grid.edges_s
            if el > 0 and plan.battery_renewable_kwh.size == edges.size:
                green = float(np.interp(el, edges, plan.battery_renewable_kwh))
                stored = float(np.interp(el, edges, plan.soc_frac)) * (
                    self.station.battery.capacity_kwh
                )
                frac = min(1.0, max(0.0, green / stored)) if stored > _EMPTY_KWH else 0.0
        if frac != self._frac:
            self._frac = frac
            self.store.set_setting(BATTERY_GREEN_KEY, round(frac, SETTING_DECIMALS))
        return frac
