"""Preconditions of a dispatch :class:`~megastation.dispatch.problem.Problem`: arrays
finite and one value per step, capacities and limits >= 0, state of charge within its
bounds, every departure after the grid start and after its arrival.

The sessions are checked as arrays (a plan has tens of them, and the LP needs their
figures as arrays anyway: :class:`SessionFigures`); only when one fails are they checked
one by one, so the error names the first bad field as it always has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from megastation.core.clock import utc
from megastation.dispatch.policy import Policy
from megastation.dispatch.problem import Problem, ProblemError


def _array(name: str, value: object, n: int, *, minimum: float | None = 0.0) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ProblemError(f"{name}: must have one value per step ({n}), got shape {arr.shape}")
    if np.isfinite(arr).all() and (minimum is None or not arr.size or arr.min() >= minimum):
        return arr
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


@dataclass(frozen=True)
class SessionFigures:
    """The sessions' figures, one entry per session in the problem's order."""

    arrival_s: np.ndarray  # POSIX time [s]
    departure_s: np.ndarray  # POSIX time [s]
    energy_kwh: np.ndarray
    max_power_kw: np.ndarray
    priority: np.ndarray
    current_power_kw: np.ndarray
    stay_sigma: np.ndarray
    stay_median_s: np.ndarray  # NaN where not given


def validate(problem: Problem) -> SessionFigures:
    """Raise :class:`ProblemError` naming the first inconsistent field; else the
    sessions' figures (checked) as arrays."""
    n = problem.grid.n_steps
    _array("pv_kw", problem.pv_kw, n)
    _array("site_load_kw", problem.site_load_kw, n)
    if problem.pv_p10_kw is not None:
        _array("pv_p10_kw", problem.pv_p10_kw, n)
    if problem.uncontrolled_kw is not None:
        _array("uncontrolled_kw", problem.uncontrolled_kw, n)
    if problem.soc_floor_kwh is not None:
        _array("soc_floor_kwh", problem.soc_floor_kwh, n)
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
    figures, ok = _session_figures(problem)
    if not ok:
        for i, s in enumerate(problem.sessions):
            _check_session(problem, i, s)  # raises at the first bad one
        if figures is None:
            raise ProblemError("sessions: every figure must be a number")
    for i, grp in enumerate(problem.groups):
        _array(f"groups[{i}].max_power_kw", grp.max_power_kw, n)
    Policy.of(problem.policy)
    return figures


def _session_figures(problem: Problem) -> tuple[SessionFigures | None, bool]:
    """The sessions' figures (None if they are not numbers) and whether every session
    passes :func:`_check_session`. POSIX times order as the datetimes do (a float keeps
    microseconds apart)."""
    ss = problem.sessions
    try:
        nums = np.array(
            [
                (s.arrival.timestamp(), s.departure.timestamp(), s.energy_kwh, s.max_power_kw,
                 s.priority, s.current_power_kw, s.stay_sigma, s.min_power_kw,
                 math.nan if s.stay_median_s is None else s.stay_median_s)
                for s in ss
            ],
            dtype=float,
        ).reshape(len(ss), 9)  # fmt: skip
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None, False
    arr, dep, energy, pmax, prio, cur, sigma, pmin, median = nums.T
    figures = SessionFigures(
        arrival_s=arr, departure_s=dep, energy_kwh=energy, max_power_kw=pmax,
        priority=prio, current_power_kw=cur, stay_sigma=sigma, stay_median_s=median,
    )  # fmt: skip
    if len({s.session_id for s in ss}) < len(ss):
        return figures, False
    if any(s.arrival.tzinfo is None or s.departure.tzinfo is None for s in ss):
        return figures, False
    given = np.array([s.stay_median_s is not None for s in ss], dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN compares False: not ok
        ok = (
            (dep > problem.grid.start.timestamp())
            & (dep > arr)
            & np.isfinite(nums[:, 2:8]).all(axis=1)
            & (nums[:, 2:8] >= 0.0).all(axis=1)
            & (pmin <= pmax)
            & (~given | (np.isfinite(median) & (median >= 1.0)))
        )
    return figures, bool(ok.all())


def _check_session(problem: Problem, i: int, s) -> None:
    """Raise :class:`ProblemError` naming the first bad field of ``sessions[i]``."""
    where = f"sessions[{i}]"
    if any(o.session_id == s.session_id for o in problem.sessions[:i]):
        raise ProblemError(f"{where}.session_id: duplicate {s.session_id!r}")
    try:
        arr, dep = utc(s.arrival), utc(s.departure)
    except ValueError as exc:
        raise ProblemError(f"{where}.arrival/departure: {exc}") from None
    start = problem.grid.start
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
