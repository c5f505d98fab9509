"""The dispatch LP: :func:`solve` builds one sparse linear program from a
:class:`~megastation.dispatch.problem.Problem` and solves it with HiGHS (highspy,
:mod:`megastation.dispatch.highs`; warm-started from the previous plan's basis when given
a :class:`~megastation.dispatch.highs.WarmStart`). The model is documented in
``dispatch.md``. The constraint matrix is assembled from index arrays
(``scipy.sparse.coo_matrix``): there is no Python loop over sessions x steps.
:func:`solve_reference` solves the same LP with :func:`scipy.optimize.linprog`, the way
it was solved before highspy, for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.special import erfc

from megastation.dispatch import keys
from megastation.dispatch.highs import Lp, LpResult, WarmStart, solve_lp
from megastation.dispatch.policy import Policy, battery_may_export
from megastation.dispatch.problem import Plan, Problem
from megastation.dispatch.validate import SessionFigures, validate

# PV below this [kW] is float dust (e.g. sin at sunrise) that only slows HiGHS: 0.
PV_DUST_KW = 1e-9
# A car takes part in a step if it is plugged in for more than this share of it (~1 ms).
MIN_AVAIL_FRAC = 1e-6
# Flows below this [kW] count as none when shares are computed from the solution.
ZERO_KW = 1e-9
# Smallest stay sigma and survival probability used in the leave-risk formula (no 0 / 0).
MIN_STAY_SIGMA = 1e-9
MIN_SURVIVAL = 1e-12
# HiGHS status codes as scipy's linprog reports them.
_STATUS = {0: "optimal", 1: "iteration_limit", 4: "numerical_difficulties"}

# Per-step variable blocks, each n_steps long (see dispatch.md, "Variables").
BLOCKS = (
    "pv_ev", "pv_load", "pv_bat", "pv_exp", "curt",
    "gr_ev", "gr_load", "gr_bat",
    "bg_ev", "bg_load", "bg_exp", "by_ev", "by_load", "by_exp", "bo_ev", "bo_load", "bo_exp",
    "shed", "soc_kwh", "green_kwh", "old_kwh", "d_ev", "d_bat",
)  # fmt: skip
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
        self.blocks: list[int] = []  # rows of each family, in the order added (keys.py)

    def add(self, n_rows: int, rhs: np.ndarray | float) -> int:
        """Reserve ``n_rows`` rows; returns the first row index."""
        first = self.n
        self.n += n_rows
        self.blocks.append(n_rows)
        rhs = np.asarray(rhs, dtype=float)
        self.rhs.append(np.full(n_rows, rhs) if rhs.ndim == 0 else np.broadcast_to(rhs, (n_rows,)))
        return first

    def coef(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray | float) -> None:
        rows = np.asarray(rows)
        self.r.append(rows)
        self.c.append(np.asarray(cols))
        if isinstance(vals, np.ndarray) and vals.shape == rows.shape:
            self.v.append(vals)
        elif isinstance(vals, float | int):  # one value for all: spread in triplets()
            self.v.append(float(vals))
        else:
            self.v.append(np.full(rows.shape, vals, dtype=float))

    def coef_each(
        self, rows: np.ndarray, blocks: list[np.ndarray], vals: np.ndarray | float
    ) -> None:
        """:meth:`coef` of ``rows`` with each column block in turn, as one entry."""
        k = len(blocks)
        if not isinstance(vals, float | int):
            vals = np.concatenate([vals] * k)
        self.coef(np.concatenate([rows] * k), np.concatenate(blocks), vals)

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of every coefficient, and the right-hand sides."""
        if not self.n:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), np.zeros(0)
        cat = np.concatenate
        sizes = [r.size for r in self.r]
        # every single value spread in one call, then the arrays copied into their place
        vals = np.repeat([0.0 if isinstance(v, np.ndarray) else v for v in self.v], sizes)
        end = np.cumsum(sizes).tolist()
        for k, v in enumerate(self.v):
            if isinstance(v, np.ndarray):
                vals[end[k] - sizes[k] : end[k]] = v
        return cat(self.r), cat(self.c), vals, cat(self.rhs)


@dataclass(frozen=True)
class _Kept:
    """Which columns and rows of the full LP the solver sees: a column fixed by its bounds
    (e.g. the battery's export blocks where it may not export, PV flows in the dark) is
    left out with its value moved into the row bounds, and so is a row left with no
    coefficient. HiGHS then works on ~15 % fewer columns and rows (its warm solves
    ~14 % quicker on a recorded day's LPs; dispatch.md, "Solver"); the optimum is the
    same, the objective carries the fixed columns' cost as an offset."""

    cols: np.ndarray  # bool, one per full column
    rows: np.ndarray  # bool, one per full row
    fixed_x: np.ndarray  # every full column's value where it is fixed (0 elsewhere)

    def expand(self, x: np.ndarray | None) -> np.ndarray | None:
        """The full column vector of the solver's solution ``x`` (None stays None)."""
        if x is None:
            return None
        full = self.fixed_x.copy()
        full[self.cols] = x
        return full


