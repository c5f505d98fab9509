"""Wall time of the socket-free simulation of the seed station, per policy.

Usage: .venv/bin/python benchmarks/simulate.py [--quick] [--days 1,30] [--jobs N]
       [--policy re100,cost,...] [--no-departure-replans]
       .venv/bin/python benchmarks/simulate.py --year [--policy re100,cost] [--jobs 2]
       [--serial-year]
       .venv/bin/python benchmarks/simulate.py --warmup [--days 70] [--policy re100]

Simulates one day and 30 days (``--quick``: 1 and 3 days) of the Gwangju seed station
on the mixed-week weather (repeated past its seven days) with seeded cars, once per
policy on the same sun and cars, and prints for each: wall time, its ratio to the
uncontrolled run of the same span, seconds per simulated day, LP solves and their
time, and the KPIs. The perfect-foresight optimum of each span is timed and
summarised too. Site inputs (weather, PV model, site load) are prepared once per span
and timed separately. ``--jobs N`` runs N policies at a time in worker processes (as
``megastation simulate`` does) and also prints the span's total wall time; each run's
own time is then measured in its worker.

``--year``: for each controlled policy (default ``re100,cost``), 14 days on the solve
path as it was before #15 (scipy's ``linprog``, cold, ``dispatch.solve_reference``;
expected cars re-learned hourly; a plan on every departure) and on the current one,
their KPI differences, then a whole year (365 days from the weather's first day) as
``megastation simulate`` runs it: cut at month starts into ``--jobs`` parts in as many
processes (:mod:`megastation.sim.parts`), one policy at a time: wall time, CPU time of
all processes (steadier than wall time on a shared machine) per simulated day, plans,
KPIs. ``--serial-year`` also runs each year in one process
and prints how far the year in parts is from it. Not a test.

``--warmup``: how long a month's warm-up must be (:data:`megastation.sim.parts.WARMUP`).
One run from the weather's first day through the month starts within ``--days`` (default
70: 1 August and 1 September) plus 5 days; then, for each of those month starts, runs
from 0, 1, 2 and 3 days before it, as a part would run; their 5 days after the month
start compared day by day with the long run (delivered and imported kWh).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import resource
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

from megastation.control.demand import RELEARN_INTERVAL
from megastation.core.config import load_station, seeds_dir
from megastation.core.fleet import generate_visits
from megastation.dispatch import solve_reference
from megastation.sim.parts import _part_inputs, month_parts, simulate_in_parts
from megastation.sim.simulator import (
    POLICIES,
    daily_kpis,
    perfect_foresight,
    prepare_site,
    read_weather,
    simulate,
    weather_start,
)

KPI_COLUMNS = (
    ("delivered kWh", "energy_delivered_kwh", "{:.0f}"),
    ("unmet kWh", "unmet_kwh", "{:.0f}"),
    ("renewable %", "renewable_frac", "pct"),
    ("grid kWh", "grid_import_kwh", "{:.0f}"),
    ("peak kW", "peak_import_kw", "{:.0f}"),
    ("over limit", "steps_over_limit", "{:d}"),
    ("cost kKRW", "cost_krw", "k"),
)


def _fmt(value: float, fmt: str) -> str:
    if fmt == "pct":
        return f"{100 * value:.1f}"
    if fmt == "k":
        return f"{value / 1000:.0f}"
    if fmt == "{:d}":
        return f"{int(value):d}"
    return fmt.format(value)


def _run(station, pol, kwargs):  # in a worker process
    r = simulate(station, policy=pol, with_perfect_foresight=False, **kwargs)
    return pol, r.wall_s, r.plans, r.solve_s, r.kpis


# the KPIs #15 holds to within 1 % of the solve path before it
YEAR_KPIS = (
    ("delivered", "energy_delivered_kwh"),
    ("unmet", "unmet_kwh"),
    ("renewable", "renewable_frac"),
    ("import", "grid_import_kwh"),
    ("peak", "peak_import_kw"),
    ("cost", "cost_krw"),
)
YEAR_DAYS = 365
COMPARE_DAYS = 14


def _timed(station, pol, days, before, common):  # in a worker process
    """One run: (policy, days, before?, wall s, CPU s, plans, KPIs)."""
    start = common["start"]
    end = start + timedelta(days=days)
    site = prepare_site(station, start, end, common["weather"], common["seed"])
    kwargs = dict(common, days=days, site=site)
    if before:  # as before #15: scipy's linprog, cold; expected cars re-learned hourly;
        kwargs["solver"] = solve_reference  # a plan on every departure
        kwargs["relearn_interval"] = RELEARN_INTERVAL
        kwargs["replan_on_departure"] = "always"
    cpu, wall = time.process_time(), time.perf_counter()
    shown = [0]

    def progress(frac: float) -> None:  # a line every tenth of a long run
        if days >= 100 and frac >= (shown[0] + 1) / 10:
            shown[0] += 1
            print(f"   {pol}: {frac:.0%} of {days:g} days, {time.perf_counter() - wall:.0f} s "
                  f"wall, {time.process_time() - cpu:.0f} s CPU", flush=True)  # fmt: skip

    r = simulate(station, policy=pol, with_perfect_foresight=False, progress=progress, **kwargs)
    return pol, days, before, r.wall_s, time.process_time() - cpu, r.plans, r.kpis


def _year(args, station, wx, start) -> None:
    """``--year`` (see the module docstring; ``--days A,B`` compares A days and runs B
    instead of 14 and 365, for a quick look)."""
    global COMPARE_DAYS, YEAR_DAYS
    if args.days:
        COMPARE_DAYS, YEAR_DAYS = (float(d) for d in args.days.split(","))
    policies = [p for p in args.policy.split(",") if p in ("re100", "cost")]
    common = dict(start=start, weather=wx, seed=args.seed)
    runs = [(p, COMPARE_DAYS, True) for p in policies]
    runs += [(p, COMPARE_DAYS, False) for p in policies]
    if args.serial_year:
        runs += [(p, YEAR_DAYS, False) for p in policies]
    got = {}
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max(1, args.jobs), mp_context=ctx) as pool:
        futures = [pool.submit(_timed, station, p, d, b, common) for p, d, b in runs]
        for f in cf.as_completed(futures):
            pol, days, before, wall, cpu, plans, k = f.result()
            label = "one process" if days == YEAR_DAYS else "before" if before else "now"
            got[(pol, days, label)] = (wall, cpu, plans, k)
            print(f"   {pol} {days:g} days ({label}): {wall:.0f} s wall, {cpu:.0f} s CPU, "
                  f"{plans} plans", flush=True)  # fmt: skip
    for pol in policies:
        got[(pol, YEAR_DAYS, "parts")] = _year_in_parts(station, pol, common, args.jobs)
    _year_table(policies, got)


def _year_in_parts(station, pol, common, jobs):
    """A year of ``pol`` in ``jobs`` parts of whole months in as many processes: (wall s,
    CPU s of this process and its workers, plans, KPIs)."""

    def cpu_s() -> float:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + kids.ru_utime + kids.ru_stime

    cpu, wall = cpu_s(), time.perf_counter()
    r = simulate_in_parts(station, policy=pol, days=YEAR_DAYS, jobs=jobs,
                          with_perfect_foresight=False, **common)  # fmt: skip
    wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
    print(f"   {pol} {YEAR_DAYS:g} days in parts, {jobs} at a time: {wall:.0f} s wall, "
          f"{cpu:.0f} s CPU, {r.plans} plans", flush=True)  # fmt: skip
    return wall, cpu, r.plans, r.kpis


def _year_table(policies, got) -> None:
    head = f"{'run':<30}{'wall s':>9}{'CPU s':>8}{'CPU s/day':>10}{'plans/day':>10}"
    head += "".join(f"{label:>12}" for label, _ in YEAR_KPIS)
    width = 30 + 9 + 8 + 10 + 10
    print("\n" + head)
    for pol in policies:
        rows = [
            (f"{pol} {COMPARE_DAYS:g} d before #15", COMPARE_DAYS, "before"),
            (f"{pol} {COMPARE_DAYS:g} d now", COMPARE_DAYS, "now"),
            (f"{pol} {YEAR_DAYS:g} d one process", YEAR_DAYS, "one process"),
            (f"{pol} {YEAR_DAYS:g} d in parts", YEAR_DAYS, "parts"),
        ]
        for name, days, label in rows:
            if (pol, days, label) not in got:
                continue
            wall, cpu, plans, k = got[(pol, days, label)]
            line = f"{name:<30}{wall:>9.0f}{cpu:>8.0f}{cpu / days:>10.2f}{plans / days:>10.0f}"
            line += "".join(f"{_kpi(getattr(k, key), key):>12}" for _, key in YEAR_KPIS)
            print(line)
        worst = 0.0
        for a, b, what in (("now", "before", f"{COMPARE_DAYS:g} d now vs before"),
                           ("parts", "one process", f"{YEAR_DAYS:g} d parts vs one")):  # fmt: skip
            days = COMPARE_DAYS if a == "now" else YEAR_DAYS
            if (pol, days, b) not in got:
                continue
            now, before = got[(pol, days, a)][3], got[(pol, days, b)][3]
            diffs = [_rel(getattr(now, key), getattr(before, key)) for _, key in YEAR_KPIS]
            print(f"{pol} {what}".ljust(width) + "".join(f"{100 * d:>+11.2f}%" for d in diffs))
            if a == "now":
                worst = max(abs(d) for d in diffs)
        wall = got[(pol, YEAR_DAYS, "parts")][0]
        print(f"{pol}: a year in {wall / 60:.1f} min wall (target < 5), largest KPI "
              f"difference over {COMPARE_DAYS:g} days {100 * worst:.2f} % (target < 1 %)\n")  # fmt: skip


WARMUP_DAYS = (0, 1, 2, 3)
AFTER_DAYS = 5


def _warmup(args, station, wx, start) -> None:
    """``--warmup`` (see the module docstring)."""
    pol = args.policy.split(",")[0] if args.policy in POLICIES else "re100"
    span = float(args.days or 70)
    bounds = [
        s for s, _ in month_parts(start, start + timedelta(days=span), station.site.timezone)
    ][1:]
    end = bounds[-1] + timedelta(days=AFTER_DAYS)
    site = prepare_site(station, start, end, wx, args.seed)
    visits = generate_visits(station, start, end, args.seed)
    common = dict(weather=wx, seed=args.seed, site=site, with_perfect_foresight=False)
    t = time.process_time()
    ref = simulate(
        station, policy=pol, start=start, days=(end - start).days, visits=visits, **common
    )
    print(f"one run {start:%Y-%m-%d} .. {end:%Y-%m-%d}: {time.process_time() - t:.0f} s CPU")
    print(f"{'month start':<12}{'warm-up d':>10}" + "".join(f"{'day ' + str(k):>16}" for k in range(AFTER_DAYS))
          + f"{'mean |d| kWh':>14}")  # fmt: skip
    for b in bounds:
        after = b + timedelta(days=AFTER_DAYS)
        want = daily_kpis(station, ref.flows, b, after).set_index("day")
        for w in WARMUP_DAYS:
            run_start = b - timedelta(days=w)
            if run_start < start:
                continue  # no warm-up before the long run's start
            cars, past = _part_inputs(visits, [], run_start, after)
            r = simulate(station, policy=pol, start=run_start, hours=(after - run_start) / timedelta(hours=1),
                         visits=cars, history=past or None, count_from=b, **common)  # fmt: skip
            d = daily_kpis(station, r.flows, b, after).set_index("day") - want
            cells = "".join(
                f"{e:>+8.1f}/{i:>+7.1f}"
                for e, i in zip(d["energy_kwh"], d["grid_import_kwh"], strict=True)
            )
            print(f"{b.astimezone(ZoneInfo(station.site.timezone)):%Y-%m-%d}  {w:>10}{cells}{d['energy_kwh'].abs().mean():>14.1f}")  # fmt: skip
    print("(each day: delivered / imported kWh, the part's run minus the long run)")


def _kpi(value: float, key: str) -> str:
    if key == "renewable_frac":
        return f"{100 * value:.2f}%"
    if key == "cost_krw":
        return f"{value / 1e6:.2f}M"
    return f"{value:.0f}"


def _rel(now: float, before: float) -> float:
    return (now - before) / abs(before) if before else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 and 3 days instead of 1 and 30")
    ap.add_argument("--policy", default=",".join(("uncontrolled", "greedy", "re100", "cost")))
    ap.add_argument("--weather", default="mixed-week")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", default=None, help="comma-separated spans, e.g. 1,30")
    ap.add_argument("--jobs", type=int, default=1, help="policies at a time (processes)")
    ap.add_argument("--no-departure-replans", action="store_true")
    ap.add_argument(
        "--year", action="store_true", help="a year of re100/cost beside 14 days before #15"
    )
    ap.add_argument(
        "--serial-year", action="store_true", help="--year: also each year in one process"
    )
    ap.add_argument("--warmup", action="store_true", help="how long a month's warm-up must be")
    args = ap.parse_args()
    if args.warmup:
        station = load_station(seeds_dir() / "gwangju-donggu.toml")
        wx = read_weather(args.weather)
        _warmup(args, station, wx, weather_start(wx, station.site.timezone))
        return
    if args.year:
        station = load_station(seeds_dir() / "gwangju-donggu.toml")
        wx = read_weather(args.weather)
        start = weather_start(wx, station.site.timezone)
        if args.policy == ap.get_default("policy"):
            args.policy = "re100,cost"
        print(f"{station.site.name}, weather {args.weather}, seed {args.seed}, "
              f"start {start:%Y-%m-%d}, {args.jobs} run(s) at a time")  # fmt: skip
        _year(args, station, wx, start)
        return
    policies = [p for p in args.policy.split(",") if p]
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        ap.error(f"--policy: unknown {', '.join(bad)}; use {', '.join(POLICIES)}")
    if "uncontrolled" not in policies:
        policies.insert(0, "uncontrolled")  # the baseline of the ratios
    policies.sort(key=lambda p: p != "uncontrolled")
    spans = (1, 3) if args.quick else (1, 30)
    if args.days:
        spans = tuple(float(d) for d in args.days.split(","))

    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    wx = read_weather(args.weather)
    start = weather_start(wx, station.site.timezone)
    print(f"{station.site.name}, weather {args.weather}, seed {args.seed}, start {start:%Y-%m-%d}")
    for days in spans:
        end = start + timedelta(days=days)
        t = time.perf_counter()
        site = prepare_site(station, start, end, wx, args.seed)
        visits = generate_visits(station, start, end, args.seed)
        prep_s = time.perf_counter() - t
        print(f"\n== {days} simulated day(s): {len(visits)} car visits; site inputs {prep_s:.2f} s")
        kwargs = dict(
            start=start,
            days=days,
            weather=wx,
            seed=args.seed,
            site=site,
            visits=visits,
            replan_on_departure=not args.no_departure_replans,
        )
        got = {}
        t_span = time.perf_counter()
        if args.jobs <= 1:
            for pol in policies:
                got[pol] = _run(station, pol, kwargs)
                print(f"   {pol}: {got[pol][1]:.1f} s", flush=True)
        else:
            ctx = mp.get_context("spawn")
            order = sorted(policies, key=lambda p: p not in ("re100", "cost"))
            with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
                for f in cf.as_completed([pool.submit(_run, station, p, kwargs) for p in order]):
                    pol, wall, *_ = f.result()
                    got[pol] = f.result()
                    print(f"   {pol}: {wall:.1f} s", flush=True)
        span_s = time.perf_counter() - t_span
        rows = [got[p] for p in policies]
        base_s = got["uncontrolled"][1]
        t = time.perf_counter()
        vis = [v for v in visits if start <= v.arrival < end]
        pf, _ = perfect_foresight(station, start, end, site, vis)
        rows.append(("perfect foresight", time.perf_counter() - t, 1, float("nan"), pf))
        head = f"{'run':<18}{'wall s':>9}{'x uncontr.':>11}{'s/day':>8}{'LPs':>7}{'LP s':>8}"
        head += "".join(f"{label:>14}" for label, _, _ in KPI_COLUMNS)
        print(head)
        for name, wall, plans, solve_s, k in rows:
            line = f"{name:<18}{wall:>9.2f}{wall / base_s:>11.1f}{wall / days:>8.2f}"
            line += f"{plans:>7d}{solve_s:>8.1f}"
            line += "".join(f"{_fmt(getattr(k, key), fmt):>14}" for _, key, fmt in KPI_COLUMNS)
            print(line)
        slowest = max(w for n, w, *_ in rows if n != "perfect foresight")
        print(f"slowest policy: {slowest / days:.1f} s per simulated day, "
              f"~{365 * slowest / days / 60:.0f} min per simulated year")  # fmt: skip
        print(f"all {len(policies)} policies, {args.jobs} at a time: {span_s:.1f} s wall")


if __name__ == "__main__":
    main()
