"""Stage 2 of a cycle, the problem: readings, needs and forecasts -> a dispatch Problem.

Each car plugged in becomes a firm session (the energy it surely wants by a pessimistic
departure) and, when it probably takes more, an extra session one tier below on the
same connector (:data:`EXTRA_PRIORITY`); cars on chargers that take no profiles are
uncontrolled load. Cars still to come are aggregate expected sessions
(:func:`megastation.control.needs.expected_sessions`); under re100 the plan keeps a
battery reserve for their evening bursts (:mod:`megastation.control.reserve`). The site
load is the configured base load plus, for the first hour, what the site meter sees that
nothing explains.
Powers in kW, energy in kWh, times tz-aware UTC.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from megastation.control.caps import CarCaps
from megastation.control.gather import SiteReadings, TxReading
from megastation.control.needs import (
    ExpectedDemand,
    LearnedDefaults,
    Need,
    estimate_need,
    expected_sessions,
)
from megastation.control.pv import PvForecast
from megastation.control.reserve import (
    Reserve,
    burst_hours,
    evening_reserve,
    reserve_floor_kwh,
    reserve_weight_per_kwh,
)
from megastation.core.config import Station
from megastation.dispatch import (
    BatteryState,
    Policy,
    PowerGroup,
    Problem,
    SessionNeed,
    TimeGrid,
    station_battery,
    station_grid_state,
    station_groups,
)
from megastation.store import Store, flows
from megastation.store import control as cr

# Plan grid: dispatch steps (site.dispatch_step_min) for the next hours, then coarser steps
# to the horizon end (dispatch.md, "Time"); None plans the whole horizon at the fine step.
DEFAULT_COARSE_AFTER_H: float | None = 6.0
DEFAULT_COARSE_STEP_S = 3600
# Energy a car probably takes beyond its firm need (Need.extra_energy_kwh) is a second LP
# session on the same connector; its unmet kWh cost this share of a firm kWh: below
# tier 1 (others' firm energy comes first) but far above grid energy and money, so it is
# still delivered before the car leaves.
EXTRA_PRIORITY = 0.05
EXTRA_SUFFIX = "+extra"
MIN_EXTRA_KWH = 1e-3  # extra energy below this is not planned
# Chatter: a change of a car's first-step power against what it was last sent costs
# this much per kW (objective points, re100 tier 4 is 0.01 per kWh): ties and near-ties
# keep the previous plan instead of flipping between equivalent plans.
CHATTER_WEIGHT_PER_KW = 2e-3
# Tier 4 (charge early in the stay): objective points per kWh x (0.5 + progress). Above
# the dispatch default so that small price and terminal-value differences (re100 tier 3:
# 0.1 point per KRW) do not push charging towards departure; still far below a grid kWh.
EARLY_WEIGHT_PER_KWH = 0.5
# The demand charge bills the highest mean import over this window (KEPCO: 15 minutes,
# a tariff fact independent of the configurable dispatch step).
DEMAND_WINDOW_S = 900
UNEXPLAINED_LOAD_S = 3600  # unexplained site load is planned to last this long


def plan_grid(
    now: datetime, station: Station, coarse_after_h: float | None, coarse_step_s: int
) -> TimeGrid:
    """The plan's steps from ``now``: the site's dispatch step aligned to the clock for
    ``coarse_after_h`` hours, then ``coarse_step_s`` steps to the horizon."""
    site = station.site
    return TimeGrid.aligned(
        now,
        site.horizon_h,
        site.dispatch_step_min * 60,
        coarse_after_h=coarse_after_h,
        coarse_step_s=coarse_step_s,
    )


@functools.cache  # the same every plan (policies are frozen)
def controller_policy(name: str) -> Policy:
    """The named policy with the live loop's chatter and early-charging weights."""
    pol = Policy.of(name)
    return dataclasses.replace(
        pol,
        chatter_weight_per_kw=max(pol.chatter_weight_per_kw, CHATTER_WEIGHT_PER_KW),
        early_weight_per_kwh=max(pol.early_weight_per_kwh, EARLY_WEIGHT_PER_KWH),
    )


