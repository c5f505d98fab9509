"""Dispatch benchmark: LP size scaling, and a simulated week of the seed station.

    .venv/bin/python benchmarks/dispatch.py            # full (a few minutes on 2 cores)
    .venv/bin/python benchmarks/dispatch.py --quick    # smaller: a day, fewer repeats

Part 1 prints model-build time, HiGHS solve time and their sum (median of several
runs; the fastest run too, as the machine is shared) for 10, 50, 200, 500 sessions x 96
and 192 steps, and each total as a ratio to the 10 x 96 row. Sessions are spread over the
horizon (dwell 0.5-8 h, 7-200 kW) on 1 connector per 2 sessions, in cabinets of 8,
with PV, a battery, a grid limit, time-of-use prices and a demand charge.

Part 2 plays a week of the seed station (seeds/gwangju-donggu.toml) with car visits
from megastation.core.fleet.generate_visits and actual PV from pvlib on
seeds/weather/mixed-week.csv, and prints renewable share, grid energy, peak and energy
delivered for uncontrolled, PV-surplus greedy, the receding-horizon loop (24 h horizon,
arrivals not known in advance) with perfect PV forecasts, with perfect PV and arrival
forecasts, and with the pvlib forecasts (clear sky + nowcast from the measured PV:
forecasts.forecast_pv), and the
perfect-foresight optimum; then the share of the optimum's improvement over
uncontrolled (renewable energy into cars) that each online run captures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from megastation.control.needs import expected_demand_from_profile
from megastation.core.config import load_station, seeds_dir
from megastation.core.fleet import load_fleet_profile
from megastation.dispatch import (
    BatteryState,
    GridState,
    PowerGroup,
    Problem,
    SessionNeed,
    TimeGrid,
    connector_limit_kw,
    solve,
    station_battery,
    station_grid_state,
    station_groups,
)
from megastation.evaluation.baselines import perfect_foresight, pv_surplus_greedy, uncontrolled
from megastation.evaluation.replay import replay
from megastation.evaluation.scenario import Scenario, capture

T0 = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)  # 2026-07-02 00:00 in Seoul
REPORTED = "reported_renewable_to_ev_kwh"  # capture by the station's own accounting


def synthetic(
    n_sessions: int, n_steps: int, seed: int = 1, coarse_after_h: float | None = None
) -> Problem:
    """``n_steps`` 15-minute steps; ``coarse_after_h``: the same span with hourly steps
    after that many hours (inputs averaged over each hour)."""
    rng = np.random.default_rng(seed)
    grid = TimeGrid(T0, n_steps)
    if coarse_after_h is not None:
        grid = TimeGrid.aligned(T0, n_steps / 4, coarse_after_h=coarse_after_h)
    horizon_h = n_steps / 4
    arr = rng.uniform(-2, horizon_h - 1, n_sessions)
    dwell = rng.uniform(0.5, 8, n_sessions)
    arr = np.maximum(arr, -1.0)
    dep = np.maximum(arr + dwell, 0.25)
    n_conn = max(1, n_sessions // 2)
    sessions = tuple(
        SessionNeed(
            f"s{i}",
            f"C{i % n_conn}",
            1,
            T0 + timedelta(hours=float(arr[i])),
            T0 + timedelta(hours=float(dep[i])),
            float(rng.uniform(5, 50)),
            float(rng.choice([7.0, 50.0, 100.0, 200.0])),
        )
        for i in range(n_sessions)
    )
    groups = tuple(
        PowerGroup(f"cab{k}", tuple((f"C{j}", 1) for j in range(k, min(k + 8, n_conn))), 300.0)
        for k in range(0, n_conn, 8)
    )
    h = (np.arange(n_steps) / 4 + 9) % 24
    pv = grid.mean_of_fine(np.clip(200 * np.sin((h - 6) / 12 * np.pi), 0, None))
    price = grid.mean_of_fine(np.where((h >= 23) | (h < 9), 63.1, 110.0))
    gs = GridState(max(400.0, 20.0 * n_sessions), 100.0, price, 0.0, 2580.0, 50.0)
    battery = BatteryState(500, 0.5, 0.1, 0.95, 250, 250, 0.96, 0.96, 0.3)
    return Problem(grid, pv, np.full(grid.n_steps, 8.0), gs, sessions, battery, groups)


def part1(quick: bool) -> None:
    print("== LP size scaling (median over runs; coarse: 15 min for 6 h, then hourly) ==")
    print(
        f"{'sessions':>8} {'steps':>5} {'grid':>6} {'LP steps':>8} {'build ms':>9} "
        f"{'solve ms':>9} {'total ms':>9} {'min ms':>7} {'x ref':>6}  status"
    )
    sizes = [(s, t, c) for t in (96, 192) for s in (10, 50, 200, 500) for c in (None, 6.0)]
    ref = None  # the first row (10 sessions x 96 fine steps): the in-process baseline
    for s, t, coarse in sizes:
        problem = synthetic(s, t, coarse_after_h=coarse)
        runs = 3 if quick or s >= 200 else 9
        build, solve_s = [], []
        for _ in range(runs):
            plan = solve(problem)
            build.append(plan.build_time_s)
            solve_s.append(plan.solve_time_s)
        b, sv = statistics.median(build) * 1e3, statistics.median(solve_s) * 1e3
        best = min(x + y for x, y in zip(build, solve_s, strict=True)) * 1e3
        ref = ref or b + sv
        kind = "fine" if coarse is None else "coarse"
        print(
            f"{s:>8} {t:>5} {kind:>6} {problem.grid.n_steps:>8} {b:>9.1f} {sv:>9.1f} "
            f"{b + sv:>9.1f} {best:>7.1f} {(b + sv) / ref:>6.2f}  {plan.status}"
        )
    print("x ref: total time / the 10 x 96 fine row's, measured in this process")


def week_scenario(days: int, seed: int) -> tuple[Scenario, object]:
    from forecasts.pvmodel import pv_power
    from forecasts.weather import read_csv
    from megastation.core.fleet import generate_visits

    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    n = 96 * days
    grid = TimeGrid(T0, n)
    weather = read_csv(seeds_dir() / "weather" / "mixed-week.csv")
    pv = pv_power(station.pv_site(), station.pv_site().arrays, weather)["pv_ac_kw"]
    pv = pv.reindex(grid.times).to_numpy(dtype=float)
    pv = np.nan_to_num(pv)
    visits = generate_visits(station, grid.start, grid.end - timedelta(hours=1), seed)
    visits = [replace(v, departure=min(v.departure, grid.end)) for v in visits]
    limits = {
        (ch.id, k): connector_limit_kw(station, ch.id, k)
        for ch in station.chargers
        for k in ch.connector_ids
    }
    sc = Scenario(
        grid=grid,
        pv_actual_kw=pv,
        site_load_kw=np.full(n, station.site.base_load_kw),
        grid_state=station_grid_state(station, grid),
        visits=visits,
        battery=station_battery(station),
        groups=station_groups(station),
        connector_limit_kw=limits,
        policy=station.site.policy,
    )
    return sc, station


def pvlib_forecast(sc: Scenario, station) -> callable:
    from forecasts.forecast import forecast_pv

    measured = pd.Series(sc.pv_actual_kw, index=sc.grid.times)

    def forecast(issue: datetime, grid: TimeGrid) -> np.ndarray:
        fc = forecast_pv(station.pv_site(), issue, grid.n_steps, 15, None, measured)
        return fc["pv_ac_kw"].to_numpy(dtype=float)

    return forecast


def part2(quick: bool) -> None:
    days = 1 if quick else 7
    sc, station = week_scenario(days, seed=42)
    print(
        f"\n== Seed station, {days} day(s) from {sc.grid.start:%Y-%m-%d %H:%M} UTC: "
        f"{len(sc.visits)} visits, {sum(v.energy_wanted_kwh for v in sc.visits):.0f} kWh wanted, "
        f"PV {sc.pv_actual_kw @ sc.grid.durations_h:.0f} kWh =="
    )
    runs = []
    t = time.perf_counter()
    runs.append(uncontrolled(sc))
    runs.append(pv_surplus_greedy(sc))
    pf = perfect_foresight(sc)
    rh_perfect = replay(sc, horizon_steps=96, name="receding horizon, perfect PV")
    rh_known = replay(sc, horizon_steps=96, arrivals_known=True, name="RH, perfect PV + arrivals")
    fc_sc = replace(sc, pv_forecast=pvlib_forecast(sc, station))
    rh_pvlib = replay(fc_sc, horizon_steps=96, name="receding horizon, pvlib PV")
    # expected cars from the fleet profile the visits are drawn from (a station learns
    # the same from its history: megastation.control.needs.learn_expected_demand)
    demand = expected_demand_from_profile(station, load_fleet_profile())
    tz = station.site.timezone
    rh_exp = replay(
        sc, horizon_steps=96, expected=demand, timezone=tz, name="RH, perfect PV, expected cars"
    )
    rh_exp_pvlib = replay(
        fc_sc, horizon_steps=96, expected=demand, timezone=tz, name="RH, pvlib PV, expected cars"
    )
    runs += [rh_perfect, rh_known, rh_pvlib, rh_exp, rh_exp_pvlib, pf]
    print(
        f"{'strategy':<32} {'RE share':>8} {'RE->EV kWh':>10} {'reported':>8} {'grid->EV':>9} "
        f"{'import kWh':>10} {'peak kW':>8} {'delivered':>9} {'cost kKRW':>9} {'solve s':>8}"
    )
    for o in runs:
        s = o.summary()
        print(
            f"{o.name:<32} {s['renewable_share']:>8.1%} {s['renewable_to_ev_kwh']:>10.1f} "
            f"{s['reported_renewable_share']:>8.1%} "
            f"{s['grid_to_ev_kwh']:>9.1f} {s['grid_import_kwh']:>10.1f} {s['peak_kw']:>8.1f} "
            f"{s['delivered_kwh']:>9.1f} {s['energy_cost_krw'] / 1e3:>9.1f} {s['solve_time_s']:>8.2f}"
        )
    print(
        "RE share / RE->EV: the LP's labelled battery pools; reported: pro-rata battery "
        "content (megastation.core.accounting, what the station's exports show)"
    )
    base = runs[0]
    for o in (rh_perfect, rh_known, rh_pvlib, rh_exp, rh_exp_pvlib):
        print(
            f"capture ({o.name}): renewable->EV reported {capture(o, pf, base, REPORTED):.1%}, "
            f"labelled {capture(o, pf, base):.1%}; grid->EV {capture(o, pf, base, 'grid_to_ev_kwh'):.1%}"
        )
    print(f"(wall time {time.perf_counter() - t:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a day and fewer repeats")
    ap.add_argument("--part", choices=("1", "2", "all"), default="all")
    args = ap.parse_args()
    if args.part in ("1", "all"):
        part1(args.quick)
    if args.part in ("2", "all"):
        part2(args.quick)


if __name__ == "__main__":
    main()