def _stack(eq: _Rows, ub: _Rows, c: np.ndarray, bounds: np.ndarray) -> tuple[Lp, _Kept]:
    """The LP of the equalities then the inequalities (``lo = up = rhs`` for an equality,
    ``-inf <= rhs`` for an inequality) over the columns of cost ``c`` and ``bounds``,
    fixed columns and empty rows left out (:class:`_Kept`); without keys."""
    r_eq, c_eq, v_eq, b_eq = eq.triplets()
    r_ub, c_ub, v_ub, b_ub = ub.triplets()
    rows = np.concatenate([r_eq, r_ub + eq.n])
    cols = np.concatenate([c_eq, c_ub])
    vals = np.concatenate([v_eq, v_ub])
    n_rows = eq.n + ub.n
    lo = np.concatenate([b_eq, np.full(ub.n, -np.inf)])
    up = np.concatenate([b_eq, b_ub])
    col_lo, col_up = bounds[:, 0], bounds[:, 1]
    fixed = col_lo == col_up
    fixed_x = np.where(fixed, col_lo, 0.0)
    if fixed_x.any():  # a column fixed off zero moves its coefficients into the bounds
        shift = np.bincount(rows, vals * fixed_x[cols], n_rows)
        lo, up = lo - shift, up - shift
    free = ~fixed[cols]
    rows, cols, vals = rows[free], cols[free], vals[free]
    keep_c = ~fixed
    # an empty row stays only if it cannot hold (0 outside its bounds): HiGHS says so
    keep_r = (np.bincount(rows, minlength=n_rows) > 0) | (lo > 0.0) | (up < 0.0)
    new_r = np.cumsum(keep_r, dtype=np.int32) - 1
    cols = (np.cumsum(keep_c) - 1)[cols]
    n_c, n_r = int(keep_c.sum()), int(keep_r.sum())
    # column-wise by a stable counting sort of the column numbers (radix on 16 bits,
    # ~4x quicker than scipy's COO -> CSC here); the entries are unique by construction
    order = np.argsort(cols.astype(np.uint16) if n_c <= 1 << 16 else cols, kind="stable")
    indptr = np.zeros(n_c + 1, dtype=np.int32)
    np.cumsum(np.bincount(cols, minlength=n_c), out=indptr[1:])
    a = sp.csc_matrix((vals[order], new_r[rows[order]], indptr), shape=(n_r, n_c))
    lp = Lp(
        c=c[keep_c], a=a, col_lo=col_lo[keep_c], col_up=col_up[keep_c], row_lo=lo[keep_r],
        row_up=up[keep_r], offset=float(c @ fixed_x),
    )  # fmt: skip
    return lp, _Kept(keep_c, keep_r, fixed_x)