def unsampled_kw(
    txs: Sequence[TxReading],
    caps: CarCaps,
    ev_kw: Mapping[tuple[str, int], float],
    now: datetime,
) -> float:
    """Power [kW] cars draw that their samples do not show yet.

    A car without a power sample in ``ev_kw`` draws what it was last sent; a car whose
    latest sample may predate the limit in force draws that limit if it is more (the
    site meter sees the new power before the car reports it: counted as unexplained
    site load it counted the car twice and the plan flipped 42 -> 0 -> 42 kW).
    """
    total = 0.0
    for r in txs:
        t = r.tx
        sent_kw = caps.sent_kw(t.transaction_id, now)
        drew = ev_kw.get((t.charger_id, t.connector_id))
        if drew is None:
            total += sent_kw or 0.0
        elif (
            sent_kw is not None
            and sent_kw > drew
            and caps.sample_predates_limit(t.transaction_id, r.sample_at)
        ):
            total += sent_kw - drew
    return total


def car_need(
    r: TxReading,
    *,
    now: datetime,
    station: Station,
    kind: str,
    learned: LearnedDefaults | None,
    override: tuple[datetime | None, float | None],
) -> Need:
    """What one car still needs (:func:`megastation.control.needs.estimate_need`)."""
    t, cn = r.tx, r.needs
    return estimate_need(
        kind=kind,
        started_at=t.start_time,
        delivered_kwh=t.energy_kwh,
        now=now,
        timezone=station.site.timezone,
        defaults=station.defaults,
        learned=learned,
        needs_departure=cn.departure_time if cn else None,
        needs_energy_kwh=cn.requested_energy_kwh if cn else None,
        soc_frac=t.soc_frac,
        soc_start_frac=r.first_soc_frac,
        override_departure=override[0],
        override_energy_kwh=override[1],
    )


def need_summary(r: TxReading, need: Need, max_kw: float, controllable: bool) -> dict:
    """One car's need as recorded with the plan (``inputs.sessions``)."""
    t = r.tx
    return {
        "transaction_id": t.transaction_id,
        "charger_id": t.charger_id,
        "connector_id": t.connector_id,
        # the departure known or expected; firm energy is planned by firm_due
        "departure": (need.extra_departure or need.departure).isoformat(),
        "firm_due": need.departure.isoformat(),
        "energy_kwh": round(need.energy_kwh, 3),
        "extra_energy_kwh": round(need.extra_energy_kwh, 3),
        "extra_departure": need.extra_departure.isoformat() if need.extra_departure else None,
        "max_power_kw": round(max_kw, 3),
        "source": need.source,
        "controllable": controllable,
    }


def presence(grid: TimeGrid, until: datetime, fine_step_s: float) -> np.ndarray:
    """Per step, how much of it a car that leaves at ``until`` is counted as there.

    A fine step it is in at all counts whole (conservative for the limit); a coarse step
    by the share of it before the car leaves.
    """
    left_s = (until - grid.start).total_seconds()
    edges = grid.edges_s
    share = np.clip((left_s - edges[:-1]) / np.diff(edges), 0.0, 1.0)
    return np.where(np.diff(edges) > fine_step_s, share, share > 0)


def firm_power_kw(unproven_kw: float, max_kw: float, need: Need, now: datetime) -> float:
    """The power [kW] a DC car's firm energy is planned with: ``unproven_kw`` (what it
    has shown it takes, :meth:`CarCaps.firm_kw`), raised to the mean power its firm
    energy needs by its pessimistic departure (at most ``max_kw``). The unproven cap keeps
    a plan from waiting on power the car may not have; a car that needs more than it to
    get its firm energy at all gets it now, or it leaves short (#11: a 19-minute DC car
    planned at 100 kW of its 200 left 12 kWh short of uncontrolled charging)."""
    left_h = (need.departure - now).total_seconds() / 3600.0
    if left_h <= 0.0:
        return max_kw
    return min(max_kw, max(unproven_kw, need.energy_kwh / left_h))


