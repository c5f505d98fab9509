"""HiGHS through highspy: one LP in column-wise sparse form, solved cold or warm-started
from the basis of a previous, similar LP (:class:`WarmStart`).

The dispatch LP (:mod:`megastation.dispatch.lp`) changes little from one plan to the next:
the same cars, the same steps (shifted by one when a 15-minute edge passed), other
bounds and costs. A basis carried over by *key* (every column and row names what it
stands for: a flow block and the end of its step, a session and a step, ...) is close to
optimal for the next plan, so the dual simplex needs a fraction of the iterations of a
cold solve (measured in ``dispatch.md``, "Solver"). The optimum does not depend on the
start: warm and cold reach the same objective (the plan may be another vertex of the
same optimum when the LP is degenerate).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from megastation.dispatch.keys import TIME_BITS

_BS = highspy.HighsBasisStatus
_MS = highspy.HighsModelStatus
# Model statuses under the names the plans have always carried (scipy's linprog's).
_STATUS = {
    _MS.kOptimal: "optimal",
    _MS.kIterationLimit: "iteration_limit",
    _MS.kTimeLimit: "time_limit",
    _MS.kInfeasible: "infeasible",
    _MS.kUnbounded: "unbounded",
}
# HiGHS's dual simplex edge weights: 1 = Devex (HiGHS's own choice, -1, is dual steepest
# edge on these LPs). Chosen on the recorded warm-started LPs of a simulated day (11-17 %
# less HiGHS time, same objectives) and 14 simulated days of re100 and cost (every KPI
# within 0.11 %): dispatch.md, "Solver". Not bit-identical: a degenerate LP may end on
# another vertex of the same optimum.
DUAL_EDGE_WEIGHT_STRATEGY = 1
# HiGHS perturbs the costs in its dual simplex (multiplier 1) against stalling on
# degenerate LPs; from a carried-over basis the dispatch LP needs fewer iterations without
# it: 3 recorded sets of re100 LPs (811 warm solves) -29 % HiGHS CPU in sum (-19 to -32 %
# per set), mean iterations 101 -> 60, no cold retries, the same objectives to 1e-10; two
# sets of cost LPs (508) -2 %; cold solves alike (dispatch.md, "Solver").
DUAL_COST_PERTURBATION = 0.0
# Basic-variable code from getBasicVariables: col >= 0, row r is -(r + 1).
# A nonbasic column at its upper bound is told by its value within this [kW, kWh].
AT_BOUND_TOL = 1e-9


@dataclass(frozen=True)
class Lp:
    """min c'x + offset s.t. row_lo <= A x <= row_up, col_lo <= x <= col_up. ``col_keys`` and
    ``row_keys`` (int64, optional) name each column and row for a warm start; equal keys
    across two LPs mean the same thing."""

    c: np.ndarray
    a: sp.csc_matrix
    col_lo: np.ndarray
    col_up: np.ndarray
    row_lo: np.ndarray
    row_up: np.ndarray
    col_keys: np.ndarray | None = None
    row_keys: np.ndarray | None = None
    offset: float = 0.0  # added to c'x: the objective of columns left out of the model


@dataclass(frozen=True)
class LpResult:
    x: np.ndarray | None  # None: no solution
    fun: float
    status: str  # "optimal", ...
    iterations: int  # simplex iterations
    warm: bool  # started from a carried-over basis


_first = threading.Lock()
_banner_done = False


def _new_highs() -> highspy.Highs:
    """A silent HiGHS instance. The library prints its copyright banner to the process's
    standard output when the first instance of a process is made, before any option can
    be set; that one is made with file descriptor 1 pointed at /dev/null (once), so
    ``megastation demo`` and ``status`` print only what they mean to."""
    global _banner_done
    if not _banner_done:
        with _first:
            if not _banner_done:
                sys.stdout.flush()
                saved = os.dup(1)
                try:
                    with open(os.devnull, "w") as null:
                        os.dup2(null.fileno(), 1)
                        highspy.Highs()
                finally:
                    os.dup2(saved, 1)
                    os.close(saved)
                _banner_done = True
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("simplex_dual_edge_weight_strategy", DUAL_EDGE_WEIGHT_STRATEGY)
    h.setOptionValue("dual_simplex_cost_perturbation_multiplier", DUAL_COST_PERTURBATION)
    return h


def _pass(h: highspy.Highs, lp: Lp) -> None:
    n_row, n_col = lp.a.shape
    status = h.passModel(
        n_col, n_row, lp.a.nnz, 1, 1, lp.offset,  # column-wise, minimise
        lp.c, lp.col_lo, lp.col_up, lp.row_lo, lp.row_up,
        lp.a.indptr.astype(np.int32, copy=False), lp.a.indices.astype(np.int32, copy=False),
        np.ascontiguousarray(lp.a.data, dtype=float), np.zeros(n_col, dtype=np.int32),
    )  # fmt: skip
    if status == highspy.HighsStatus.kError:  # e.g. a repeated entry: never solve a stale model
        raise ValueError("HiGHS refused the LP (passModel)")


def _result(h: highspy.Highs, warm: bool) -> LpResult:
    status = h.getModelStatus()
    sol = h.getSolution()
    x = None
    if sol.value_valid:  # col_value is a list: fromiter is the quickest copy into an array
        x = np.fromiter(sol.col_value, dtype=float, count=h.getNumCol())
    name = _STATUS.get(status, f"status_{h.modelStatusToString(status)}")
    # two figures asked for by name: getInfo() copies the whole HighsInfo
    fun = float(h.getObjectiveValue())
    iterations = int(h.getInfoValue("simplex_iteration_count")[1])
    return LpResult(x, fun, name, iterations, warm)


def solve_lp(lp: Lp) -> LpResult:
    """Solve ``lp`` cold on a fresh HiGHS instance."""
    h = _new_highs()
    _pass(h, lp)
    return _run_cold(h)


def _run_cold(h: highspy.Highs) -> LpResult:
    """Run the model passed to ``h`` from no basis; if that does not end optimal, once more
    without presolve (HiGHS's presolve called a feasible LP infeasible: a car wanting
    6e-8 kWh, below its tolerances; found by the random problems of the tests)."""
    h.run()
    res = _result(h, False)
    if res.status == "optimal":
        return res
    h.setOptionValue("presolve", "off")
    try:
        h.clearSolver()
        h.run()
        return _result(h, False)
    finally:
        h.setOptionValue("presolve", "choose")


class WarmStart:
    """One HiGHS instance and the basis of the last LP it solved, by key.

    :meth:`solve` carries the basis over to the next LP: a column or row whose key was
    in the last LP keeps its status, a new column starts at its lower bound, a new row
    with its slack basic; then the count of basic variables is made right (HiGHS
    repairs a singular start itself). One solve at a time (a lock holds a second caller).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._h = _new_highs()
        self._basis: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.solves = 0
        self.iterations = 0  # simplex iterations, all solves
        self.cold_retries = 0  # warm starts that did not end optimal, solved again cold

    def solve(self, lp: Lp) -> LpResult:
        """The optimum of ``lp``, started from the last LP's basis where keys match."""
        with self._lock:
            return self._solve(lp)

    def _solve(self, lp: Lp) -> LpResult:
        h = self._h
        _pass(h, lp)
        warm = False
        if self._basis is not None and lp.col_keys is not None and lp.row_keys is not None:
            warm = h.setBasis(self._carried_basis(lp)) == highspy.HighsStatus.kOk
        if not warm:
            res = _run_cold(h)
        else:
            h.run()
            res = _result(h, True)
            if res.status != "optimal":  # e.g. "Unknown" after the start: again, cold
                self.iterations += res.iterations
                self.cold_retries += 1
                h.clearSolver()
                res = _run_cold(h)
        self.solves += 1
        self.iterations += res.iterations
        self._basis = None
        keyed = lp.col_keys is not None and lp.row_keys is not None
        if res.status == "optimal" and res.x is not None and keyed:
            self._basis = self._keep(lp, res.x)
        return res

    def _keep(self, lp: Lp, x: np.ndarray):
        """The solved LP's basis as (sorted keys, status codes) for columns and rows."""
        _, basic = self._h.getBasicVariables()
        col = np.where(
            np.isfinite(lp.col_up) & (x >= lp.col_up - AT_BOUND_TOL), _UPPER, _LOWER
        ).astype(np.int8)
        row = np.where(np.isfinite(lp.row_lo), _LOWER, _UPPER).astype(np.int8)
        basic = np.asarray(basic)
        col[basic[basic >= 0]] = _BASIC
        row[-basic[basic < 0] - 1] = _BASIC
        oc, orr = np.argsort(lp.col_keys, kind="stable"), np.argsort(lp.row_keys, kind="stable")
        return lp.col_keys[oc], col[oc], lp.row_keys[orr], row[orr]

    def _carried_basis(self, lp: Lp) -> highspy.HighsBasis:
        ck, cs, rk, rs = self._basis
        col = _lookup(ck, cs, lp.col_keys, _LOWER)
        row = _lookup(rk, rs, lp.row_keys, _BASIC)
        # a bound that is no longer finite cannot hold a nonbasic variable
        col[(col == _UPPER) & ~np.isfinite(lp.col_up)] = _LOWER
        row[(row == _UPPER) & ~np.isfinite(lp.row_up)] = _LOWER
        row[(row == _LOWER) & ~np.isfinite(lp.row_lo)] = _UPPER
        n_row = lp.a.shape[0]
        extra = int((col == _BASIC).sum() + (row == _BASIC).sum()) - n_row
        if extra > 0:  # too many basic: the last basic columns leave
            col[np.flatnonzero(col == _BASIC)[-extra:]] = _LOWER
        elif extra < 0:  # too few: slacks of nonbasic rows enter
            row[np.flatnonzero(row != _BASIC)[:-extra]] = _BASIC
        b = highspy.HighsBasis()
        b.col_status = _CODES[col].tolist()
        b.row_status = _CODES[row].tolist()
        b.valid = True
        # not "alien": the count is right, so setBasis need not check and factor it as a
        # foreign basis (run()'s INVERT mends a singular start); HiGHS CPU -3.5 % on a
        # recorded day (dispatch.md, "Solver")
        b.alien = False
        return b


_LOWER, _BASIC, _UPPER = 0, 1, 2
# the HighsBasisStatus of each code, as an object array: indexing it with the int8 codes
# gives the list HighsBasis wants without a Python call per column (it takes no array)
_CODES = np.array([_BS.kLower, _BS.kBasic, _BS.kUpper], dtype=object)


def _lookup(keys: np.ndarray, status: np.ndarray, new: np.ndarray, default: int) -> np.ndarray:
    """Status of each ``new`` key in the sorted ``keys``. A key not there takes the status
    of the next key that differs from it only in its time bits (the same flow or row in
    the step that held it: a fine step of this plan in the last plan's coarse step), else
    ``default``. Measured on a recorded day's LPs: 8-12 % fewer simplex iterations than
    ``default`` alone (dispatch.md, "Solver")."""
    if not keys.size:
        return np.full(new.size, default, dtype=np.int8)
    pos = np.minimum(np.searchsorted(keys, new), keys.size - 1)
    same = (keys[pos] >> TIME_BITS) == (new >> TIME_BITS)  # exact, or the same in a later step
    return np.where(same, status[pos], default).astype(np.int8)
