"""Dispatch: an optimal plan for every car, the battery and the grid, as one sparse LP.

:func:`solve` is a pure function from a :class:`Problem` (time grid, PV forecast, site
load, battery, grid and tariff, car sessions, hardware power groups, policy) to a
:class:`Plan` (power per session and step, battery, grid, PV use and curtailment). The
model is documented in ``dispatch.md`` beside this file; the solver is HiGHS through
:func:`scipy.optimize.linprog`. The constraint matrix is assembled from index arrays
(``scipy.sparse.coo_matrix``): there is no Python loop over sessions x steps.

Preconditions (checked, :class:`ProblemError` names the field): arrays are finite and
one value per step, capacities and limits are >= 0, state of charge lies within its
bounds, every departure is after the grid start and after its arrival.
Impossible wishes are not errors: the plan reports ``unmet_kwh`` per session.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.special import erfc

from megastation.core.clock import utc
from megastation.core.config import Station
from megastation.core.tariff import Tariff


class ProblemError(ValueError):
    """A dispatch problem is inconsistent; the message names the field."""


# --------------------------------------------------------------------------- problem


@dataclass(frozen=True)
class TimeGrid:
    """Steps of the plan: ``n_steps`` steps from ``start``, the first one possibly shorter,
    optionally longer steps late in the horizon.

    ``first_step_s`` (None = ``step_s``) lets the plan align to the 15-minute clock: a
    solve at 10:07 uses a first step of 480 s, then 10:15, 10:30, ...
    ``coarse_step_s`` (None = every step is fine) with ``n_fine``: the first ``n_fine``
    steps are the fine ones above, the other ``n_steps - n_fine`` last ``coarse_step_s``
    each (a multiple of ``step_s``): 15-minute steps for the next hours, hourly after.
    """

    start: datetime  # tz-aware; stored as UTC
    n_steps: int
    step_s: int = 900
    first_step_s: int | None = None
    coarse_step_s: int | None = None
    n_fine: int | None = None  # steps before the coarse ones (None = all; needs coarse_step_s)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "start", utc(self.start))
        except ValueError as exc:
            raise ProblemError(f"grid.start: {exc}") from None
        if self.n_steps < 1:
            raise ProblemError(f"grid.n_steps: must be >= 1, got {self.n_steps}")
        if self.step_s <= 0:
            raise ProblemError(f"grid.step_s: must be > 0, got {self.step_s}")
        if self.first_step_s is not None and not 0 < self.first_step_s <= self.step_s:
            raise ProblemError(
                f"grid.first_step_s: must be in (0, step_s={self.step_s}], got {self.first_step_s}"
            )
        if self.coarse_step_s is not None:
            if self.coarse_step_s < self.step_s or self.coarse_step_s % self.step_s:
                raise ProblemError(
                    f"grid.coarse_step_s: must be a multiple of step_s={self.step_s}, "
                    f"got {self.coarse_step_s}"
                )
            if self.n_fine is None or not 1 <= self.n_fine <= self.n_steps:
                raise ProblemError(
                    f"grid.n_fine: must be in [1, n_steps={self.n_steps}] with coarse_step_s, "
                    f"got {self.n_fine}"
                )
        elif self.n_fine is not None:
            raise ProblemError("grid.n_fine: needs coarse_step_s")

    @classmethod
    def aligned(
        cls,
        now: datetime,
        horizon_h: float,
        step_s: int = 900,
        *,
        coarse_after_h: float | None = None,
        coarse_step_s: int = 3600,
    ) -> TimeGrid:
        """A grid from ``now`` whose later steps start on multiples of ``step_s`` (UTC).

        With ``coarse_after_h``: fine steps up to the first multiple of ``coarse_step_s``
        at or after ``now + coarse_after_h``, then ``coarse_step_s`` steps up to the first
        multiple of it at or after ``now + horizon_h`` (so the horizon may run up to one
        coarse step longer). Without it, or if the fine part covers the horizon: fine.
        """
        now = utc(now)
        epoch_s = now.timestamp()
        first = step_s - (epoch_s % step_s)
        first_s = round(first) or step_s
        n = 1 + math.ceil(max(0.0, horizon_h * 3600 - first_s) / step_s)
        fine = cls(now, n, step_s, first_s if first_s != step_s else None)
        if coarse_after_h is None or coarse_after_h >= horizon_h:
            return fine
        if coarse_step_s % step_s:
            raise ProblemError(
                f"grid.coarse_step_s: must be a multiple of step_s={step_s}, got {coarse_step_s}"
            )
        t_first = epoch_s + first_s  # the first edge on the fine clock
        t_coarse = math.ceil((epoch_s + max(coarse_after_h * 3600, first_s)) / coarse_step_s)
        t_coarse *= coarse_step_s  # first coarse edge (on the fine clock too)
        t_end = math.ceil((epoch_s + horizon_h * 3600) / coarse_step_s) * coarse_step_s
        n_coarse = round((t_end - t_coarse) / coarse_step_s)
        if n_coarse < 1:
            return fine
        n_fine = 1 + round((t_coarse - t_first) / step_s)
        return cls(
            now,
            n_fine + n_coarse,
            step_s,
            first_s if first_s != step_s else None,
            coarse_step_s,
            n_fine,
        )

    @property
    def durations_s(self) -> np.ndarray:
        d = np.full(self.n_steps, float(self.step_s))
        if self.coarse_step_s is not None and self.n_fine is not None:
            d[self.n_fine :] = float(self.coarse_step_s)
        if self.first_step_s is not None:
            d[0] = float(self.first_step_s)
        return d

    @property
    def durations_h(self) -> np.ndarray:
        """Length of each step [h]."""
        return self.durations_s / 3600.0

    @property
    def edges_s(self) -> np.ndarray:
        """Step boundaries in seconds after ``start`` (n_steps + 1 values)."""
        return np.concatenate(([0.0], np.cumsum(self.durations_s)))

    @property
    def times(self) -> pd.DatetimeIndex:
        """Start of each step (UTC)."""
        t0 = pd.Timestamp(self.start)
        return pd.DatetimeIndex(t0 + pd.to_timedelta(self.edges_s[:-1], unit="s"))

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=float(self.edges_s[-1]))

    @property
    def uniform(self) -> bool:
        """True if every step after the first lasts ``step_s``."""
        return self.coarse_step_s is None or self.n_fine == self.n_steps

    def fine(self) -> TimeGrid:
        """The grid over the same span with ``step_s`` steps only (the same first step)."""
        if self.uniform:
            return self
        n = round((self.edges_s[-1] - self.durations_s[0]) / self.step_s)
        return TimeGrid(self.start, 1 + n, self.step_s, self.first_step_s)

    def fine_index(self) -> np.ndarray:
        """For each step of :meth:`fine`, the step of this grid that contains it."""
        f = self.fine()
        return np.searchsorted(self.edges_s, f.edges_s[:-1], side="right") - 1

    def mean_of_fine(self, values: np.ndarray) -> np.ndarray:
        """Duration-weighted means over each step of values given per :meth:`fine` step."""
        v = np.asarray(values, dtype=float)
        if self.uniform:
            return v
        d = self.fine().durations_s
        idx = self.fine_index()
        num = np.bincount(idx, weights=v * d, minlength=self.n_steps)
        return num / self.durations_s


@dataclass(frozen=True)
class BatteryState:
    """The stationary battery now. Energy figures are kWh stored (DC side)."""

    capacity_kwh: float
    soc_frac: float  # now, 0..1 of capacity
    soc_min_frac: float
    soc_max_frac: float
    max_charge_kw: float  # AC side
    max_discharge_kw: float  # AC side
    charge_efficiency: float = 0.95  # stored kWh per AC kWh in
    discharge_efficiency: float = 0.95  # AC kWh out per stored kWh
    renewable_frac: float = 0.0  # share of the stored energy that came from PV
    terminal_value_krw_per_kwh: float | None = (
        None  # stored kWh left at the end; None = mean price x discharge eff.
    )


@dataclass(frozen=True)
class GridState:
    """Grid connection, tariff and this billing month's demand peak."""

    import_limit_kw: float | np.ndarray  # scalar or one value per step
    export_limit_kw: float
    import_price_krw_per_kwh: np.ndarray  # one value per step (time of use)
    export_price_krw_per_kwh: float = 0.0
    demand_charge_krw_per_kw: float = 0.0  # per kW of new monthly peak
    peak_so_far_kw: float = 0.0  # peak already reached (and billed) this month