def car_session_needs(
    r: TxReading, need: Need, grid: TimeGrid, *, max_kw: float, firm_kw: float, anchor_kw: float
) -> tuple[list[SessionNeed], PowerGroup | None]:
    """The LP sessions of one controlled car: firm, and extra when it may take more
    (then with a group that holds both to the connector's ``max_kw``)."""
    t = r.tx
    sid = str(t.transaction_id)
    conn = int(t.connector_id)
    arrival = min(t.start_time, grid.start)
    out = [
        SessionNeed(
            session_id=sid,
            charger_id=t.charger_id,
            connector_id=conn,
            arrival=arrival,
            departure=need.departure,
            energy_kwh=need.energy_kwh,
            max_power_kw=firm_kw,
            current_power_kw=min(anchor_kw, firm_kw),
        )
    ]
    if not (need.extra_energy_kwh > MIN_EXTRA_KWH and need.extra_departure is not None):
        return out, None
    out.append(
        SessionNeed(
            session_id=sid + EXTRA_SUFFIX,
            charger_id=t.charger_id,
            connector_id=conn,
            arrival=arrival,
            departure=need.extra_departure,
            energy_kwh=need.extra_energy_kwh,
            max_power_kw=max_kw,
            priority=EXTRA_PRIORITY,
            stay_median_s=need.stay_median_s,
            stay_sigma=need.stay_sigma,
        )
    )
    return out, PowerGroup(f"car:{sid}", ((t.charger_id, conn),), max_kw)


@dataclass
class CarSessions:
    """The plugged-in cars as the plan sees them."""

    sessions: list[SessionNeed]  # firm and extra sessions of controlled cars
    groups: list[PowerGroup]  # firm + extra of one car share its connector
    controlled: dict[str, TxReading]  # session id -> transaction
    uncontrolled_kw: np.ndarray  # per step: cars on chargers that take no profiles [kW]
    summary: list[dict]  # each car's need, for the record
    unsampled_kw: float  # power drawn that no sample shows yet [kW]


def car_sessions(
    now: datetime,
    station: Station,
    grid: TimeGrid,
    txs: Sequence[TxReading],
    *,
    uncontrollable: Mapping[str, str],
    caps: CarCaps,
    ev_kw: Mapping[tuple[str, int], float],
    learned: LearnedDefaults | None,
    overrides: Mapping[int, tuple[datetime | None, float | None]],
    unsampled_kw: float,
) -> CarSessions:
    """Every plugged-in car's sessions (or uncontrolled load); ``unsampled_kw``
    (:func:`unsampled_kw`) grows by uncontrolled cars without a sample."""
    out = CarSessions([], [], {}, np.zeros(grid.n_steps), [], unsampled_kw)
    for r in txs:
        t = r.tx
        ch = station.charger(t.charger_id)
        if ch is None:
            continue
        kind = ch.kind.lower()
        ov = overrides.get(t.transaction_id, (None, None))
        need = car_need(r, now=now, station=station, kind=kind, learned=learned, override=ov)
        said_kw = r.needs.max_power_kw if r.needs else None
        max_kw = ch.connector_power_kw
        if said_kw:
            max_kw = min(max_kw, said_kw)
        max_kw = min(max_kw, caps.cap(t.transaction_id, t.power_kw, r.sample_at, now))
        controllable = t.charger_id not in uncontrollable
        out.summary.append(need_summary(r, need, max_kw, controllable))
        if not controllable:
            kw = t.power_kw if t.power_kw is not None else max_kw
            fine_s = station.site.dispatch_step_min * 60
            out.uncontrolled_kw += kw * presence(
                grid, need.extra_departure or need.departure, fine_s
            )
            if (t.charger_id, t.connector_id) not in ev_kw:
                out.unsampled_kw += kw - (caps.sent_kw(t.transaction_id, now) or 0.0)
            continue
        out.controlled[str(t.transaction_id)] = r
        # chatter is measured against what the car was last sent (not what it drew:
        # a car below its limit would pull the next plan down, then up again)
        anchor = caps.sent_kw(t.transaction_id, now)
        if anchor is None:
            anchor = max(0.0, t.power_kw or 0.0)
        firm_kw = max_kw
        if kind == "dc" and need.extra_energy_kwh > MIN_EXTRA_KWH and not said_kw:
            firm_kw = firm_power_kw(caps.firm_kw(t.transaction_id, max_kw), max_kw, need, now)
        sessions, group = car_session_needs(
            r, need, grid, max_kw=max_kw, firm_kw=firm_kw, anchor_kw=min(anchor, max_kw)
        )
        out.sessions.extend(sessions)
        if group is not None:
            out.groups.append(group)
    return out


