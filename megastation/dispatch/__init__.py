"""Dispatch: an optimal plan for every car, the battery and the grid, as one sparse LP.

:func:`solve` is a pure function from a :class:`Problem` (time grid, PV forecast, site
load, battery, grid and tariff, car sessions, hardware power groups, policy) to a
:class:`Plan` (power per session and step, battery, grid, PV use and curtailment). The
model is documented in ``dispatch.md`` beside this package; the solver is HiGHS through
highspy (``highs``), warm-started from the previous plan's basis by a
:class:`WarmStart` the caller keeps (``keys`` names the LP's columns and rows for it);
:func:`solve_reference` is the same LP through :func:`scipy.optimize.linprog`.

Modules: ``problem`` (inputs and the plan), ``policy`` (every objective weight),
``validate`` (preconditions), ``lp`` (build and solve), ``highs`` and ``keys`` (the
solver call and its warm start), ``station`` (inputs from a station file).

Preconditions (checked, :class:`ProblemError` names the field): arrays are finite and
one value per step, capacities and limits are >= 0, state of charge lies within its
bounds, every departure is after the grid start and after its arrival.
Impossible wishes are not errors: the plan reports ``unmet_kwh`` per session.
"""

from megastation.dispatch.highs import WarmStart
from megastation.dispatch.lp import solve, solve_reference
from megastation.dispatch.policy import (
    RE100_EXPECTED_SHARE,
    RE100_GRID_TO_BATTERY_PREMIUM,
    Policy,
    battery_may_export,
)
from megastation.dispatch.problem import (
    BatteryState,
    GridState,
    Plan,
    PowerGroup,
    Problem,
    ProblemError,
    SessionNeed,
    SetPoints,
    TimeGrid,
)
from megastation.dispatch.station import (
    connector_limit_kw,
    station_battery,
    station_grid_state,
    station_groups,
)
from megastation.dispatch.validate import validate

__all__ = [
    "RE100_EXPECTED_SHARE",
    "RE100_GRID_TO_BATTERY_PREMIUM",
    "BatteryState",
    "GridState",
    "Plan",
    "Policy",
    "PowerGroup",
    "Problem",
    "ProblemError",
    "SessionNeed",
    "SetPoints",
    "TimeGrid",
    "WarmStart",
    "battery_may_export",
    "connector_limit_kw",
    "solve",
    "solve_reference",
    "station_battery",
    "station_grid_state",
    "station_groups",
    "validate",
]
