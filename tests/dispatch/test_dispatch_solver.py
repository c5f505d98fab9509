"""The solve paths agree: highspy cold, highspy warm-started from another plan's basis,
and scipy's linprog (the reference, as dispatch was solved before highspy)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megastation.dispatch import TimeGrid, WarmStart, solve, solve_reference
from tests.dispatch.test_dispatch_invariants import T0, check, problems

# One WarmStart across examples: each solve starts from the basis of an unrelated problem.
SHARED = WarmStart()
REL_TOL = 1e-7
ABS_TOL = 0.1  # points: HiGHS tolerances (1e-7) x the unmet weight (1e6 per kWh)


def _same_optimum(a, b) -> None:
    fa, fb = a.objective_parts["objective"], b.objective_parts["objective"]
    assert abs(fa - fb) <= ABS_TOL + REL_TOL * abs(fb), (fa, fb)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_cold_warm_and_reference_reach_the_same_optimum(problem):
    ref = solve_reference(problem)
    cold = solve(problem)
    warm = solve(problem, SHARED)
    _same_optimum(cold, ref)
    _same_optimum(warm, ref)
    check(warm)
    assert warm.status == cold.status == ref.status == "optimal"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from([60, 300, 840]))
def test_a_later_plan_of_the_same_cars_starts_warm_and_agrees(problem, later_s):
    """The next plan (a few minutes later, the grid re-aligned, one step's PV changed)
    is solved from the last basis, to the reference's optimum."""
    ws = WarmStart()
    solve(problem, ws)
    g = problem.grid
    start = g.start + timedelta(seconds=later_s)
    if any(s.departure <= start for s in problem.sessions):
        return
    grid = TimeGrid.aligned(start, g.edges_s[-1] / 3600.0, g.step_s)
    n = grid.n_steps
    pv = np.resize(np.asarray(problem.pv_kw), n) * 0.9
    nxt = replace(
        problem,
        grid=grid,
        pv_kw=pv,
        site_load_kw=np.resize(np.asarray(problem.site_load_kw), n),
        grid_state=replace(
            problem.grid_state,
            import_price_krw_per_kwh=np.resize(
                np.asarray(problem.grid_state.import_price_krw_per_kwh), n
            ),
        ),
        sessions=tuple(replace(s, arrival=min(s.arrival, start)) for s in problem.sessions),
    )
    warm = solve(nxt, ws)
    _same_optimum(warm, solve_reference(nxt))
    assert ws.solves == 2


def _full_lp_objective(problem) -> float:
    """The optimum of the whole LP, every column and row kept (what solve() hands HiGHS
    leaves fixed columns and empty rows out), through scipy's linprog."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    from megastation.dispatch import lp
    from megastation.dispatch.policy import Policy
    from megastation.dispatch.validate import validate

    m = lp._inputs(problem, Policy.of(problem.policy))
    v = lp._layout(problem, m, validate(problem))
    bounds, c = lp._bounds(problem, m, v), lp._objective(problem, m, v)
    eq, ub = lp._equalities(m, v), lp._inequalities(problem, m, v)
    r_eq, c_eq, v_eq, b_eq = eq.triplets()
    r_ub, c_ub, v_ub, b_ub = ub.triplets()
    a_eq = sp.csr_matrix((v_eq, (r_eq, c_eq)), shape=(eq.n, c.size))
    a_ub = sp.csr_matrix((v_ub, (r_ub, c_ub)), shape=(ub.n, c.size))
    r = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    assert r.status == 0, r.message
    cur = sum(s.current_power_kw for s in problem.sessions)
    return float(r.fun) + m.pol.chatter_weight_per_kw * cur  # as _plan adds it


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.booleans())
def test_leaving_fixed_columns_and_empty_rows_out_keeps_the_optimum(problem, pinned):
    """``pinned``: the battery's SOC window closed to one point, so its stored energy is a
    column fixed off zero (its coefficients move into the row bounds)."""
    b = problem.battery
    if pinned and b is not None:
        soc = b.soc_frac
        problem = replace(problem, battery=replace(b, soc_min_frac=soc, soc_max_frac=soc))
    plan = solve(problem)
    fa, fb = plan.objective_parts["objective"], _full_lp_objective(problem)
    assert abs(fa - fb) <= ABS_TOL + REL_TOL * abs(fb), (fa, fb)
    check(plan)


def test_a_model_highs_refuses_is_an_error_not_a_stale_solve():
    """A repeated matrix entry makes HiGHS refuse the model: solving whatever it held
    before would hand back another LP's plan."""
    import scipy.sparse as sp

    from megastation.dispatch.highs import Lp, solve_lp

    twice = sp.csc_matrix(
        (np.array([1.0, 2.0]), np.array([0, 0], dtype=np.int32), np.array([0, 2], dtype=np.int32)),
        shape=(1, 1),
    )
    lp = Lp(np.ones(1), twice, np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))
    with pytest.raises(ValueError, match="refused"):
        solve_lp(lp)


def test_a_need_below_the_solver_tolerance_is_still_solved():
    """HiGHS's presolve called this LP infeasible (a car wanting 6e-8 kWh, no grid, no PV,
    no battery; found by the random problems): cold and warm paths answer optimal."""
    from megastation.dispatch import GridState, Problem, SessionNeed

    car = SessionNeed("s0", "C0", 1, T0, T0 + timedelta(minutes=1), 5.960464477539063e-08, 1.0)
    gs = GridState(0.0, 0.0, np.full(5, 40.0), 0.0, 0.0, 0.0)
    problem = Problem(TimeGrid(T0, 5, 900), np.zeros(5), np.zeros(5), gs, (car,), None, ())
    for plan in (solve(problem), solve(problem, WarmStart()), solve_reference(problem)):
        assert plan.status == "optimal"
        check(plan)


def test_the_same_problem_again_needs_no_iterations():
    problem = _example()
    ws = WarmStart()
    first = solve(problem, ws)
    iters = ws.iterations
    assert iters > 0
    again = solve(problem, ws)
    assert ws.iterations == iters  # the carried-over basis is already optimal
    _same_optimum(again, first)
    np.testing.assert_allclose(again.session_kw, first.session_kw, atol=1e-9)


def _example():
    from megastation.dispatch import GridState, Problem, SessionNeed

    grid = TimeGrid(T0, 16, 900)
    gs = GridState(
        import_limit_kw=80.0,
        export_limit_kw=10.0,
        import_price_krw_per_kwh=np.linspace(60, 140, 16),
        export_price_krw_per_kwh=0.0,
        demand_charge_krw_per_kw=0.0,
        peak_so_far_kw=0.0,
    )
    cars = tuple(
        SessionNeed(
            session_id=f"s{i}",
            charger_id=f"C{i}",
            connector_id=1,
            arrival=T0,
            departure=T0 + timedelta(hours=2 + i),
            energy_kwh=20.0 + 5 * i,
            max_power_kw=50.0,
        )
        for i in range(3)
    )
    pv = np.clip(np.sin(np.linspace(0, np.pi, 16)) * 60, 0, None)
    return Problem(grid, pv, np.full(16, 5.0), gs, cars, None, (), policy="re100")


def test_a_process_solving_prints_nothing():
    """HiGHS prints a banner when a process makes its first instance; ours is silent
    (``megastation demo`` and the CLI print only their own lines)."""
    import subprocess
    import sys

    code = (
        "from megastation.dispatch import highs\n"
        "highs._new_highs(); highs._new_highs()\n"
        "print('done')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "done\n"