def expected_session_needs(
    demand: ExpectedDemand, grid: TimeGrid, timezone: str, share: float
) -> tuple[list[SessionNeed], float]:
    """Cars still to come as aggregate sessions (never in the first step), and their
    energy [kWh]. One aggregate per kind and local hour: the hours after the one the
    first step ends in are the same for every plan of that hour, and are made once (#15)."""
    edges_s = grid.edges_s
    lo = grid.start + timedelta(seconds=float(edges_s[1]))  # end of the first step
    hi = grid.start + timedelta(seconds=float(edges_s[-1]))
    hour = lo.astimezone(ZoneInfo(timezone)).replace(minute=0, second=0, microsecond=0)
    split = hour + timedelta(hours=1)  # expected_sessions' next hour after lo's
    if split >= hi:
        out = _expected_needs(demand, lo, hi, timezone, share)
    else:
        out = _expected_needs(demand, lo, split, timezone, share)
        out += _later_expected_needs(demand, split, hi, timezone, share)
    kwh_total = 0.0
    for s in out:  # in expected_sessions' order, as one call over [lo, hi) sums them
        kwh_total += s.energy_kwh
    return out, kwh_total


def _expected_needs(
    demand: ExpectedDemand, lo: datetime, hi: datetime, timezone: str, share: float
) -> list[SessionNeed]:
    """:func:`expected_sessions` of the hours over ``[lo, hi)`` as :class:`SessionNeed`."""
    return [
        SessionNeed(sid, sid, 0, arr, dep, kwh, kw, priority=prio)
        for sid, _k, arr, dep, kwh, kw, prio in expected_sessions(
            demand, [lo, lo, hi], timezone, share=share
        )
    ]


def _later_expected_needs(
    demand: ExpectedDemand, lo: datetime, hi: datetime, timezone: str, share: float
) -> list[SessionNeed]:
    """:func:`_expected_needs` from a whole hour ``lo``; the last answer is kept."""
    key = (lo, hi, timezone, share)
    last = _last_expected[0] if _last_expected else None  # one read: threads may share it
    if last is None or last[0] is not demand or last[1] != key:
        last = (demand, key, tuple(_expected_needs(demand, lo, hi, timezone, share)))
        _last_expected[:] = [last]
    return list(last[2])


# _later_expected_needs' last answer: [(demand, its key, sessions)]; sessions are frozen
_last_expected: list[tuple] = []


def site_load_kw(grid: TimeGrid, base_load_kw: float, unexplained_kw: float) -> np.ndarray:
    """Per step: the base load, plus for :data:`UNEXPLAINED_LOAD_S` the load the site meter
    sees that nothing explains [kW]."""
    load = np.full(grid.n_steps, base_load_kw)
    load[grid.edges_s[:-1] < UNEXPLAINED_LOAD_S] += unexplained_kw
    return load


