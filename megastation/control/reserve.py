"""A battery reserve for the evening, sized by the forecast PV surplus (dispatch.md,
"Session 7: a reserve sized by the forecast surplus").

The cars still to come are a mean (:func:`megastation.control.needs.expected_sessions`),
so a plan does not see the evening's bursts of DC cars and spends the battery on the
night and the morning; the perfect-foresight optimum holds it for the evening peak. The
reserve is the stored energy the plan keeps (a soft floor, :attr:`Problem.soc_floor_kwh`)
until today's sun no longer covers the site load:

- as much as the evening needs (from then to local midnight): each arrival's expected
  cars as one burst at their power on top of the site load less PV, and of its energy the
  part above ``level_kw`` (the month's demand peak so far: energy spent below a peak
  already paid saves nothing), at the battery's discharge efficiency;
- no more than the forecast PV surplus leaves room for: the battery's usable range less
  the surplus still to come before the evening (PV above the site load and the firm
  energy of the cars plugged in now, at the charge efficiency), so PV is not spilled to
  keep it. Cars merely expected do not count against the surplus: they come in bursts,
  and the sun between the bursts must still find room;
- never more than is stored now: the reserve is kept, never bought.

Both policies keep it: under ``cost`` it was first left out (session 7, one-day cells
of the full station: two more cells outside the unmet bound), then measured on the
whole matrix, both station scales, a day and a week (session 8): the bill 2-3 % lower,
peaks 4-6 % lower, the count of cells within the unmet bound the same or one more.

The plan may go below the reserve at :func:`reserve_weight_per_kwh` per kWh: what a
stored kWh is worth in an evening burst, so only a car's energy, a green kWh or a new
demand peak at least as costly as a burst spends it earlier.

Pure: arrays in, arrays out. Powers in kW, energy in kWh, times tz-aware UTC.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from megastation.control.needs import ExpectedDemand
from megastation.dispatch import BatteryState, SessionNeed, TimeGrid


@dataclass(frozen=True)
class Reserve:
    """The reserve of one plan and how it was sized [kWh above the battery's floor]."""

    kwh: float  # kept until ``until`` (at most what is stored above the floor now)
    until: datetime | None  # the end of today's PV surplus over the site load; None: none
    evening_kwh: float  # what the evening needs from the battery
    room_kwh: float  # the usable range less the forecast surplus still to come
    surplus_kwh: float  # forecast PV surplus before ``until``, stored


def cars_mean_kw(grid: TimeGrid, sessions: Sequence[SessionNeed]) -> np.ndarray:
    """Per step: the cars' energy spread evenly over their stay within the plan [kW]."""
    out = np.zeros(grid.n_steps)
    edges = grid.edges_s
    for s in sessions:
        a = max(0.0, (s.arrival - grid.start).total_seconds())
        b = min(edges[-1], (s.departure - grid.start).total_seconds())
        if b <= a or s.energy_kwh <= 0:
            continue
        overlap = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
        out += s.energy_kwh * overlap / (b - a) / grid.durations_h
    return out


_LOCAL_DATES: dict[tuple[ZoneInfo, int], date] = {}  # (zone, epoch us) -> local date
_MAX_LOCAL_DATES = 100_000


def _local_dates(grid: TimeGrid, tz: ZoneInfo) -> list[date]:
    """The local date of each step start, remembered per time (the steps after the first
    recur in every plan of the next hours, #15)."""
    if len(_LOCAL_DATES) >= _MAX_LOCAL_DATES:
        _LOCAL_DATES.clear()
    out = []
    for us, t in zip(grid.times_us.tolist(), grid.starts, strict=True):
        d = _LOCAL_DATES.get((tz, us))
        if d is None:
            d = _LOCAL_DATES[(tz, us)] = t.astimezone(tz).date()
        out.append(d)
    return out


def evening_start_s(
    grid: TimeGrid, pv_kw: np.ndarray, load_kw: np.ndarray, tz: ZoneInfo
) -> float | None:
    """Seconds after the plan start at which today's (the plan start's local day) last
    step with PV above the site load ends; None when no such step is left."""
    day = grid.start.astimezone(tz).date()
    # not from grid.times: a pandas index per plan cost more than the rest of the reserve
    local_day = np.array([d == day for d in _local_dates(grid, tz)])
    sunny = np.flatnonzero(local_day & (np.asarray(pv_kw) > np.asarray(load_kw)))
    return float(grid.edges_s[sunny[-1] + 1]) if sunny.size else None


def evening_reserve(
    grid: TimeGrid,
    pv_kw: np.ndarray,
    load_kw: np.ndarray,
    sessions: Sequence[SessionNeed],
    battery: BatteryState,
    timezone: str,
    level_kw: float = 0.0,
) -> Reserve:
    """The reserve of a plan from ``grid.start`` (see the module docstring): ``load_kw`` is
    the site load (with uncontrolled cars), ``sessions`` every car of the plan, plugged in
    and expected."""
    tz = ZoneInfo(timezone)
    cap = battery.capacity_kwh
    e_min, e_max = battery.soc_min_frac * cap, battery.soc_max_frac * cap
    stored = min(max(battery.soc_frac * cap, e_min), e_max) - e_min
    until_s = evening_start_s(grid, pv_kw, load_kw, tz)
    if until_s is None or cap <= 0:
        return Reserve(0.0, None, 0.0, 0.0, 0.0)
    dt = grid.durations_h
    # the surplus if no other car comes: only the firm energy of cars plugged in now
    here = [x for x in sessions if x.arrival <= grid.start and x.priority >= 1.0]
    firm = cars_mean_kw(grid, here)
    ends = grid.edges_s[1:]
    day = (grid.start + timedelta(seconds=until_s)).astimezone(tz)
    midnight = (day + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight_s = (midnight - grid.start).total_seconds()
    before = ends <= until_s + 1e-6
    evening = (~before) & (grid.edges_s[:-1] < midnight_s - 1e-6)
    surplus = np.clip(pv_kw - load_kw - firm, 0.0, None)
    surplus_kwh = float((surplus * dt)[before].sum()) * battery.charge_efficiency
    evening_kwh = (
        burst_energy_above_kwh(grid, sessions, load_kw - pv_kw, evening, level_kw)
        / battery.discharge_efficiency
    )
    room = max(0.0, (e_max - e_min) - surplus_kwh)
    kwh = max(0.0, min(evening_kwh, room, stored))
    return Reserve(kwh, grid.start + timedelta(seconds=until_s), evening_kwh, room, surplus_kwh)


def burst_energy_above_kwh(
    grid: TimeGrid,
    sessions: Sequence[SessionNeed],
    other_kw: np.ndarray,
    window: np.ndarray,
    level_kw: float,
) -> float:
    """Energy [kWh] of the cars arriving in the steps ``window`` that comes above
    ``level_kw`` when each arrival's cars come as one burst: all of them at once at
    their power (an expected session's ``max_power_kw``: its cars x the connector power,
    at least one whole car), on top of ``other_kw`` (site load less PV) in that step.
    A burst at ``p`` kW above the level for its energy ``e`` needs ``e x (1 - level /
    p)`` from the battery to be held at the level."""
    # Python lists and bisect: a plan has ~50 sessions, and numpy's per-call overhead on
    # one value was most of this function's time (#15)
    starts = grid.edges_s[:-1].tolist()
    in_window = window.tolist()
    power: dict[int, float] = {}
    energy: dict[int, float] = {}
    for s in sessions:
        a = (s.arrival - grid.start).total_seconds()
        t = bisect.bisect_right(starts, a) - 1  # as np.searchsorted(side="right")
        if a < 0 or t < 0 or not in_window[t] or s.energy_kwh <= 0:
            continue
        power[t] = power.get(t, 0.0) + s.max_power_kw
        energy[t] = energy.get(t, 0.0) + s.energy_kwh
    out = 0.0
    for t, e in energy.items():
        p = power[t] + max(0.0, float(other_kw[t]))
        if p > level_kw:
            out += e * (1.0 - level_kw / p)
    return out


def burst_hours(expected: ExpectedDemand | None) -> float:
    """How long a burst lasts [h]: the typical stay of the expected cars of the kind that
    draws the most power per car (DC), learned like the rest of the expected cars; 0
    without expected cars (then no reserve is kept)."""
    if expected is None or not expected.kinds:
        return 0.0
    kd = max(expected.kinds.values(), key=lambda k: k.car_power_kw)
    return max(0.0, kd.dwell_min / 60.0)


def reserve_weight_per_kwh(
    cost_weight_per_krw: float, demand_charge_krw_per_kw: float, burst_h: float
) -> float:
    """Objective points per kWh below the reserve: what a stored kWh is worth in the
    evening, the demand charge it saves when it shaves a burst of ``burst_h`` hours (a kW
    shaved for the burst takes ``burst_h`` kWh). A plan then spends the reserve earlier
    only where it shaves a new peak at least as well (a shorter burst), or for a car's
    energy or a green kWh (far above it), never for a cheaper hour."""
    if burst_h <= 0:
        return 0.0
    return cost_weight_per_krw * demand_charge_krw_per_kw / burst_h


def reserve_floor_kwh(grid: TimeGrid, reserve: Reserve, battery: BatteryState) -> np.ndarray:
    """Per step end: the stored energy the plan keeps [kWh] (the battery's floor plus the
    reserve until ``reserve.until``, the floor after)."""
    e_min = battery.soc_min_frac * battery.capacity_kwh
    floor = np.full(grid.n_steps, e_min)
    if reserve.until is None or reserve.kwh <= 0:
        return floor
    until_s = (reserve.until - grid.start).total_seconds()
    floor[grid.edges_s[1:] <= until_s + 1e-6] += reserve.kwh
    return floor