@dataclass(frozen=True)
class SessionNeed:
    """One car, plugged in now (``arrival <= grid.start``) or expected."""

    session_id: str
    charger_id: str
    connector_id: int
    arrival: datetime
    departure: datetime
    energy_kwh: float  # still wanted by departure
    max_power_kw: float  # min(car, connector)
    min_power_kw: float = 0.0  # while charging (see Plan.first_step)
    priority: float = 1.0  # scales the unmet-energy penalty
    current_power_kw: float = 0.0  # power applied in the step before grid.start (for chatter)
    # Uncertain departure: the stay (from ``arrival``) is lognormal with median
    # ``stay_median_s`` and ``stay_sigma`` (sigma of ln stay); ``departure`` is then the
    # last moment the plan may use, and a kWh delivered in a step is worth its chance that
    # the car is still plugged in then (given that it is at the plan start): each kWh
    # costs ``(1 - that chance)`` of an unmet kWh (dispatch.md, "Uncertain departure").
    stay_median_s: float | None = None
    stay_sigma: float = 0.0


@dataclass(frozen=True)
class PowerGroup:
    """Connectors that share one limit: a charger's total, a DC cabinet, an AC phase."""

    name: str
    members: tuple[tuple[str, int], ...]  # (charger_id, connector_id)
    max_power_kw: float | np.ndarray  # scalar or one value per step


# re100: grid energy into the battery costs 2 % of a tier-2 kWh more than grid energy
# straight into a car (200 points = 2,000 KRW of tier 3 per kWh), so the battery is not
# filled from the cheap night grid to save money (dispatch.md, "Grid into the battery").
RE100_GRID_TO_BATTERY_PREMIUM = 0.02
# re100 counts on this share of the expected energy of cars still to come
# (megastation.control.needs.expected_sessions; cost counts on all of it). Losses are lopsided under re100:
# counting on cars that do not come makes the plan store the night grid for them and
# export the PV they were to take (green lost), while cars that come uncounted only cost
# grid energy at a dearer hour (money). Measured on three simulated weeks of the seed
# station (seeds 1-3; benchmarks/dispatch.py's seed 42 is the held-out check), share of
# the perfect-foresight gain captured (pro-rata accounting), perfect PV / pvlib PV:
#   with the grid-to-battery premium above: 0.3 93 %, 0.5 98.2 / 94.4 %,
#   0.7 98.4 / 96.9 %, 1.0 98.0 / 96.7 %;
#   without it: 0.2 86 %, 0.4 95 %, 0.5 95 / 93 %, 0.6 94 %, 0.8 90 %, 1.0 80 %
#   (too little: stored PV is worth nothing again; too much: the battery fills from
#   the night grid).
RE100_EXPECTED_SHARE = 0.7