def peak_so_far_kw(
    store: Store, station: Station, now: datetime, warnings: list[str] | None = None
) -> float:
    """This billing month's demand peak [kW]: the highest :data:`DEMAND_WINDOW_S` mean
    import metered in a window that has ended (recorded energy flows), else the highest
    import recorded with a plan. (The window in progress is not counted: its mean so far
    over the whole window would understate it.) Non-finite stored imports are skipped,
    with a line in ``warnings``."""
    month = now.astimezone(station.site.tz).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    w = DEMAND_WINDOW_S
    current = datetime.fromtimestamp(int(now.timestamp()) // w * w, UTC)  # window in progress
    bad = flows.nonfinite_import_steps(store, month, current)
    if bad and warnings is not None:
        warnings.append(
            f"energy_flows: {bad} step(s) this month with a non-finite grid_import_kw "
            "skipped in the demand peak"
        )
    metered = flows.peak_window_import_kw(store, month, current, w)
    if metered is not None and math.isfinite(metered):
        return max(0.0, float(metered))
    planned = cr.max_planned_import_kw(store, month)
    return planned if planned is not None and planned > 0 else 0.0


@dataclass
class BuiltProblem:
    """The problem of one cycle and what the later stages need of its making."""

    problem: Problem
    cars: CarSessions
    battery: BatteryState | None  # None: no battery to plan (absent, unread or faulty)
    computed_import_kw: float  # net import from known flows [kW] (no site meter)
    unexplained_kw: float  # metered import nothing explains [kW]
    expected_kwh: float  # energy of the cars still to come [kWh]
    reserve: Reserve | None = None  # the evening reserve kept (None: not sized)


def build_problem(
    *,
    grid: TimeGrid,
    station: Station,
    site: SiteReadings,
    pv: PvForecast,
    cars: CarSessions,
    ev_kw_total: float,
    policy: Policy,
    expected: ExpectedDemand | None,
    green_frac: float | None,
    peak_kw: float,
    reserve: bool = True,
) -> BuiltProblem:
    """The dispatch :class:`Problem` of one cycle.

    ``ev_kw_total`` is the sum of the cars' latest power samples [kW]; ``green_frac`` the
    battery's renewable share (None: no usable battery reading); ``peak_kw`` the month's
    demand peak so far [kW]; ``reserve``: keep the evening reserve
    (:func:`megastation.control.reserve.evening_reserve`).
    """
    batt = site.battery
    batt_kw = batt.power_kw if batt else 0.0
    computed = ev_kw_total + station.site.base_load_kw - (site.pv_kw or 0.0) - batt_kw
    computed += cars.unsampled_kw
    unexplained = 0.0
    if site.grid is not None:
        unexplained = max(0.0, site.grid.net_import_kw - computed)
    sessions = list(cars.sessions)
    expected_kwh = 0.0
    if expected is not None:
        more, expected_kwh = expected_session_needs(
            expected, grid, station.site.timezone, policy.expected_share
        )
        sessions.extend(more)
    battery = None
    if green_frac is not None:
        soc = None
        if station.battery is not None:
            b = station.battery
            soc = min(max(batt.soc_frac, b.soc_min_frac), b.soc_max_frac)
        battery = station_battery(station, soc, green_frac)
    gs = station_grid_state(station, grid, peak_so_far_kw=peak_kw)
    uncontrolled = cars.uncontrolled_kw
    load = site_load_kw(grid, station.site.base_load_kw, unexplained)
    held = None
    floor = None
    burst_h = burst_hours(expected)
    if reserve and battery is not None and burst_h > 0:
        held = evening_reserve(
            grid, pv.p50_kw, load + uncontrolled, sessions, battery, station.site.timezone,
            level_kw=peak_kw,
        )  # fmt: skip
        weight = reserve_weight_per_kwh(
            policy.cost_weight_per_krw, gs.demand_charge_krw_per_kw, burst_h
        )
        if held.kwh > 0 and weight > 0:  # no demand charge: nothing to keep it for
            floor = reserve_floor_kwh(grid, held, battery)
            policy = dataclasses.replace(policy, reserve_short_weight_per_kwh=weight)
    problem = Problem(
        grid=grid,
        pv_kw=pv.p50_kw,
        site_load_kw=load,
        grid_state=dataclasses.replace(gs, import_limit_kw=site.limit_kw),
        sessions=tuple(sessions),
        battery=battery,
        groups=station_groups(station) + tuple(cars.groups),
        pv_p10_kw=pv.p10_kw,
        uncontrolled_kw=uncontrolled if uncontrolled.any() else None,
        policy=policy,
        soc_floor_kwh=floor,
    )
    return BuiltProblem(problem, cars, battery, computed, unexplained, expected_kwh, held)
