"""The balance-following rule: the battery between plans (self-consumption around the plan).

Between plans the battery follows the site balance around the plan in force: it takes
surplus the plan would export and covers import the plan did not expect, within the
plan's reserve (dispatch.md, "Between plans"). :func:`follow_balance_kw` is the
rule; :func:`balance_setpoint_kw` applies it at an instant of a plan; :class:`BalanceFollower`
keeps the plan being followed and the last set point sent. Powers in kW, battery
> 0 discharge (device convention).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from megastation.core.config import Station
from megastation.dispatch import Plan, battery_may_export

# The battery changes its set point when the import (or export) would differ from the
# plan's by more than this, re-checked every guard tick (or meter sample) at most this often.
BALANCE_DEADBAND_KW = 1.0
BALANCE_INTERVAL_S = 0.5
# ... and it discharges beyond the plan only while its state of charge is no more than
# this below the plan's path (the plan's reserve for later stays).
BALANCE_SOC_SLACK_FRAC = 0.01


def follow_balance_kw(
    *,
    planned_battery_kw: float,
    planned_import_kw: float,
    planned_export_kw: float,
    import_at_plan_kw: float,
    max_charge_kw: float,
    max_discharge_kw: float,
    may_discharge_more: bool = True,
    deadband_kw: float = BALANCE_DEADBAND_KW,
    may_export: bool = True,
) -> float:
    """The battery set point [kW, > 0 discharge] between plans (self-consumption).

    ``import_at_plan_kw`` is the site's net import [kW] (< 0 export) with the battery at
    the plan's power ``planned_battery_kw``. The plan's grid import and export for the
    current step bound what the battery does:

    - more surplus than planned (the site would export more than the plan): the battery
      takes it (charges more, or discharges less), so PV is stored rather than exported;
    - more import than planned (cars draw more, PV falls short): the battery discharges
      instead (or charges less); beyond the plan's discharge only if
      ``may_discharge_more`` (its state of charge is not below the plan's path);
    - within ``deadband_kw`` of the plan: the plan's set point.

    Clamped to the battery's power limits; the SoC limits are the battery's own. Unless
    ``may_export`` (:func:`megastation.dispatch.battery_may_export`), a discharge never
    exceeds the import the site would have with the battery idle: stored energy is not
    sent to the grid (#11); and the battery stores every surplus before any is exported,
    a planned export included, as self-consumption does: a plan exports PV early only
    because it expects the battery to fill later, which the day may not bring (#11).
    """
    p = planned_battery_kw
    x = import_at_plan_kw
    export_kw = planned_export_kw if may_export else 0.0
    if x < -export_kw - deadband_kw:
        p = planned_battery_kw + (x + export_kw)
    elif x > planned_import_kw + deadband_kw:
        p = planned_battery_kw + (x - planned_import_kw)
        if not may_discharge_more:
            p = min(p, max(planned_battery_kw, 0.0))
    if not may_export and p > 0:
        p = min(p, max(0.0, x + planned_battery_kw))  # x + planned: import, battery idle
    return min(max(p, -max_charge_kw), max_discharge_kw)


def balance_setpoint_kw(
    plan: Plan,
    made_at: datetime,
    now: datetime,
    station: Station,
    *,
    soc_frac: float,
    limit_kw: float,
    pv_kw: float | None,
    ev_kw: float,
    net_import_kw: float | None,
    battery_kw: float,
) -> float | None:
    """The set point [kW, > 0 discharge] that follows the balance at ``now`` around
    ``plan`` (made at ``made_at``); None outside the plan or without a battery.

    The balance is the metered net import ``net_import_kw`` [kW] with the battery at
    ``battery_kw``, or else computed: ``ev_kw`` + base load - ``pv_kw`` (default: the
    plan's forecast). Beyond the plan's reserve the battery discharges only when the
    import would exceed ``limit_kw`` [kW], the grid limit in force.
    """
    if station.battery is None:
        return None
    el = (now - made_at).total_seconds()
    edges = plan.problem.grid.edges_s
    if el < 0 or el >= edges[-1]:
        return None
    may_export, edges_list = _followed(plan)
    k = bisect.bisect_right(edges_list, el) - 1  # np.searchsorted(edges, el, "right") - 1
    planned = float(plan.battery_discharge_kw[k] - plan.battery_charge_kw[k])
    if net_import_kw is not None:
        import_at_plan = net_import_kw + battery_kw - planned
    else:
        pv = float(plan.problem.pv_kw[k]) if pv_kw is None else pv_kw
        import_at_plan = ev_kw + station.site.base_load_kw - pv - planned
    b = station.battery
    plan_soc = float(np.interp(el, edges, plan.soc_frac))
    reserve_ok = soc_frac >= plan_soc - BALANCE_SOC_SLACK_FRAC
    return follow_balance_kw(
        planned_battery_kw=planned,
        planned_import_kw=float(plan.grid_import_kw[k]),
        planned_export_kw=float(plan.grid_export_kw[k]),
        import_at_plan_kw=import_at_plan,
        max_charge_kw=b.max_charge_kw,
        max_discharge_kw=b.max_discharge_kw,
        may_discharge_more=reserve_ok or import_at_plan > limit_kw,
        may_export=may_export,
    )


def _followed(plan: Plan) -> tuple[bool, list[float]]:
    """:func:`battery_may_export` of ``plan``'s problem and its step edges [s] as a list
    (bisected without numpy's call overhead), kept for the last plan: the set point
    follows the balance every second (every substep in the simulator) around the same
    plan (#15)."""
    last = _last_followed[0] if _last_followed else None  # one read: threads may share it
    if last is None or last[0] is not plan:
        may_export = battery_may_export(plan.problem.policy, plan.problem.grid_state)
        last = (plan, (may_export, plan.problem.grid.edges_s.tolist()))
        _last_followed[:] = [last]
    return last[1]


_last_followed: list[tuple[Plan, tuple[bool, list[float]]]] = []


@dataclass
class BalanceFollower:
    """The plan the battery follows between plans and the set point last sent to it."""

    plan: tuple[datetime, Plan] | None = None  # (made at, plan); None: nothing to follow
    set_kw: float | None = None  # last set point sent [kW, > 0 discharge]
    balanced_at: datetime | None = None  # last balance check driven by meter samples

    def due(self, now: datetime) -> bool:
        """True (and noted) if a sample-driven balance check is due at ``now``."""
        if (
            self.balanced_at is None
            or (now - self.balanced_at).total_seconds() >= BALANCE_INTERVAL_S
        ):
            self.balanced_at = now
            return True
        return False

    def changed(self, kw: float) -> bool:
        """True if ``kw`` differs enough from the last set point to be sent."""
        return self.set_kw is None or abs(kw - self.set_kw) > BALANCE_DEADBAND_KW / 2
