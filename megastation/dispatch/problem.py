"""Dispatch inputs and outputs: the :class:`Problem` :func:`megastation.dispatch.solve` takes
and the :class:`Plan` it returns (time grid, battery, grid, car sessions, power groups).

Preconditions are checked by :func:`megastation.dispatch.validate.validate`;
:class:`ProblemError` names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from megastation.core.clock import utc

if TYPE_CHECKING:  # annotation only: policy.py imports ProblemError from here
    from megastation.dispatch.policy import Policy


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


_DATETIMES: dict[int, datetime] = {}  # _utc_at's memo: epoch us -> datetime (UTC)
_MAX_DATETIMES = 100_000  # a year of 15-minute steps is 35,040


def _utc_at(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the epoch, made once per time: a plan's
    step starts recur in every plan of the next hours (#15)."""
    got = _DATETIMES.get(us)
    if got is None:
        if len(_DATETIMES) >= _MAX_DATETIMES:  # a long-running loop: start afresh
            _DATETIMES.clear()
        got = _DATETIMES[us] = _EPOCH + timedelta(microseconds=us)
    return got


class ProblemError(ValueError):
    """A dispatch problem is inconsistent; the message names the field."""


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


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

    # The arrays below are computed once per grid (a plan asks for them dozens of times)
    # and read-only.

    @cached_property
    def durations_s(self) -> np.ndarray:
        d = np.full(self.n_steps, float(self.step_s))
        if self.coarse_step_s is not None and self.n_fine is not None:
            d[self.n_fine :] = float(self.coarse_step_s)
        if self.first_step_s is not None:
            d[0] = float(self.first_step_s)
        return _frozen(d)

    @cached_property
    def durations_h(self) -> np.ndarray:
        """Length of each step [h]."""
        return _frozen(self.durations_s / 3600.0)

    @cached_property
    def edges_s(self) -> np.ndarray:
        """Step boundaries in seconds after ``start`` (n_steps + 1 values)."""
        return _frozen(np.concatenate(([0.0], np.cumsum(self.durations_s))))

    @cached_property
    def times(self) -> pd.DatetimeIndex:
        """Start of each step (UTC, microseconds)."""
        return pd.DatetimeIndex(self.times_us.view("M8[us]"), dtype="datetime64[us, UTC]")

    @cached_property
    def times_us(self) -> np.ndarray:
        """Start of each step [microseconds since the epoch] (:attr:`times` as integers)."""
        t0_us = (self.start - _EPOCH) // _US  # exact (datetimes hold microseconds)
        return _frozen(t0_us + np.round(self.edges_s[:-1] * 1e6).astype(np.int64))

    @cached_property
    def starts(self) -> tuple[datetime, ...]:
        """:attr:`times` as datetimes (UTC), without pandas."""
        return tuple(_utc_at(us) for us in self.times_us.tolist())

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=float(self.edges_s[-1]))

    @property
    def uniform(self) -> bool:
        """True if every step after the first lasts ``step_s``."""
        return self.coarse_step_s is None or self.n_fine == self.n_steps

    def fine(self) -> TimeGrid:
        """The grid over the same span with ``step_s`` steps only (the same first step)."""
        return self._fine

    @cached_property
    def _fine(self) -> TimeGrid:
        if self.uniform:
            return self
        n = round((self.edges_s[-1] - self.durations_s[0]) / self.step_s)
        return TimeGrid(self.start, 1 + n, self.step_s, self.first_step_s)

    def fine_index(self) -> np.ndarray:
        """For each step of :meth:`fine`, the step of this grid that contains it."""
        return self._fine_index

    @cached_property
    def _fine_index(self) -> np.ndarray:
        f = self.fine()
        return _frozen(np.searchsorted(self.edges_s, f.edges_s[:-1], side="right") - 1)

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
    # A reserve: stored energy [kWh] the plan keeps at the end of each step (None or values
    # at or below the battery's floor: none). Soft: going below it costs
    # ``Policy.reserve_short_weight_per_kwh`` per kWh of the largest shortfall, so it gives
    # way to any car's energy, never to money or a grid kWh (dispatch.md, "Session 7").
    soc_floor_kwh: np.ndarray | None = None


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
