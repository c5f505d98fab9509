"""Money in the dispatch LP on values where each term shows (export price, battery wear,
the terminal value and its efficiency, the re100 grid-to-battery premium, the demand
charge above this month's peak), and optimality on small random problems against a
second formulation written here from scratch (aggregate flows, no labels)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.optimize import linprog

from megastation.dispatch import (
    BatteryState,
    GridState,
    Policy,
    PowerGroup,
    Problem,
    SessionNeed,
    TimeGrid,
    solve,
)

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _grid(n, price, *, export_kw=0.0, export_price=0.0, demand=0.0, peak=0.0, limit=500.0):
    return GridState(
        import_limit_kw=limit,
        export_limit_kw=export_kw,
        import_price_krw_per_kwh=np.broadcast_to(np.asarray(price, float), (n,)).copy(),
        export_price_krw_per_kwh=export_price,
        demand_charge_krw_per_kw=demand,
        peak_so_far_kw=peak,
    )


def _battery(**kw) -> BatteryState:
    base = dict(
        capacity_kwh=100.0,
        soc_frac=0.0,
        soc_min_frac=0.0,
        soc_max_frac=1.0,
        max_charge_kw=100.0,
        max_discharge_kw=100.0,
        charge_efficiency=0.9,
        discharge_efficiency=0.95,
    )
    base.update(kw)
    return BatteryState(**base)


def _car(sid, kwh, kw, arr_h, dep_h, connector=1) -> SessionNeed:
    return SessionNeed(sid, "C1", connector, T0 + arr_h * H, T0 + dep_h * H, kwh, kw)


def _problem(n, pv, load, grid_state, **kw) -> Problem:
    return Problem(
        grid=TimeGrid(T0, n, 3600),
        pv_kw=np.asarray(pv, float),
        site_load_kw=np.asarray(load, float),
        grid_state=grid_state,
        **kw,
    )


# --------------------------------------------------------------------------- export price


@pytest.mark.parametrize("policy", ["re100", "cost"])
def test_export_price_is_revenue(policy):
    # 100 kW of PV, no load, 60 kW may be exported at 50 KRW/kWh for 2 h.
    p = _problem(2, [100.0, 100.0], [0.0, 0.0], _grid(2, 100.0, export_kw=60.0, export_price=50.0),
                 policy=policy)  # fmt: skip
    plan = solve(p)
    np.testing.assert_allclose(plan.grid_export_kw, [60.0, 60.0], atol=1e-6)
    np.testing.assert_allclose(plan.curtailed_kw, [40.0, 40.0], atol=1e-6)
    assert plan.objective_parts["export_revenue_krw"] == pytest.approx(6000.0)
    assert plan.objective_parts["energy_cost_krw"] == pytest.approx(0.0, abs=1e-6)


def test_export_price_draws_the_battery_down_when_it_pays():
    # Stored 50 kWh grey; terminal value = mean import price x eta_d = 100 x 0.95 = 95 per
    # stored kWh. Exporting a stored kWh earns 0.95 x export price: worth it above 100.
    def exported(export_price):
        p = _problem(
            1, [0.0], [0.0], _grid(1, 100.0, export_kw=200.0, export_price=export_price),
            battery=_battery(soc_frac=0.5), policy="cost",
        )  # fmt: skip
        return solve(p)

    rich = exported(103.0)
    assert rich.grid_export_kw[0] == pytest.approx(50.0 * 0.95, rel=1e-6)
    assert rich.soc_frac[-1] == pytest.approx(0.0, abs=1e-6)
    assert rich.objective_parts["export_revenue_krw"] == pytest.approx(103.0 * 47.5, rel=1e-6)
    poor = exported(97.0)
    assert poor.grid_export_kw[0] == pytest.approx(0.0, abs=1e-6)
    assert poor.objective_parts["terminal_value_krw"] == pytest.approx(95.0 * 50.0, rel=1e-6)


def test_terminal_value_given_by_the_caller_is_used():
    p = _problem(1, [0.0], [0.0], _grid(1, 100.0, export_kw=200.0, export_price=70.0),
                 battery=_battery(soc_frac=0.5, terminal_value_krw_per_kwh=60.0), policy="cost")  # fmt: skip
    plan = solve(p)  # 0.95 x 70 = 66.5 > 60: everything out
    assert plan.grid_export_kw[0] == pytest.approx(47.5, rel=1e-6)
    assert plan.objective_parts["terminal_value_krw"] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- battery wear


@pytest.mark.parametrize(("wear", "used"), [(0.0, True), (50.0, True), (90.0, False)])
def test_battery_wear_cost_against_arbitrage(wear, used):
    # Load 40 kW in hour 1 at 200 KRW/kWh; hour 0 costs 100. Through the battery a kWh at
    # the load costs 100 / (0.9 x 0.95) = 116.96: saves 83.04 per kWh discharged, less wear.
    p = _problem(
        2, [0.0, 0.0], [0.0, 40.0], _grid(2, [100.0, 200.0]),
        battery=_battery(terminal_value_krw_per_kwh=0.0),
        policy=Policy(cost_weight_per_krw=1.0, grid_to_ev_weight_per_kwh=0.1,
                      battery_wear_krw_per_kwh=wear),
    )  # fmt: skip
    plan = solve(p)
    if used:
        assert plan.battery_discharge_kw[1] == pytest.approx(40.0, rel=1e-6)
        assert plan.battery_charge_kw[0] == pytest.approx(40.0 / 0.855, rel=1e-6)
        assert plan.objective_parts["energy_cost_krw"] == pytest.approx(100 * 40 / 0.855)
    else:
        assert plan.battery_discharge_kw.max() == pytest.approx(0.0, abs=1e-6)
        assert plan.objective_parts["energy_cost_krw"] == pytest.approx(200 * 40)


# --------------------------------------------------------------------------- grid to battery


def _night_charge(policy):
    # A car arrives at hour 2 wanting 40 kWh in that hour; the grid is cheap before.
    p = _problem(
        3, [0.0] * 3, [0.0] * 3, _grid(3, [60.0, 60.0, 200.0]),
        sessions=(_car("s", 40.0, 50.0, 2, 3),), battery=_battery(terminal_value_krw_per_kwh=0.0),
        policy=policy,
    )  # fmt: skip
    return solve(p)


def test_re100_does_not_fill_the_battery_from_the_grid_for_money():
    plan = _night_charge("re100")
    assert plan.battery_charge_kw.sum() == pytest.approx(0.0, abs=1e-6)
    assert plan.grid_import_kw[2] == pytest.approx(40.0)


def test_without_the_premium_re100_stores_the_cheap_night_grid():
    # Tier 2 costs grid energy into the battery by the kWh it gives back: without the
    # premium, grid via the battery and grid straight into the car tie at tier 2, and
    # money (60 / 0.855 = 70 < 200) decides.
    plan = _night_charge(Policy(grid_to_battery_premium=0.0))
    assert plan.battery_charge_kw[:2].sum() == pytest.approx(40.0 / 0.855, rel=1e-6)
    assert plan.grid_import_kw[2] == pytest.approx(0.0, abs=1e-6)
    # Priced in a kWh given back, the premium is 2 % of tier 2 = 200 points = 2,000 KRW:
    # a 70 KRW saving never pays for it, but a 2,100 KRW one (price 2,200 at hour 2) does.
    p = _problem(
        3, [0.0] * 3, [0.0] * 3, _grid(3, [60.0, 60.0, 2200.0]),
        sessions=(_car("s", 40.0, 50.0, 2, 3),), battery=_battery(terminal_value_krw_per_kwh=0.0),
        policy="re100",
    )  # fmt: skip
    assert solve(p).battery_charge_kw[:2].sum() == pytest.approx(40.0 / 0.855, rel=1e-6)


# --------------------------------------------------------------------------- demand charge


@pytest.mark.parametrize(
    ("peak_so_far", "charged_kw"), [(0.0, 50.0), (30.0, 20.0), (80.0, 0.0), (150.0, 0.0)]
)
def test_demand_charge_only_above_this_months_peak(peak_so_far, charged_kw):
    # 100 kWh for a car over 2 h at 100 kW max: flat 50 kW is the lowest peak; up to a
    # higher peak already billed this month, charging early costs nothing more.
    p = _problem(
        2, [0.0, 0.0], [0.0, 0.0], _grid(2, 100.0, demand=2580.0, peak=peak_so_far),
        sessions=(_car("s", 100.0, 100.0, 0, 2),), policy="cost",
    )  # fmt: skip
    plan = solve(p)
    first = min(100.0, max(50.0, peak_so_far))
    np.testing.assert_allclose(plan.grid_import_kw, [first, 100.0 - first], atol=1e-6)
    assert plan.objective_parts["new_peak_kw"] == pytest.approx(max(50.0, peak_so_far))
    assert plan.objective_parts["demand_charge_krw"] == pytest.approx(2580.0 * charged_kw)


# --------------------------------------------------------------------------- optimality


def _reference(p: Problem, pol: Policy) -> float:
    """The same problem as an aggregate-flow LP (no energy labels), written from scratch.

    Variables per step: import, export, charge, discharge, curtail, stored energy (end
    of step); per session and step: power; per session: unmet; one peak excess.
    Objective: energy cost - export revenue + wear + demand charge on the new peak
    + unmet penalty - terminal value of the energy left.
    """
    T = p.grid.n_steps
    dt = p.grid.durations_h
    gs, b = p.grid_state, p.battery
    S = len(p.sessions)
    names = ["imp", "exp", "ch", "dis", "curt", "e"]
    n = len(names) * T + S * T + S + 1
    v = {k: np.arange(T) + i * T for i, k in enumerate(names)}
    pw = len(names) * T + np.arange(S * T).reshape(S, T)
    un = len(names) * T + S * T + np.arange(S)
    pk = n - 1
    price = np.asarray(gs.import_price_krw_per_kwh, float)
    cap = b.capacity_kwh
    e0 = b.soc_frac * cap
    term = b.terminal_value_krw_per_kwh
    if term is None:
        term = price.mean() * b.discharge_efficiency
    c = np.zeros(n)
    c[v["imp"]] = price * dt
    c[v["exp"]] = -gs.export_price_krw_per_kwh * dt
    c[v["dis"]] = pol.battery_wear_krw_per_kwh * dt
    c[v["e"][-1]] = -term
    c[un] = pol.unmet_weight_per_kwh
    c[pk] = gs.demand_charge_krw_per_kw
    bounds = [(0.0, None)] * n
    for t in range(T):
        bounds[v["imp"][t]] = (0.0, gs.import_limit_kw)
        bounds[v["exp"][t]] = (0.0, gs.export_limit_kw)
        bounds[v["ch"][t]] = (0.0, b.max_charge_kw)
        bounds[v["dis"][t]] = (0.0, b.max_discharge_kw)
        bounds[v["curt"][t]] = (0.0, p.pv_kw[t])
        bounds[v["e"][t]] = (b.soc_min_frac * cap, b.soc_max_frac * cap)
    for s, need in enumerate(p.sessions):
        for t in range(T):
            start = T0 + timedelta(hours=float(p.grid.edges_s[t] / 3600))
            plugged = (
                need.arrival <= start and start + timedelta(hours=float(dt[t])) <= need.departure
            )
            bounds[pw[s, t]] = (0.0, need.max_power_kw if plugged else 0.0)
    a_eq, b_eq = [], []
    for t in range(T):  # power balance
        row = np.zeros(n)
        row[[v["imp"][t], v["dis"][t]]] = 1.0
        row[[v["exp"][t], v["ch"][t], v["curt"][t]]] = -1.0
        row[pw[:, t]] = -1.0
        a_eq.append(row)
        b_eq.append(p.site_load_kw[t] - p.pv_kw[t])
        row = np.zeros(n)  # stored energy
        row[v["e"][t]] = 1.0
        if t:
            row[v["e"][t - 1]] = -1.0
        row[v["ch"][t]] = -b.charge_efficiency * dt[t]
        row[v["dis"][t]] = dt[t] / b.discharge_efficiency
        a_eq.append(row)
        b_eq.append(e0 if t == 0 else 0.0)
    for s, need in enumerate(p.sessions):  # energy: delivered + unmet = wanted
        row = np.zeros(n)
        row[pw[s]] = dt
        row[un[s]] = 1.0
        a_eq.append(row)
        b_eq.append(need.energy_kwh)
    a_ub, b_ub = [], []
    for t in range(T):  # import above this month's peak is paid for
        row = np.zeros(n)
        row[v["imp"][t]] = 1.0
        row[pk] = -1.0
        a_ub.append(row)
        b_ub.append(gs.peak_so_far_kw)
        for g in p.groups:
            row = np.zeros(n)
            for s, need in enumerate(p.sessions):
                if (need.charger_id, need.connector_id) in g.members:
                    row[pw[s, t]] = 1.0
            a_ub.append(row)
            b_ub.append(g.max_power_kw)
    res = linprog(c, A_ub=np.array(a_ub), b_ub=b_ub, A_eq=np.array(a_eq), b_eq=b_eq,
                  bounds=bounds, method="highs")  # fmt: skip
    assert res.status == 0, res.message
    return float(res.fun)


def _random_problem(rng: np.random.Generator) -> tuple[Problem, Policy]:
    T = int(rng.integers(2, 6))
    price = rng.uniform(50.0, 200.0, T)
    pv = np.where(rng.random(T) < 0.7, rng.uniform(0.0, 150.0, T), 0.0)
    load = rng.uniform(0.0, 40.0, T)
    sessions = []
    for s in range(int(rng.integers(0, 4))):
        arr = int(rng.integers(0, T))
        dep = int(rng.integers(arr + 1, T + 1))
        sessions.append(
            _car(f"s{s}", float(rng.uniform(0, 120)), float(rng.uniform(10, 100)), arr, dep, s + 1)
        )
    gs = GridState(
        import_limit_kw=float(rng.uniform(60.0, 250.0)),
        export_limit_kw=float(rng.uniform(0.0, 100.0)),
        import_price_krw_per_kwh=price,
        # below every import price: buying to sell never pays (the LP has no grid-to-export)
        export_price_krw_per_kwh=float(rng.uniform(0.0, 0.9 * price.min())),
        demand_charge_krw_per_kw=float(rng.choice([0.0, rng.uniform(0.0, 3000.0)])),
        peak_so_far_kw=float(rng.uniform(0.0, 100.0)),
    )
    lo = float(rng.uniform(0.0, 0.3))
    bat = BatteryState(
        capacity_kwh=float(rng.uniform(20.0, 200.0)),
        soc_frac=float(rng.uniform(lo, 0.95)),
        soc_min_frac=lo,
        soc_max_frac=0.95,
        max_charge_kw=float(rng.uniform(10.0, 100.0)),
        max_discharge_kw=float(rng.uniform(10.0, 100.0)),
        charge_efficiency=float(rng.uniform(0.85, 1.0)),
        discharge_efficiency=float(rng.uniform(0.85, 1.0)),
        renewable_frac=float(rng.uniform(0.0, 1.0)),
        terminal_value_krw_per_kwh=float(rng.choice([np.nan, rng.uniform(0.0, 150.0)])),
    )
    if np.isnan(bat.terminal_value_krw_per_kwh):
        bat = BatteryState(**{**bat.__dict__, "terminal_value_krw_per_kwh": None})
    groups = (
        PowerGroup("cabinet", tuple(("C1", s + 1) for s in range(3)), float(rng.uniform(30, 150))),
    )
    # Money and unmet energy only: no label tier, no early/chatter tie-breakers.
    pol = Policy(
        unmet_weight_per_kwh=1e4,
        grid_to_ev_weight_per_kwh=0.0,
        cost_weight_per_krw=1.0,
        early_weight_per_kwh=0.0,
        chatter_weight_per_kw=0.0,
        battery_wear_krw_per_kwh=float(rng.uniform(0.0, 40.0)),
        beyond_horizon_frac=0.0,
    )
    p = _problem(T, pv, load, gs, sessions=tuple(sessions), battery=bat, groups=groups, policy=pol)
    return p, pol


@pytest.mark.parametrize("seed", range(40))
def test_objective_matches_an_independent_formulation(seed):
    p, pol = _random_problem(np.random.default_rng(seed))
    plan = solve(p)
    assert plan.status == "optimal"
    ref = _reference(p, pol)
    assert plan.objective_parts["objective"] == pytest.approx(ref, rel=1e-6, abs=1e-3)
    # The reported parts add up to the same money.
    parts = plan.objective_parts
    money = (
        parts["energy_cost_krw"]
        - parts["export_revenue_krw"]
        + parts["demand_charge_krw"]
        - parts["terminal_value_krw"]
        + pol.battery_wear_krw_per_kwh * float(plan.battery_discharge_kw @ p.grid.durations_h)
        + pol.unmet_weight_per_kwh * parts["unmet_kwh"]
    )
    assert money == pytest.approx(ref, rel=1e-6, abs=1e-3)


# --------------------------------------------------------------------------- set points


def test_first_step_rounds_below_the_minimum_power_to_the_nearer_end():
    cars = tuple(
        SessionNeed(f"s{i}", "C1", i + 1, T0, T0 + 2 * H, 10.0, 50.0, min_power_kw=m)
        for i, m in enumerate([4.0, 4.0, 4.0, 4.0, 4.0, 0.5, 1.5])
    )
    p = _problem(2, [30.0, 0.0], [0.0, 0.0], _grid(2, 100.0, export_kw=10.0), sessions=cars,
                 battery=_battery(soc_frac=0.5), policy="cost")  # fmt: skip
    plan = solve(p)
    kw = np.array([1.9, 2.0, 3.9, 4.0, 0.0, 0.3, 0.8])
    plan = dataclasses.replace(plan, session_kw=np.column_stack([kw, np.zeros(7)]))
    sp = plan.first_step()
    # below half the minimum -> 0; from half on -> the minimum; at or above it: as planned
    assert list(sp.session_kw.values()) == [0.0, 4.0, 4.0, 4.0, 0.0, 0.5, 1.5]
    assert list(sp.session_kw) == [f"s{i}" for i in range(7)]
    assert (sp.start, sp.duration_s) == (T0, 3600.0)
    assert sp.battery_net_charge_kw == pytest.approx(
        plan.battery_charge_kw[0] - plan.battery_discharge_kw[0]
    )
    assert sp.battery_setpoint_kw == -sp.battery_net_charge_kw
    assert (sp.grid_import_kw, sp.grid_export_kw, sp.curtailed_kw) == pytest.approx(
        (plan.grid_import_kw[0], plan.grid_export_kw[0], plan.curtailed_kw[0])
    )


def test_without_the_premium_re100_shifts_the_site_load_through_the_battery():
    # Grid energy stored for the site load is not grid energy into a car: tier 2 charges
    # it on entry and credits it back when it reaches the load, so without the premium
    # money decides (60 / 0.855 = 70 < 200 KRW per kWh at the load).
    p = _problem(
        2, [0.0, 0.0], [0.0, 40.0], _grid(2, [60.0, 200.0]),
        battery=_battery(terminal_value_krw_per_kwh=0.0),
        policy=Policy(grid_to_battery_premium=0.0),
    )  # fmt: skip
    plan = solve(p)
    assert plan.battery_charge_kw[0] == pytest.approx(40.0 / 0.855, rel=1e-6)
    assert plan.battery_discharge_kw[1] == pytest.approx(40.0, rel=1e-6)
    assert plan.grid_import_kw[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("policy", ["re100", "cost"])
def test_pv_that_may_be_exported_is_not_curtailed_even_unpaid(policy):
    p = _problem(1, [50.0], [0.0], _grid(1, 100.0, export_kw=30.0, export_price=0.0),
                 policy=policy)  # fmt: skip
    plan = solve(p)
    assert plan.grid_export_kw[0] == pytest.approx(30.0, abs=1e-6)
    assert plan.curtailed_kw[0] == pytest.approx(20.0, abs=1e-6)