@dataclass(frozen=True)
class Policy:
    """Objective weights, in points per unit. Tiers are far apart (see dispatch.md)."""

    unmet_weight_per_kwh: float = 1e6  # tier 1: energy a car asked for and did not get
    grid_to_ev_weight_per_kwh: float = 1e4  # tier 2: grid (and grey battery) energy into cars
    cost_weight_per_krw: float = 1e-1  # tier 3: money (energy by time of use, demand charge)
    early_weight_per_kwh: float = 1e-2  # tier 4: later in a car's stay costs more
    chatter_weight_per_kw: float = 1e-4  # tier 5: step-to-step change of power (see below)
    # Chatter of each car at every step (one more column and row per car-step, solve
    # several times slower); False: each car's change from its current power in the
    # first step, and step-to-step changes of total car power and battery power.
    chatter_per_session: bool = False
    battery_wear_krw_per_kwh: float = 0.0  # throughput cost (AC kWh discharged)
    # PV kWh left in the battery at the horizon end, as a share of an avoided grid kWh.
    # 0 by default: stored energy already has its KRW terminal value, and a green label
    # worth something after the horizon makes re-solves disagree on labels (dispatch.md).
    green_terminal_frac: float = 0.0
    beyond_horizon_frac: float = 0.5  # energy that could still come after the horizon is
    # worth this share of a grid kWh (tier 2 + mean price): PV now yes, grid now waits
    # Grid energy into the battery costs this share of a tier-2 kWh more than grid
    # energy straight into a car (dispatch.md, "Grid into the battery under re100").
    grid_to_battery_premium: float = 0.0
    # Share of the expected energy of cars still to come that the plan counts on
    # (megastation.control.needs.expected_sessions): below 1 hedges against cars that do not come.
    expected_share: float = 1.0
    name: str = "custom"

    @classmethod
    def re100(cls) -> Policy:
        return cls(
            grid_to_battery_premium=RE100_GRID_TO_BATTERY_PREMIUM,
            expected_share=RE100_EXPECTED_SHARE,
            name="re100",
        )

    @classmethod
    def cost(cls) -> Policy:
        return cls(grid_to_ev_weight_per_kwh=1e-1, cost_weight_per_krw=1.0, name="cost")

    @classmethod
    def of(cls, policy: str | Policy) -> Policy:
        if isinstance(policy, Policy):
            return policy
        if policy == "re100":
            return cls.re100()
        if policy == "cost":
            return cls.cost()
        raise ProblemError(f"policy: must be 're100', 'cost' or a Policy, got {policy!r}")


@dataclass(frozen=True)
class Problem:
    """Everything :func:`solve` needs; arrays have one value per step of ``grid``."""

    grid: TimeGrid
    pv_kw: np.ndarray  # PV forecast (P50), AC
    site_load_kw: np.ndarray  # other site load
    grid_state: GridState
    sessions: tuple[SessionNeed, ...] = ()
    battery: BatteryState | None = None
    groups: tuple[PowerGroup, ...] = ()
    pv_p10_kw: np.ndarray | None = None  # pessimistic forecast; informational for now
    uncontrolled_kw: np.ndarray | None = None  # loads outside control, added to site load
    policy: str | Policy = "re100"


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SetPoints:
    """What the controller applies for the first step."""

    start: datetime
    duration_s: float
    session_kw: dict[str, float]  # by session_id
    # the battery's AC power, signed as the LP sees it: + charge, - discharge. Devices,
    # control records and exports use the opposite sign (+ discharge): use
    # ``battery_setpoint_kw`` for them.
    battery_net_charge_kw: float
    grid_import_kw: float
    grid_export_kw: float
    curtailed_kw: float

    @property
    def battery_setpoint_kw(self) -> float:
        """The battery set point in the device convention [kW]: + discharge, - charge."""
        return -self.battery_net_charge_kw


@dataclass(frozen=True)
class Plan:
    """The optimal plan. Arrays are per step (``soc_frac`` per step boundary)."""

    problem: Problem = field(repr=False)
    session_ids: tuple[str, ...]
    session_kw: np.ndarray  # n_sessions x n_steps, average power of each step
    battery_charge_kw: np.ndarray
    battery_discharge_kw: np.ndarray
    grid_import_kw: np.ndarray
    grid_export_kw: np.ndarray
    pv_used_kw: np.ndarray  # PV to cars, site load, battery and export
    curtailed_kw: np.ndarray
    soc_frac: np.ndarray  # n_steps + 1
    battery_renewable_kwh: np.ndarray  # n_steps + 1, PV-origin energy stored
    ev_renewable_kw: np.ndarray  # PV and green battery energy into cars, per step
    ev_grid_kw: np.ndarray  # grid and grey battery energy into cars, per step
    load_shed_kw: np.ndarray  # site load that could not be served (should be 0)
    delivered_kwh: np.ndarray  # per session, by departure or horizon end
    unmet_kwh: np.ndarray  # per session: energy_kwh - delivered_kwh
    renewable_frac: np.ndarray  # per session, share of delivered energy that is renewable
    flows_kw: dict[str, np.ndarray] = field(repr=False)  # every split flow, per step
    status: str = "optimal"
    objective_parts: dict[str, float] = field(default_factory=dict)
    build_time_s: float = 0.0
    solve_time_s: float = 0.0

    @property
    def ev_kw(self) -> np.ndarray:
        """Total power into cars per step [kW]."""
        return self.session_kw.sum(axis=0)

    def first_step(self) -> SetPoints:
        """Set points of step 0. A car's power below its ``min_power_kw`` (a step
        average the car cannot hold) is rounded to 0 or up to the minimum, whichever is
        nearer."""
        kw = self.session_kw[:, 0].copy() if self.session_kw.size else np.zeros(0)
        for i, s in enumerate(self.problem.sessions):
            if s.min_power_kw > 0 and 0 < kw[i] < s.min_power_kw:
                kw[i] = s.min_power_kw if kw[i] >= s.min_power_kw / 2 else 0.0
        return SetPoints(
            start=self.problem.grid.start,
            duration_s=float(self.problem.grid.durations_s[0]),
            session_kw={sid: float(v) for sid, v in zip(self.session_ids, kw, strict=True)},
            battery_net_charge_kw=float(self.battery_charge_kw[0] - self.battery_discharge_kw[0]),
            grid_import_kw=float(self.grid_import_kw[0]),
            grid_export_kw=float(self.grid_export_kw[0]),
            curtailed_kw=float(self.curtailed_kw[0]),
        )


# --------------------------------------------------------------------------- validation