def _session_windows(
    problem: Problem, figs: SessionFigures
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Availability (fraction of each step plugged in), progress through the stay at each
    step's midpoint (dense S x T), and each departure [s from the grid start]."""
    grid = problem.grid
    edges = grid.edges_s
    t0 = grid.start.timestamp()
    arr = figs.arrival_s - t0
    dep = figs.departure_s - t0
    lo = np.maximum(edges[None, :-1], arr[:, None])
    hi = np.minimum(edges[None, 1:], dep[:, None])
    avail = np.clip(hi - lo, 0.0, None) / grid.durations_s[None, :]
    mid = 0.5 * (edges[:-1] + edges[1:])
    progress = np.clip((mid[None, :] - arr[:, None]) / (dep - arr)[:, None], 0.0, 1.0)
    return avail, progress, dep


def _leave_risk(problem: Problem, v: _Layout) -> np.ndarray:
    """Per session pair: the chance that the car has left by the step's midpoint, given
    that it is plugged in at the plan start (0 for sessions with a known departure)."""
    ps, pt, figs = v.ps, v.pt, v.figures
    risk = np.zeros(ps.size)
    given = ~np.isnan(figs.stay_median_s)  # validated: a given median is >= 1 s
    unsure = (figs.stay_sigma > 0) & given
    if not unsure.any():
        return risk
    grid = problem.grid
    t0 = grid.start.timestamp()
    mid = t0 + 0.5 * (grid.edges_s[:-1] + grid.edges_s[1:])
    arr = figs.arrival_s
    med = np.where(given, figs.stay_median_s, 1.0)
    sig = np.maximum(figs.stay_sigma, MIN_STAY_SIGMA)
    sel = unsure[ps]
    i, t = ps[sel], pt[sel]

    def survival(elapsed_s: np.ndarray) -> np.ndarray:
        z = np.log(np.maximum(elapsed_s, 1.0) / med[i]) / sig[i]
        return 0.5 * erfc(z / math.sqrt(2.0))

    now = survival(np.maximum(t0 - arr[i], 0.0))
    later = survival(mid[t] - arr[i])
    risk[sel] = np.clip(1.0 - later / np.maximum(now, MIN_SURVIVAL), 0.0, 1.0)
    return risk


@dataclass(frozen=True)
class _Inputs:
    """The problem's arrays with defaults applied, and the battery's figures (all 0 and
    efficiencies 1 without a battery)."""

    pol: Policy
    n_steps: int
    dt: np.ndarray  # step lengths [h]
    pv: np.ndarray
    load: np.ndarray  # site load + uncontrolled loads
    price: np.ndarray
    imp_lim: np.ndarray
    cap: float
    e0: float  # stored energy now [kWh]
    e_min: float
    e_max: float
    g0: float  # renewable part of e0
    o0: float  # grey part of e0 (stored before the horizon, never charged in tier 2)
    eta_c: float
    eta_d: float
    ch_max: float
    dis_max: float
    term_val: float  # KRW per stored kWh left at the horizon end
    floor: np.ndarray | None = None  # soft reserve per step end [kWh] (steps above e_min)


def _inputs(problem: Problem, pol: Policy) -> _Inputs:
    grid = problem.grid
    T = grid.n_steps
    pv = np.asarray(problem.pv_kw, dtype=float)
    pv = np.where(pv < PV_DUST_KW, 0.0, pv)
    load = np.asarray(problem.site_load_kw, dtype=float).copy()
    if problem.uncontrolled_kw is not None:
        load = load + np.asarray(problem.uncontrolled_kw, dtype=float)
    gs = problem.grid_state
    price = np.asarray(gs.import_price_krw_per_kwh, dtype=float)
    imp_lim = np.broadcast_to(np.asarray(gs.import_limit_kw, dtype=float), (T,))
    common = dict(
        pol=pol, n_steps=T, dt=grid.durations_h, pv=pv, load=load, price=price, imp_lim=imp_lim
    )
    b = problem.battery
    if b is None or b.capacity_kwh <= 0:
        return _Inputs(
            **common, cap=0.0, e0=0.0, e_min=0.0, e_max=0.0, g0=0.0, o0=0.0,
            eta_c=1.0, eta_d=1.0, ch_max=0.0, dis_max=0.0, term_val=0.0,
        )  # fmt: skip
    cap = b.capacity_kwh
    e_min, e_max = b.soc_min_frac * cap, b.soc_max_frac * cap
    e0 = min(max(b.soc_frac * cap, e_min), e_max)
    g0 = b.renewable_frac * e0
    term_val = (
        b.terminal_value_krw_per_kwh
        if b.terminal_value_krw_per_kwh is not None
        else float(price.mean()) * b.discharge_efficiency
    )
    floor = None
    if problem.soc_floor_kwh is not None:
        floor = np.minimum(np.asarray(problem.soc_floor_kwh, dtype=float), e_max)
        floor = floor if bool(np.any(floor > e_min)) else None
    return _Inputs(
        **common, cap=cap, e0=e0, e_min=e_min, e_max=e_max, g0=g0, o0=e0 - g0,
        eta_c=b.charge_efficiency, eta_d=b.discharge_efficiency,
        ch_max=b.max_charge_kw, dis_max=b.max_discharge_kw, term_val=term_val, floor=floor,
    )  # fmt: skip


@dataclass(frozen=True)
class _Layout:
    """Columns of the LP: per-step blocks, then the peak excess, then one column per
    session pair (a session and a step it is plugged in), chatter, and two unmet columns
    per session (needed within the horizon; could still come after it)."""

    col: dict[str, np.ndarray]  # block name -> its n_steps columns
    i_peak: int
    n_sessions: int
    ps: np.ndarray  # session of each pair
    pt: np.ndarray  # step of each pair
    avail: np.ndarray  # S x T share of each step plugged in
    progress: np.ndarray  # S x T progress through the stay at each step's midpoint
    chat_pairs: np.ndarray  # pairs with a chatter column
    i_pair: np.ndarray
    i_chat: np.ndarray
    i_u1: np.ndarray
    i_u2: np.ndarray
    i_short: int  # the largest shortfall below the reserve (Problem.soc_floor_kwh) [kWh]
    n_var: int
    pmax: np.ndarray  # per session [kW]
    want: np.ndarray  # per session [kWh]
    must: np.ndarray  # per session: needed within the horizon [kWh]
    cur: np.ndarray  # per session: power before the plan start [kW]
    figures: SessionFigures  # the sessions' figures as arrays

    @property
    def n_pairs(self) -> int:
        return self.ps.size

    def blocks(self, arr: np.ndarray) -> dict[str, np.ndarray]:
        """The per-step blocks of ``arr`` (one value per column) by name, as views: writing
        into a block writes into ``arr`` (quicker than indexing ``arr`` with ``col``)."""
        return dict(zip(BLOCKS, arr[: self.i_peak].reshape(len(BLOCKS), -1), strict=True))


def _layout(problem: Problem, m: _Inputs, figs: SessionFigures) -> _Layout:
    T = m.n_steps
    steps = np.arange(T)
    col = {name: i * T + steps for i, name in enumerate(BLOCKS)}
    i_peak = len(BLOCKS) * T
    S = len(problem.sessions)
    avail, progress, dep_s = _session_windows(problem, figs)
    ps, pt = np.nonzero(avail > MIN_AVAIL_FRAC)
    P = ps.size
    if m.pol.chatter_weight_per_kw <= 0:
        chat_pairs = np.zeros(0, dtype=int)
    elif m.pol.chatter_per_session:
        chat_pairs = np.arange(P)
    else:
        chat_pairs = np.flatnonzero(pt == 0)
    Z = chat_pairs.size
    i_u1 = i_peak + 1 + P + Z + np.arange(S)
    pmax = figs.max_power_kw
    # energy wanted within the horizon: all of it if the car leaves inside, else what
    # cannot be delivered after the horizon end at full power (the rest is optional).
    want = figs.energy_kwh
    after_h = np.clip(dep_s - problem.grid.edges_s[-1], 0.0, None) / 3600.0
    must = np.clip(want - pmax * after_h, 0.0, None) if S else want
    return _Layout(
        col=col, i_peak=i_peak, n_sessions=S, ps=ps, pt=pt, avail=avail, progress=progress,
        chat_pairs=chat_pairs, i_pair=i_peak + 1 + np.arange(P),
        i_chat=i_peak + 1 + P + np.arange(Z), i_u1=i_u1, i_u2=i_u1 + S,
        i_short=i_peak + 1 + P + Z + 2 * S, n_var=i_peak + 2 + P + Z + 2 * S,
        pmax=pmax, want=want, must=must,
        cur=figs.current_power_kw, figures=figs,
    )  # fmt: skip


def _bounds(problem: Problem, m: _Inputs, v: _Layout) -> np.ndarray:
    """Lower and upper bound of every column (n_var x 2)."""
    col = v.col
    lb = np.zeros(v.n_var)
    ub = np.full(v.n_var, np.inf)
    ub[col["curt"]] = m.pv
    dark = m.pv == 0.0  # what the PV balance implies, said as bounds: these columns drop out
    for name in ("pv_ev", "pv_load", "pv_bat", "pv_exp"):
        ub[col[name][dark]] = 0.0
    ub[col["shed"]] = m.load
    for name in ("pv_bat", "gr_bat"):
        ub[col[name]] = m.ch_max
    for name in _DISCHARGE:
        ub[col[name]] = m.dis_max
    if not battery_may_export(m.pol, problem.grid_state):
        for name in ("bg_exp", "by_exp", "bo_exp"):  # stored energy is never given away (#11)
            ub[col[name]] = 0.0
    lb[col["soc_kwh"]] = m.e_min
    ub[col["soc_kwh"]] = m.e_max
    ub[col["green_kwh"]] = m.e_max
    ub[col["old_kwh"]] = m.e_max
    ub[v.i_pair] = v.pmax[v.ps] * v.avail[v.ps, v.pt] if v.n_pairs else 0.0
    ub[v.i_u1] = v.must
    ub[v.i_u2] = v.want - v.must
    ub[v.i_short] = 0.0 if m.floor is None else m.e_max
    return np.column_stack([lb, ub])


def _objective(problem: Problem, m: _Inputs, v: _Layout) -> np.ndarray:
    """Cost of every column, in points (the tiers of dispatch.md, "Objective")."""
    pol, dt, gs = m.pol, m.dt, problem.grid_state
    c = np.zeros(v.n_var)
    c_blk = v.blocks(c)
    w_grid, w_cost = pol.grid_to_ev_weight_per_kwh, pol.cost_weight_per_krw
    # tier 2, "grid energy into cars", is charged where grid energy enters: straight into
    # a car, or into the battery (grey, as the kWh it will give back); grey energy that
    # goes to the site load or export is credited back. So swapping labels (grid into
    # the battery while green leaves it for a car) never pays.
    c_blk["gr_ev"] += w_grid * dt
    c_blk["gr_bat"] += w_grid * m.eta_c * m.eta_d * (1.0 + pol.grid_to_battery_premium) * dt
    for name in ("by_load", "by_exp"):
        c_blk[name] -= w_grid * dt
    # grey energy stored before the horizon was never charged on entry: it costs what a
    # grid kWh costs when it goes to a car, and earns nothing when it goes to the site
    # load or export (a credit there made dumping it look renewable: dispatch.md).
    c_blk["bo_ev"] += w_grid * dt
    for name in ("gr_ev", "gr_load", "gr_bat"):
        c_blk[name] += w_cost * m.price * dt
    for name in _EXPORT:
        c_blk[name] -= w_cost * gs.export_price_krw_per_kwh * dt
    for name in _DISCHARGE:
        c_blk[name] += (w_cost * pol.battery_wear_krw_per_kwh + pol.chatter_weight_per_kw) * dt
    c_blk["curt"] += pol.curtail_chatter_frac * pol.chatter_weight_per_kw * dt
    c_blk["shed"] += pol.shed_unmet_factor * pol.unmet_weight_per_kwh * dt
    c_blk["soc_kwh"][-1] -= w_cost * m.term_val
    c_blk["green_kwh"][-1] -= w_grid * pol.green_terminal_frac * m.eta_d
    c[v.i_peak] = w_cost * gs.demand_charge_krw_per_kw
    prio = v.figures.priority
    ps, pt = v.ps, v.pt
    if v.n_pairs:
        c[v.i_pair] = pol.early_weight_per_kwh * dt[pt] * (pol.early_base + v.progress[ps, pt])
        c[v.i_chat] = pol.chatter_weight_per_kw
        # uncertain departures: a kWh is worth its chance that the car is still there
        risk = _leave_risk(problem, v)
        c[v.i_pair] += risk * pol.unmet_weight_per_kwh * prio[ps] * dt[pt]
    # tier 5 on the aggregate car and battery power (one-sided rows in _inequalities: 2w
    # on the increases, -w on the last value, +w on the first battery value)
    w_chat = pol.chatter_weight_per_kw
    c_blk["d_ev"][:] = 2 * w_chat
    c_blk["d_bat"][1:] = 2 * w_chat
    for name in _TO_EV:
        c_blk[name][-1] -= w_chat
    if m.n_steps > 1:
        for name, w in _BAT_NET:
            c_blk[name][-1] -= w_chat * w
            c_blk[name][0] += w_chat * w
    # shortfall: energy needed within the horizon at full weight, the rest discounted
    c[v.i_u1] = pol.unmet_weight_per_kwh * prio
    c[v.i_u2] = pol.beyond_horizon_frac * (w_grid + w_cost * float(m.price.mean())) * prio
    c[v.i_short] = pol.reserve_short_weight_per_kwh
    return c


def _equalities(m: _Inputs, v: _Layout) -> _Rows:
    """Balances: PV, site load, cars, stored energy and its green and old-grey parts,
    and per session delivered + unmet = wanted."""
    T, dt, col = m.n_steps, m.dt, v.col
    steps = np.arange(T)
    eq = _Rows()
    r = eq.add(T, m.pv) + steps  # PV: pv_ev + pv_load + pv_bat + pv_exp + curt = pv
    eq.coef_each(r, [col[n] for n in ("pv_ev", "pv_load", "pv_bat", "pv_exp", "curt")], 1.0)
    r = eq.add(T, m.load) + steps  # site load
    eq.coef_each(
        r, [col[n] for n in ("pv_load", "gr_load", "bg_load", "by_load", "bo_load", "shed")], 1.0
    )
    r = eq.add(T, 0.0) + steps  # cars: sum_s p - supplies = 0
    eq.coef_each(r, [col[n] for n in _TO_EV], -1.0)
    eq.coef(r[v.pt], v.i_pair, 1.0)
    # stored energy: E_t - E_{t-1} - eta_c dt (pv_bat + gr_bat) + dt/eta_d (discharge) = 0
    r = eq.add(T, _first(T, m.e0)) + steps
    eq.coef(r, col["soc_kwh"], 1.0)
    eq.coef(r[1:], col["soc_kwh"][:-1], -1.0)
    eq.coef_each(r, [col[n] for n in ("pv_bat", "gr_bat")], -m.eta_c * dt)
    eq.coef_each(r, [col[n] for n in _DISCHARGE], dt / m.eta_d)
    r = eq.add(T, _first(T, m.g0)) + steps  # renewable content, charged only by PV
    eq.coef(r, col["green_kwh"], 1.0)
    eq.coef(r[1:], col["green_kwh"][:-1], -1.0)
    eq.coef(r, col["pv_bat"], -m.eta_c * dt)
    eq.coef_each(r, [col[n] for n in ("bg_ev", "bg_load", "bg_exp")], dt / m.eta_d)
    r = eq.add(T, _first(T, m.o0)) + steps  # grey energy from before the horizon, only leaves
    eq.coef(r, col["old_kwh"], 1.0)
    eq.coef(r[1:], col["old_kwh"][:-1], -1.0)
    eq.coef_each(r, [col[n] for n in ("bo_ev", "bo_load", "bo_exp")], dt / m.eta_d)
    S = v.n_sessions
    if S:  # per session: delivered + unmet = wanted
        r = eq.add(S, v.want)
        eq.coef(r + v.ps, v.i_pair, dt[v.pt])
        eq.coef(r + np.arange(S), v.i_u1, 1.0)
        eq.coef(r + np.arange(S), v.i_u2, 1.0)
    return eq


def _first(n: int, value: float) -> np.ndarray:
    """``n`` zeros with ``value`` first (the right-hand side of a state's first step)."""
    rhs = np.zeros(n)
    rhs[0] = value
    return rhs


def _inequalities(problem: Problem, m: _Inputs, v: _Layout) -> _Rows:
    """Limits: grid import and the peak, export, battery power, stored energy labels,
    chatter and power groups."""
    T, col, gs = m.n_steps, v.col, problem.grid_state
    steps = np.arange(T)
    rows = _Rows()
    r = rows.add(T, m.imp_lim) + steps
    rows.coef_each(r, [col[n] for n in ("gr_ev", "gr_load", "gr_bat")], 1.0)
    r = rows.add(T, gs.peak_so_far_kw) + steps  # import - peak_excess <= peak so far
    rows.coef_each(r, [col[n] for n in ("gr_ev", "gr_load", "gr_bat")], 1.0)
    rows.coef(r, np.full(T, v.i_peak), -1.0)
    r = rows.add(T, gs.export_limit_kw) + steps
    rows.coef_each(r, [col[n] for n in _EXPORT], 1.0)
    r = rows.add(T, m.ch_max) + steps
    rows.coef_each(r, [col[n] for n in ("pv_bat", "gr_bat")], 1.0)
    r = rows.add(T, m.dis_max) + steps
    rows.coef_each(r, [col[n] for n in _DISCHARGE], 1.0)
    r = rows.add(T, 0.0) + steps  # green + old grey <= stored (new grey >= 0)
    rows.coef(r, col["green_kwh"], 1.0)
    rows.coef(r, col["old_kwh"], 1.0)
    rows.coef(r, col["soc_kwh"], -1.0)
    _chatter_rows(rows, m, v)
    _group_rows(rows, problem, m, v)
    if m.floor is not None:  # reserve: -soc[t] - short <= -floor[t] where it is above e_min
        kept = np.flatnonzero(m.floor > m.e_min)
        r = rows.add(kept.size, -m.floor[kept]) + np.arange(kept.size)
        rows.coef(r, col["soc_kwh"][kept], -1.0)
        rows.coef(r, np.full(kept.size, v.i_short), -1.0)
    return rows


def _chatter_rows(rows: _Rows, m: _Inputs, v: _Layout) -> None:
    """Aggregate chatter, one-sided: ev[t] - ev[t-1] <= d_ev[t], bat[t] - bat[t-1] <= d_bat[t].
    Total variation is sum |x[t] - x[t-1]| = 2 sum max(x[t] - x[t-1], 0) - (x[end] - x[0]),
    so weighting the increases 2w and the end points -w/+w (objective) penalises every
    change by w with half the rows of the two-sided form. Then per car chatter."""
    T, col = m.n_steps, v.col
    steps = np.arange(T)
    cur_sum = float(v.cur.sum()) if v.n_sessions else 0.0
    r = rows.add(T, _first(T, cur_sum)) + steps
    for name in _TO_EV:
        rows.coef(r, col[name], 1.0)
        rows.coef(r[1:], col[name][:-1], -1.0)
    rows.coef(r, col["d_ev"], -1.0)
    r = rows.add(T - 1, 0.0) + steps[:-1]
    for name, w in _BAT_NET:
        rows.coef(r, col[name][1:], w)
        rows.coef(r, col[name][:-1], -w)
    rows.coef(r, col["d_bat"][1:], -1.0)
    Z = v.chat_pairs.size
    if not Z:
        return
    # per car: p[s,t] - p[s,t-1] <= z (every step; first pair against current power)
    # or |p[s,0] - current| <= z (first step only)
    cp, ps, pt = v.chat_pairs, v.ps, v.pt
    first = np.ones(v.n_pairs, dtype=bool)
    first[1:] = ps[1:] != ps[:-1]
    rhs = np.where(first[cp] & (pt[cp] == 0), v.cur[ps[cp]], 0.0)
    r = rows.add(Z, rhs) + np.arange(Z)
    rows.coef(r, v.i_pair[cp], 1.0)
    rows.coef(r, v.i_chat, -1.0)
    nf = np.flatnonzero(~first[cp])
    rows.coef(r[nf], v.i_pair[cp[nf] - 1], -1.0)
    if not m.pol.chatter_per_session:
        r = rows.add(Z, -rhs) + np.arange(Z)
        rows.coef(r, v.i_pair[cp], -1.0)
        rows.coef(r, v.i_chat, -1.0)


def _group_rows(rows: _Rows, problem: Problem, m: _Inputs, v: _Layout) -> None:
    """Power groups: the sum of member sessions' power <= the group's limit, per step."""
    if not v.n_pairs:
        return
    at: dict[tuple[str, int], list[int]] = {}  # connector -> its sessions
    for i, s in enumerate(problem.sessions):
        at.setdefault((s.charger_id, s.connector_id), []).append(i)
    for grp in problem.groups:
        in_grp = np.zeros(v.n_sessions, dtype=bool)
        in_grp[[i for k in set(grp.members) for i in at.get(k, ())]] = True
        sel = np.flatnonzero(in_grp[v.ps])
        if not sel.size:
            continue
        r = rows.add(m.n_steps, grp.max_power_kw)
        rows.coef(r + v.pt[sel], v.i_pair[sel], 1.0)


def solve(problem: Problem, warm: WarmStart | None = None) -> Plan:
    """Optimal dispatch of ``problem`` (see dispatch.md). Pure; raises ProblemError.

    Stages: inputs -> column layout -> bounds, objective, constraints -> HiGHS -> plan.
    ``warm``: start from the basis of the last plan it solved (same optimum, fewer
    iterations); None solves cold.
    """
    t_build = time.perf_counter()
    lp, kept, m, v = _build(problem, keyed=warm is not None)
    build_s = time.perf_counter() - t_build
    t_solve = time.perf_counter()
    res = warm.solve(lp) if warm is not None else solve_lp(lp)
    solve_s = time.perf_counter() - t_solve
    res = dataclasses.replace(res, x=kept.expand(res.x))
    if res.x is None:  # cannot happen for a validated problem: every slack is free
        raise RuntimeError(f"dispatch LP failed: {res.status}")
    return _plan(problem, m, v, res, build_s, solve_s)


def _build(problem: Problem, *, keyed: bool) -> tuple[Lp, _Kept, _Inputs, _Layout]:
    """The LP of ``problem`` as HiGHS sees it (with column and row keys for a warm start
    if ``keyed``), and which of the full LP's columns and rows it holds."""
    figs = validate(problem)
    m = _inputs(problem, Policy.of(problem.policy))
    v = _layout(problem, m, figs)
    bounds = _bounds(problem, m, v)
    c = _objective(problem, m, v)
    eq, ub = _equalities(m, v), _inequalities(problem, m, v)
    lp, kept = _stack(eq, ub, c, bounds)
    if keyed:
        grid = problem.grid
        ends = (grid.start.timestamp() + grid.edges_s[1:]) // 60
        ent = keys.entities([s.session_id for s in problem.sessions])
        col_keys = keys.column_keys(ends, ent, v)[kept.cols]
        row_keys = keys.row_keys(ends, ent, v, eq.blocks, ub.blocks)[kept.rows]
        lp = dataclasses.replace(lp, col_keys=col_keys, row_keys=row_keys)
    return lp, kept, m, v


def solve_reference(problem: Problem) -> Plan:
    """:func:`solve` through :func:`scipy.optimize.linprog` (HiGHS, cold), as before
    highspy: the reference the tests and ``benchmarks/simulate.py`` compare with."""
    t_build = time.perf_counter()
    lp, kept, m, v = _build(problem, keyed=False)
    eq = np.isfinite(lp.row_lo)  # equalities have both sides, inequalities only <=
    a = lp.a.tocsr()
    build_s = time.perf_counter() - t_build
    t_solve = time.perf_counter()
    r = linprog(
        lp.c, A_ub=a[~eq], b_ub=lp.row_up[~eq], A_eq=a[eq], b_eq=lp.row_up[eq],
        bounds=np.column_stack([lp.col_lo, lp.col_up]), method="highs",
    )  # fmt: skip
    solve_s = time.perf_counter() - t_solve
    if r.x is None:
        raise RuntimeError(f"dispatch LP failed: {r.status} {r.message}")
    status = _STATUS.get(r.status, f"status_{r.status}")
    fun = float(r.fun) + lp.offset
    res = LpResult(kept.expand(r.x), fun, status, int(getattr(r, "nit", 0)), False)
    return _plan(problem, m, v, res, build_s, solve_s)


def _plan(
    problem: Problem, m: _Inputs, v: _Layout, res: LpResult, build_s: float, solve_s: float
) -> Plan:
    """The :class:`Plan` from the LP's solution ``res`` (flows clipped at 0)."""
    x, T, S, dt = res.x, m.n_steps, v.n_sessions, m.dt
    gs = problem.grid_state
    f = v.blocks(np.clip(x, 0.0, None))
    session_kw = np.zeros((S, T))
    if v.n_pairs:
        session_kw[v.ps, v.pt] = np.clip(x[v.i_pair], 0.0, None)
    delivered = session_kw @ dt
    charge = f["pv_bat"] + f["gr_bat"]
    dis_green = f["bg_ev"] + f["bg_load"] + f["bg_exp"]
    dis_grey = sum(f[n] for n in ("by_ev", "by_load", "by_exp", "bo_ev", "bo_load", "bo_exp"))
    imp = f["gr_ev"] + f["gr_load"] + f["gr_bat"]
    exp_ = sum(f[n] for n in _EXPORT)
    ev_green = f["pv_ev"] + f["bg_ev"]
    ev_grid = f["gr_ev"] + f["by_ev"] + f["bo_ev"]
    ev_tot = ev_green + ev_grid
    green_share = np.divide(ev_green, ev_tot, out=np.zeros(T), where=ev_tot > ZERO_KW)
    ren_kwh = session_kw @ (green_share * dt)
    cap = m.cap
    soc = np.concatenate(([m.e0], f["soc_kwh"])) / cap if cap else np.zeros(T + 1)
    unmet = np.clip(v.want - delivered, 0.0, None) if S else np.zeros(0)
    cur_sum = float(v.cur.sum()) if S else 0.0
    parts = {
        "unmet_kwh": float(unmet.sum()),
        "grid_to_ev_kwh": float(ev_grid @ dt),
        "renewable_to_ev_kwh": float(ev_green @ dt),
        "energy_cost_krw": float(m.price @ (imp * dt)),
        "export_revenue_krw": float(gs.export_price_krw_per_kwh * (exp_ @ dt)),
        "demand_charge_krw": float(gs.demand_charge_krw_per_kw * x[v.i_peak]),
        "new_peak_kw": float(max(gs.peak_so_far_kw, imp.max(initial=0.0))),
        "terminal_value_krw": float(m.term_val * (soc[-1] * cap)),
        "load_shed_kwh": float(f["shed"] @ dt),
        "chatter_kw": float(x[v.i_chat].sum()) if v.chat_pairs.size else 0.0,
        "reserve_short_kwh": float(max(0.0, x[v.i_short])),
        # + the constant of the chatter identity (_chatter_rows)
        "objective": float(res.fun) + m.pol.chatter_weight_per_kw * cur_sum,
    }
    return Plan(
        problem=problem,
        session_ids=tuple(s.session_id for s in problem.sessions),
        session_kw=session_kw,
        battery_charge_kw=charge,
        battery_discharge_kw=dis_green + dis_grey,
        grid_import_kw=imp,
        grid_export_kw=exp_,
        pv_used_kw=m.pv - f["curt"],
        curtailed_kw=f["curt"],
        soc_frac=soc,
        battery_renewable_kwh=np.concatenate(([m.g0], f["green_kwh"])),
        ev_renewable_kw=ev_green,
        ev_grid_kw=ev_grid,
        load_shed_kw=f["shed"],
        delivered_kwh=delivered,
        unmet_kwh=unmet,
        renewable_frac=np.divide(ren_kwh, delivered, out=np.zeros(S), where=delivered > ZERO_KW),
        flows_kw=f,
        status=res.status,
        objective_parts=parts,
        build_time_s=build_s,
        solve_time_s=solve_s,
    )
