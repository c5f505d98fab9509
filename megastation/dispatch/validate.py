"""Preconditions of a dispatch :class:`~megastation.dispatch.problem.Problem`: arrays
finite and one value per step, capacities and limits >= 0, state of charge within its
bounds, every departure after the grid start and after its arrival."""

from __future__ import annotations

import math

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