def _array(name: str, value: object, n: int, *, minimum: float | None = 0.0) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ProblemError(f"{name}: must have one value per step ({n}), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ProblemError(f"{name}[{bad[0]}]: must be finite, got {arr[bad[0]]}")
    if minimum is not None:
        low = np.flatnonzero(arr < minimum)
        if low.size:
            raise ProblemError(f"{name}[{low[0]}]: must be >= {minimum:g}, got {arr[low[0]]:g}")
    return arr


def _number(name: str, value: float, *, lo: float = 0.0, hi: float | None = None) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ProblemError(f"{name}: must be finite, got {v}")
    if v < lo:
        raise ProblemError(f"{name}: must be >= {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise ProblemError(f"{name}: must be <= {hi:g}, got {v:g}")
    return v


def validate(problem: Problem) -> None:
    """Raise :class:`ProblemError` naming the first inconsistent field."""
    n = problem.grid.n_steps
    _array("pv_kw", problem.pv_kw, n)
    _array("site_load_kw", problem.site_load_kw, n)
    if problem.pv_p10_kw is not None:
        _array("pv_p10_kw", problem.pv_p10_kw, n)
    if problem.uncontrolled_kw is not None:
        _array("uncontrolled_kw", problem.uncontrolled_kw, n)
    g = problem.grid_state
    _array("grid_state.import_limit_kw", g.import_limit_kw, n)
    _number("grid_state.export_limit_kw", g.export_limit_kw)
    _array("grid_state.import_price_krw_per_kwh", g.import_price_krw_per_kwh, n, minimum=None)
    _number("grid_state.export_price_krw_per_kwh", g.export_price_krw_per_kwh, lo=-math.inf)
    _number("grid_state.demand_charge_krw_per_kw", g.demand_charge_krw_per_kw)
    _number("grid_state.peak_so_far_kw", g.peak_so_far_kw)
    b = problem.battery
    if b is not None:
        _number("battery.capacity_kwh", b.capacity_kwh)
        _number("battery.soc_min_frac", b.soc_min_frac, hi=1)
        _number("battery.soc_max_frac", b.soc_max_frac, hi=1)
        if b.soc_min_frac > b.soc_max_frac:
            raise ProblemError("battery.soc_min_frac: must not exceed soc_max_frac")
        soc = _number("battery.soc_frac", b.soc_frac, hi=1)
        if not b.soc_min_frac - 1e-9 <= soc <= b.soc_max_frac + 1e-9:
            raise ProblemError(
                f"battery.soc_frac: must lie in [soc_min_frac, soc_max_frac] = "
                f"[{b.soc_min_frac:g}, {b.soc_max_frac:g}], got {soc:g}"
            )
        _number("battery.max_charge_kw", b.max_charge_kw)
        _number("battery.max_discharge_kw", b.max_discharge_kw)
        for name in ("charge_efficiency", "discharge_efficiency"):
            v = _number(f"battery.{name}", getattr(b, name), hi=1)
            if v <= 0:
                raise ProblemError(f"battery.{name}: must be > 0, got {v:g}")
        _number("battery.renewable_frac", b.renewable_frac, hi=1)
        if b.terminal_value_krw_per_kwh is not None:
            _number(
                "battery.terminal_value_krw_per_kwh", b.terminal_value_krw_per_kwh, lo=-math.inf
            )
    start = problem.grid.start
    seen: set[str] = set()
    for i, s in enumerate(problem.sessions):
        where = f"sessions[{i}]"
        if s.session_id in seen:
            raise ProblemError(f"{where}.session_id: duplicate {s.session_id!r}")
        seen.add(s.session_id)
        try:
            arr, dep = utc(s.arrival), utc(s.departure)
        except ValueError as exc:
            raise ProblemError(f"{where}.arrival/departure: {exc}") from None
        if dep <= start:
            raise ProblemError(
                f"{where}.departure: {dep.isoformat()} is not after the grid start {start.isoformat()}"
            )
        if dep <= arr:
            raise ProblemError(f"{where}.departure: must be after arrival {arr.isoformat()}")
        _number(f"{where}.energy_kwh", s.energy_kwh)
        _number(f"{where}.max_power_kw", s.max_power_kw)
        _number(f"{where}.min_power_kw", s.min_power_kw, hi=s.max_power_kw)
        _number(f"{where}.priority", s.priority)
        _number(f"{where}.current_power_kw", s.current_power_kw)
        _number(f"{where}.stay_sigma", s.stay_sigma)
        if s.stay_median_s is not None:
            _number(f"{where}.stay_median_s", s.stay_median_s, lo=1.0)
    for i, grp in enumerate(problem.groups):
        _array(f"groups[{i}].max_power_kw", grp.max_power_kw, n)
    Policy.of(problem.policy)


# --------------------------------------------------------------------------- model

# Per-step variable blocks, each n_steps long (see dispatch.md).
_BLOCKS = (
    "pv_ev", "pv_load", "pv_bat", "pv_exp", "curt",
    "gr_ev", "gr_load", "gr_bat",
    "bg_ev", "bg_load", "bg_exp", "by_ev", "by_load", "by_exp", "bo_ev", "bo_load", "bo_exp",
    "shed", "soc_kwh", "green_kwh", "old_kwh", "d_ev", "d_bat",
)  # fmt: skip
_B = {name: i for i, name in enumerate(_BLOCKS)}
# battery discharge: green pool, grey bought within the horizon, grey from before it
_DISCHARGE = (
    "bg_ev", "bg_load", "bg_exp", "by_ev", "by_load", "by_exp", "bo_ev", "bo_load", "bo_exp",
)  # fmt: skip
_EXPORT = ("pv_exp", "bg_exp", "by_exp", "bo_exp")
_TO_EV = ("pv_ev", "gr_ev", "bg_ev", "by_ev", "bo_ev")
_BAT_NET = (("pv_bat", 1.0), ("gr_bat", 1.0), *((n, -1.0) for n in _DISCHARGE))


class _Rows:
    """Collects COO triplets and right-hand sides of one constraint family."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.rhs: list[np.ndarray] = []
        self.n = 0

    def add(self, n_rows: int, rhs: np.ndarray) -> int:
        """Reserve ``n_rows`` rows; returns the first row index."""
        first = self.n
        self.n += n_rows
        self.rhs.append(np.broadcast_to(np.asarray(rhs, dtype=float), (n_rows,)))
        return first

    def coef(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray | float) -> None:
        rows = np.asarray(rows)
        self.r.append(rows)
        self.c.append(np.asarray(cols))
        self.v.append(np.broadcast_to(np.asarray(vals, dtype=float), rows.shape))

    def matrix(self, n_cols: int) -> tuple[sp.csr_matrix, np.ndarray]:
        if not self.n:
            return sp.csr_matrix((0, n_cols)), np.zeros(0)
        a = sp.coo_matrix(
            (np.concatenate(self.v), (np.concatenate(self.r), np.concatenate(self.c))),
            shape=(self.n, n_cols),
        ).tocsr()
        return a, np.concatenate(self.rhs)


def _session_windows(problem: Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Availability (fraction of each step plugged in), progress through the stay at each
    step's midpoint, and the energy still wanted within the horizon. Dense S x T."""
    grid = problem.grid
    edges = grid.edges_s
    t0 = grid.start.timestamp()
    arr = np.array([utc(s.arrival).timestamp() - t0 for s in problem.sessions])
    dep = np.array([utc(s.departure).timestamp() - t0 for s in problem.sessions])
    lo = np.maximum(edges[None, :-1], arr[:, None])
    hi = np.minimum(edges[None, 1:], dep[:, None])
    avail = np.clip(hi - lo, 0.0, None) / grid.durations_s[None, :]
    mid = 0.5 * (edges[:-1] + edges[1:])
    progress = np.clip((mid[None, :] - arr[:, None]) / (dep - arr)[:, None], 0.0, 1.0)
    return avail, progress, dep


def _leave_risk(problem: Problem, ps: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Per session pair: the chance that the car has left by the step's midpoint, given
    that it is plugged in at the plan start (0 for sessions with a known departure)."""
    risk = np.zeros(ps.size)
    sessions = problem.sessions
    unsure = [i for i, s in enumerate(sessions) if s.stay_sigma > 0 and s.stay_median_s]
    if not unsure:
        return risk
    grid = problem.grid
    t0 = grid.start.timestamp()
    mid = t0 + 0.5 * (grid.edges_s[:-1] + grid.edges_s[1:])
    arr = np.array([utc(s.arrival).timestamp() for s in sessions])
    med = np.array([s.stay_median_s or 1.0 for s in sessions])
    sig = np.array([max(s.stay_sigma, 1e-9) for s in sessions])
    sel = np.isin(ps, unsure)
    i, t = ps[sel], pt[sel]

    def survival(elapsed_s: np.ndarray) -> np.ndarray:
        z = np.log(np.maximum(elapsed_s, 1.0) / med[i]) / sig[i]
        return 0.5 * erfc(z / math.sqrt(2.0))

    now = survival(np.maximum(t0 - arr[i], 0.0))
    later = survival(mid[t] - arr[i])
    risk[sel] = np.clip(1.0 - later / np.maximum(now, 1e-12), 0.0, 1.0)
    return risk


def solve(problem: Problem) -> Plan:
    """Optimal dispatch of ``problem`` (see dispatch.md). Pure; raises ProblemError."""
    t_build = time.perf_counter()
    validate(problem)
    pol = Policy.of(problem.policy)
    grid = problem.grid
    T = grid.n_steps
    dt = grid.durations_h
    steps = np.arange(T)
    pv = np.asarray(problem.pv_kw, dtype=float)
    pv = np.where(pv < 1e-9, 0.0, pv)  # float dust (e.g. sin at sunrise) only slows HiGHS
    load = np.asarray(problem.site_load_kw, dtype=float).copy()
    if problem.uncontrolled_kw is not None:
        load = load + np.asarray(problem.uncontrolled_kw, dtype=float)
    gs = problem.grid_state
    price = np.asarray(gs.import_price_krw_per_kwh, dtype=float)
    imp_lim = np.broadcast_to(np.asarray(gs.import_limit_kw, dtype=float), (T,))

    b = problem.battery
    if b is not None and b.capacity_kwh > 0:
        cap = b.capacity_kwh
        e0 = b.soc_frac * cap
        e_min, e_max = b.soc_min_frac * cap, b.soc_max_frac * cap
        e0 = min(max(e0, e_min), e_max)
        g0 = b.renewable_frac * e0
        o0 = e0 - g0  # grey energy stored before the horizon (never charged in tier 2)
        eta_c, eta_d = b.charge_efficiency, b.discharge_efficiency
        ch_max, dis_max = b.max_charge_kw, b.max_discharge_kw
        term_val = (
            b.terminal_value_krw_per_kwh
            if b.terminal_value_krw_per_kwh is not None
            else float(price.mean()) * eta_d
        )
    else:
        cap = e0 = e_min = e_max = g0 = o0 = 0.0
        eta_c = eta_d = 1.0
        ch_max = dis_max = 0.0
        term_val = 0.0

    # ---- variables: per-step blocks, then peak, then session pairs, chatter, unmet
    nb = len(_BLOCKS)
    col = {name: i * T + steps for i, name in enumerate(_BLOCKS)}
    i_peak = nb * T
    S = len(problem.sessions)
    avail, progress, dep_s = _session_windows(problem)
    ps, pt = np.nonzero(avail > 1e-6)  # session pairs (plugged in > ~1 ms of the step)
    P = ps.size
    if pol.chatter_weight_per_kw <= 0:
        chat_pairs = np.zeros(0, dtype=int)
    elif pol.chatter_per_session:
        chat_pairs = np.arange(P)
    else:
        chat_pairs = np.flatnonzero(pt == 0)
    Z = chat_pairs.size
    i_pair = i_peak + 1 + np.arange(P)
    i_chat = i_peak + 1 + P + np.arange(Z)
    i_u1 = i_peak + 1 + P + Z + np.arange(S)
    i_u2 = i_u1 + S
    n_var = i_peak + 1 + P + Z + 2 * S

    lb = np.zeros(n_var)
    ub = np.full(n_var, np.inf)
    ub[col["curt"]] = pv
    ub[col["shed"]] = load
    for name in ("pv_bat", "gr_bat"):
        ub[col[name]] = ch_max
    for name in _DISCHARGE:
        ub[col[name]] = dis_max
    if not battery_may_export(pol, gs):
        for name in ("bg_exp", "by_exp", "bo_exp"):  # stored energy is never given away (#11)
            ub[col[name]] = 0.0
    lb[col["soc_kwh"]] = e_min
    ub[col["soc_kwh"]] = e_max
    ub[col["green_kwh"]] = e_max
    ub[col["old_kwh"]] = e_max
    pmax = np.array([s.max_power_kw for s in problem.sessions])
    ub[i_pair] = pmax[ps] * avail[ps, pt] if P else 0.0

    # energy wanted within the horizon: all of it if the car leaves inside, else what
    # cannot be delivered after the horizon end at full power (the rest is optional).
    want = np.array([s.energy_kwh for s in problem.sessions])
    after_h = np.clip(dep_s - grid.edges_s[-1], 0.0, None) / 3600.0
    must = np.clip(want - pmax * after_h, 0.0, None) if S else want
    ub[i_u1] = must
    ub[i_u2] = want - must

    # ---- objective
    c = np.zeros(n_var)
    w_grid, w_cost = pol.grid_to_ev_weight_per_kwh, pol.cost_weight_per_krw
    # tier 2, "grid energy into cars", is charged where grid energy enters: straight into
    # a car, or into the battery (grey, as the kWh it will give back); grey energy that
    # goes to the site load or export is credited back. So swapping labels (grid into
    # the battery while green leaves it for a car) never pays.
    c[col["gr_ev"]] += w_grid * dt
    c[col["gr_bat"]] += w_grid * eta_c * eta_d * (1.0 + pol.grid_to_battery_premium) * dt
    for name in ("by_load", "by_exp"):
        c[col[name]] -= w_grid * dt
    # grey energy stored before the horizon was never charged on entry: it costs what a
    # grid kWh costs when it goes to a car, and earns nothing when it goes to the site
    # load or export (a credit there made dumping it look renewable: dispatch.md).
    c[col["bo_ev"]] += w_grid * dt
    for name in ("gr_ev", "gr_load", "gr_bat"):
        c[col[name]] += w_cost * price * dt
    for name in _EXPORT:
        c[col[name]] -= w_cost * gs.export_price_krw_per_kwh * dt
    for name in _DISCHARGE:
        c[col[name]] += (w_cost * pol.battery_wear_krw_per_kwh + pol.chatter_weight_per_kw) * dt
    c[col["curt"]] += 0.1 * pol.chatter_weight_per_kw * dt  # export rather than curtail
    c[col["shed"]] += 10 * pol.unmet_weight_per_kwh * dt
    c[col["soc_kwh"][-1]] -= w_cost * term_val
    c[col["green_kwh"][-1]] -= w_grid * pol.green_terminal_frac * eta_d
    c[i_peak] = w_cost * gs.demand_charge_krw_per_kw
    prio = np.array([s.priority for s in problem.sessions])
    if P:
        c[i_pair] = pol.early_weight_per_kwh * dt[pt] * (0.5 + progress[ps, pt])
        c[i_chat] = pol.chatter_weight_per_kw
        # uncertain departures: a kWh is worth its chance that the car is still there
        c[i_pair] += _leave_risk(problem, ps, pt) * pol.unmet_weight_per_kwh * prio[ps] * dt[pt]
    # tier 5 on the aggregate car and battery power (one-sided rows below: 2w on the
    # increases, -w on the last value, +w on the first battery value)
    w_chat = pol.chatter_weight_per_kw
    c[col["d_ev"]] = 2 * w_chat
    c[col["d_bat"][1:]] = 2 * w_chat
    for name in _TO_EV:
        c[col[name][-1]] -= w_chat
    if T > 1:
        for name, v in _BAT_NET:
            c[col[name][-1]] -= w_chat * v
            c[col[name][0]] += w_chat * v
    # shortfall: energy needed within the horizon at full weight, the rest discounted
    c[i_u1] = pol.unmet_weight_per_kwh * prio
    c[i_u2] = pol.beyond_horizon_frac * (w_grid + w_cost * float(price.mean())) * prio

    # ---- equality constraints
    eq = _Rows()
    r = eq.add(T, pv) + steps  # PV: pv_ev + pv_load + pv_bat + pv_exp + curt = pv
    for name in ("pv_ev", "pv_load", "pv_bat", "pv_exp", "curt"):
        eq.coef(r, col[name], 1.0)
    r = eq.add(T, load) + steps  # site load
    for name in ("pv_load", "gr_load", "bg_load", "by_load", "bo_load", "shed"):
        eq.coef(r, col[name], 1.0)
    r = eq.add(T, 0.0) + steps  # cars: sum_s p - supplies = 0
    for name in _TO_EV:
        eq.coef(r, col[name], -1.0)
    eq.coef(r[pt], i_pair, 1.0)
    # stored energy: E_t - E_{t-1} - eta_c dt (pv_bat + gr_bat) + dt/eta_d (discharge) = 0
    rhs = np.zeros(T)
    rhs[0] = e0
    r = eq.add(T, rhs) + steps
    eq.coef(r, col["soc_kwh"], 1.0)
    eq.coef(r[1:], col["soc_kwh"][:-1], -1.0)
    for name in ("pv_bat", "gr_bat"):
        eq.coef(r, col[name], -eta_c * dt)
    for name in _DISCHARGE:
        eq.coef(r, col[name], dt / eta_d)
    rhs = np.zeros(T)
    rhs[0] = g0
    r = eq.add(T, rhs) + steps  # renewable content, charged only by PV
    eq.coef(r, col["green_kwh"], 1.0)
    eq.coef(r[1:], col["green_kwh"][:-1], -1.0)
    eq.coef(r, col["pv_bat"], -eta_c * dt)
    for name in ("bg_ev", "bg_load", "bg_exp"):
        eq.coef(r, col[name], dt / eta_d)
    rhs = np.zeros(T)
    rhs[0] = o0
    r = eq.add(T, rhs) + steps  # grey energy from before the horizon, only leaves
    eq.coef(r, col["old_kwh"], 1.0)
    eq.coef(r[1:], col["old_kwh"][:-1], -1.0)
    for name in ("bo_ev", "bo_load", "bo_exp"):
        eq.coef(r, col[name], dt / eta_d)
    if S:  # per session: delivered + unmet = wanted
        r = eq.add(S, want)
        eq.coef(r + ps, i_pair, dt[pt])
        eq.coef(r + np.arange(S), i_u1, 1.0)
        eq.coef(r + np.arange(S), i_u2, 1.0)

    # ---- inequality constraints
    ub_rows = _Rows()
    r = ub_rows.add(T, imp_lim) + steps
    for name in ("gr_ev", "gr_load", "gr_bat"):
        ub_rows.coef(r, col[name], 1.0)
    r = ub_rows.add(T, gs.peak_so_far_kw) + steps  # import - peak_excess <= peak so far
    for name in ("gr_ev", "gr_load", "gr_bat"):
        ub_rows.coef(r, col[name], 1.0)
    ub_rows.coef(r, np.full(T, i_peak), -1.0)
    r = ub_rows.add(T, gs.export_limit_kw) + steps
    for name in _EXPORT:
        ub_rows.coef(r, col[name], 1.0)
    r = ub_rows.add(T, ch_max) + steps
    for name in ("pv_bat", "gr_bat"):
        ub_rows.coef(r, col[name], 1.0)
    r = ub_rows.add(T, dis_max) + steps
    for name in _DISCHARGE:
        ub_rows.coef(r, col[name], 1.0)
    r = ub_rows.add(T, 0.0) + steps  # green + old grey <= stored (new grey >= 0)
    ub_rows.coef(r, col["green_kwh"], 1.0)
    ub_rows.coef(r, col["old_kwh"], 1.0)
    ub_rows.coef(r, col["soc_kwh"], -1.0)
    # aggregate chatter, one-sided: ev[t] - ev[t-1] <= d_ev[t], bat[t] - bat[t-1] <= d_bat[t].
    # Total variation is sum |x[t] - x[t-1]| = 2 sum max(x[t] - x[t-1], 0) - (x[end] - x[0]),
    # so weighting the increases 2w and the end points -w/+w (objective, above) penalises
    # every change by w with half the rows of the two-sided form.
    cur = np.array([s.current_power_kw for s in problem.sessions])
    cur_sum = float(cur.sum()) if S else 0.0
    rhs = np.zeros(T)
    rhs[0] = cur_sum
    r = ub_rows.add(T, rhs) + steps
    for name in _TO_EV:
        ub_rows.coef(r, col[name], 1.0)
        ub_rows.coef(r[1:], col[name][:-1], -1.0)
    ub_rows.coef(r, col["d_ev"], -1.0)
    r = ub_rows.add(T - 1, 0.0) + steps[:-1]
    for name, v in _BAT_NET:
        ub_rows.coef(r, col[name][1:], v)
        ub_rows.coef(r, col[name][:-1], -v)
    ub_rows.coef(r, col["d_bat"][1:], -1.0)
    if Z:
        # per car: p[s,t] - p[s,t-1] <= z (every step; first pair against current power)
        # or |p[s,0] - current| <= z (first step only)
        cp = chat_pairs
        first = np.ones(P, dtype=bool)
        first[1:] = ps[1:] != ps[:-1]
        rhs = np.where(first[cp] & (pt[cp] == 0), cur[ps[cp]], 0.0)
        r = ub_rows.add(Z, rhs) + np.arange(Z)
        ub_rows.coef(r, i_pair[cp], 1.0)
        ub_rows.coef(r, i_chat, -1.0)
        nf = np.flatnonzero(~first[cp])
        ub_rows.coef(r[nf], i_pair[cp[nf] - 1], -1.0)
        if not pol.chatter_per_session:
            r = ub_rows.add(Z, -rhs) + np.arange(Z)
            ub_rows.coef(r, i_pair[cp], -1.0)
            ub_rows.coef(r, i_chat, -1.0)
    if P:
        # power groups: sum of member sessions' power <= limit, per step
        keys = [(s.charger_id, s.connector_id) for s in problem.sessions]
        for grp in problem.groups:
            members = set(grp.members)
            in_grp = np.array([k in members for k in keys], dtype=bool)
            sel = np.flatnonzero(in_grp[ps])
            if not sel.size:
                continue
            lim = np.broadcast_to(np.asarray(grp.max_power_kw, dtype=float), (T,))
            r = ub_rows.add(T, lim)
            ub_rows.coef(r + pt[sel], i_pair[sel], 1.0)

    a_eq, b_eq = eq.matrix(n_var)
    a_ub, b_ub = ub_rows.matrix(n_var)
    build_s = time.perf_counter() - t_build

    t_solve = time.perf_counter()
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.column_stack([lb, ub]),
        method="highs",
    )
    solve_s = time.perf_counter() - t_solve
    if res.x is None:  # cannot happen for a validated problem: every slack is free
        raise RuntimeError(f"dispatch LP failed: {res.status} {res.message}")
    x = res.x

    f = {name: np.clip(x[col[name]], 0.0, None) for name in _BLOCKS}
    session_kw = np.zeros((S, T))
    if P:
        session_kw[ps, pt] = np.clip(x[i_pair], 0.0, None)
    delivered = session_kw @ dt
    charge = f["pv_bat"] + f["gr_bat"]
    dis_green = f["bg_ev"] + f["bg_load"] + f["bg_exp"]
    dis_grey = sum(f[n] for n in ("by_ev", "by_load", "by_exp", "bo_ev", "bo_load", "bo_exp"))
    imp = f["gr_ev"] + f["gr_load"] + f["gr_bat"]
    exp_ = sum(f[n] for n in _EXPORT)
    ev_green = f["pv_ev"] + f["bg_ev"]
    ev_grid = f["gr_ev"] + f["by_ev"] + f["bo_ev"]
    ev_tot = ev_green + ev_grid
    green_share = np.divide(ev_green, ev_tot, out=np.zeros(T), where=ev_tot > 1e-9)
    ren_kwh = session_kw @ (green_share * dt)
    soc = np.concatenate(([e0], f["soc_kwh"])) / cap if cap else np.zeros(T + 1)
    green = np.concatenate(([g0], f["green_kwh"]))
    unmet = np.clip(want - delivered, 0.0, None) if S else np.zeros(0)

    parts = {
        "unmet_kwh": float(unmet.sum()),
        "grid_to_ev_kwh": float(ev_grid @ dt),
        "renewable_to_ev_kwh": float(ev_green @ dt),
        "energy_cost_krw": float(price @ (imp * dt)),
        "export_revenue_krw": float(gs.export_price_krw_per_kwh * (exp_ @ dt)),
        "demand_charge_krw": float(gs.demand_charge_krw_per_kw * x[i_peak]),
        "new_peak_kw": float(max(gs.peak_so_far_kw, imp.max(initial=0.0))),
        "terminal_value_krw": float(term_val * (soc[-1] * cap)),
        "load_shed_kwh": float(f["shed"] @ dt),
        "chatter_kw": float(x[i_chat].sum()) if Z else 0.0,
        "objective": float(res.fun) + w_chat * cur_sum,  # + the constant of the chatter identity
    }
    status = {0: "optimal", 1: "iteration_limit", 4: "numerical_difficulties"}.get(
        res.status, f"status_{res.status}"
    )
    return Plan(
        problem=problem,
        session_ids=tuple(s.session_id for s in problem.sessions),
        session_kw=session_kw,
        battery_charge_kw=charge,
        battery_discharge_kw=dis_green + dis_grey,
        grid_import_kw=imp,
        grid_export_kw=exp_,
        pv_used_kw=pv - f["curt"],
        curtailed_kw=f["curt"],
        soc_frac=soc,
        battery_renewable_kwh=green,
        ev_renewable_kw=ev_green,
        ev_grid_kw=ev_grid,
        load_shed_kw=f["shed"],
        delivered_kwh=delivered,
        unmet_kwh=unmet,
        renewable_frac=np.divide(ren_kwh, delivered, out=np.zeros(S), where=delivered > 1e-9),
        flows_kw=f,
        status=status,
        objective_parts=parts,
        build_time_s=build_s,
        solve_time_s=solve_s,
    )


# --------------------------------------------------------------------------- station inputs


def connector_limit_kw(station: Station, charger_id: str, connector_id: int) -> float:
    """A connector's power limit [kW] from the station config (KeyError if unknown)."""
    ch = station.charger(charger_id)
    if ch is None or connector_id not in ch.connector_ids:
        raise KeyError(f"no connector {charger_id}/{connector_id} in {station.source}")
    return ch.connector_power_kw


def battery_may_export(policy: Policy, grid_state: GridState) -> bool:
    """Stored energy may go to the grid only when export pays and the policy puts money
    first (``cost``): a zero or negative export price makes it a gift, and under ``re100``
    stored energy is for cars (#11: the battery was seen emptied into the grid at night)."""
    price = np.asarray(grid_state.export_price_krw_per_kwh, dtype=float)
    return (
        bool(np.all(price > 0)) and policy.cost_weight_per_krw >= policy.grid_to_ev_weight_per_kwh
    )


def station_groups(station: Station) -> tuple[PowerGroup, ...]:
    """Power groups of a station: each multi-connector charger's total and each cabinet."""
    groups = []
    for ch in station.chargers:
        if ch.connectors > 1 and ch.connector_power_kw * ch.connectors > ch.max_power_kw:
            groups.append(
                PowerGroup(
                    f"charger:{ch.id}", tuple((ch.id, k) for k in ch.connector_ids), ch.max_power_kw
                )
            )
    for cab in station.cabinets:
        members = tuple(
            (ch.id, k) for ch in station.chargers if ch.cabinet == cab.id for k in ch.connector_ids
        )
        groups.append(PowerGroup(f"cabinet:{cab.id}", members, cab.max_power_kw))
    return tuple(groups)


def station_grid_state(
    station: Station, grid: TimeGrid, *, peak_so_far_kw: float = 0.0
) -> GridState:
    """Grid limits, time-of-use prices per step and demand charge from the station."""
    tariff = Tariff(station.tariff, station.site.timezone)
    return GridState(
        import_limit_kw=station.site.grid_import_limit_kw,
        export_limit_kw=station.site.grid_export_limit_kw,
        import_price_krw_per_kwh=grid.mean_of_fine(tariff.price_krw_per_kwh(grid.fine().times)),
        export_price_krw_per_kwh=tariff.export_price_krw_per_kwh,
        demand_charge_krw_per_kw=tariff.demand_charge_krw_per_kw_month,
        peak_so_far_kw=peak_so_far_kw,
    )


def station_battery(
    station: Station, soc_frac: float | None = None, renewable_frac: float = 0.0
) -> BatteryState | None:
    """The station battery at ``soc_frac`` (None = its configured initial SoC)."""
    bc = station.battery
    if bc is None:
        return None
    return BatteryState(
        capacity_kwh=bc.capacity_kwh,
        soc_frac=bc.initial_soc_frac if soc_frac is None else soc_frac,
        soc_min_frac=bc.soc_min_frac,
        soc_max_frac=bc.soc_max_frac,
        max_charge_kw=bc.max_charge_kw,
        max_discharge_kw=bc.max_discharge_kw,
        charge_efficiency=bc.charge_efficiency,
        discharge_efficiency=bc.discharge_efficiency,
        renewable_frac=renewable_frac,
    )
