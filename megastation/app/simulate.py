"""Several policies on the same simulated site and cars, side by side (``megastation
simulate``): :func:`run_policies` runs them (in worker processes when ``jobs`` > 1; a span
over months in parts of whole months, :mod:`megastation.sim.parts`) and
writes one database and three CSVs per policy and ``summary.csv``; :func:`kpi_table`
renders KPIs side by side with rich (also the demo's summary).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import queue as queue_mod
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import Progress
from rich.table import Table

from megastation.core.config import Station
from megastation.core.fleet import CarVisit, generate_visits
from megastation.reports import exports
from megastation.sim.parts import month_parts, simulate_in_parts
from megastation.sim.simulator import (
    Kpis,
    SimulationResult,
    perfect_foresight,
    prepare_site,
    read_weather,
    weather_start,
)
from megastation.store import Store

#: the controlled policies take ~20x longer than the others: they start first
CONTROLLED = ("re100", "cost")
#: how often the parent collects the workers' progress [s]
PROGRESS_POLL_S = 0.2

# rows of the comparison table: (label, Kpis field, format)
_ROWS = (
    ("energy delivered [kWh]", "energy_delivered_kwh", "{:,.0f}"),
    ("unmet energy [kWh]", "unmet_kwh", "{:,.0f}"),
    ("renewable share [%]", "renewable_frac", "pct"),
    ("grid import [kWh]", "grid_import_kwh", "{:,.0f}"),
    ("peak import [kW]", "peak_import_kw", "{:,.0f}"),
    ("grid limit [kW]", "grid_limit_kw", "{:,.0f}"),
    ("steps over limit", "steps_over_limit", "{:d}"),
    ("cost [KRW]", "cost_krw", "{:,.0f}"),
    ("PV used [kWh]", "pv_kwh", "{:,.0f}"),
    ("sessions", "sessions", "{:d}"),
)


def kpi_table(
    results: dict[str, Kpis], pf: Kpis | dict[str, Kpis] | None = None, *, title: str = ""
) -> Table:
    """A rich Table: one column per run (and the perfect-foresight optimum; ``pf`` by policy
    tiers gives one column each, "perfect foresight" for re100's)."""
    cols = dict(results)
    for tiers, k in (pf if isinstance(pf, dict) else {"re100": pf}).items():
        if k is not None:
            cols["perfect foresight" if tiers == "re100" else f"perfect foresight ({tiers})"] = k
    t = Table(title=title or None)
    t.add_column("")
    for name in cols:
        t.add_column(name, justify="right")
    for label, key, fmt in _ROWS:
        vals = []
        for k in cols.values():
            v = getattr(k, key)
            vals.append(
                f"{100 * v:.1f}" if fmt == "pct" else fmt.format(int(v) if fmt == "{:d}" else v)
            )
        t.add_row(label, *vals)
    return t


def write_flow_csvs(store: Store, station: Station, out_dir: Path, prefix: str = "") -> list[Path]:
    """``<prefix>energy-flows.csv``, ``<prefix>sessions.csv`` (by source) and
    ``<prefix>daily.csv`` of a store, in ``out_dir``."""
    paths = []
    for name, fn in (
        ("energy-flows", exports.energy_flows_frame),
        ("sessions", exports.sessions_by_source_frame),
        ("daily", exports.daily_frame),
    ):
        p = out_dir / f"{prefix}{name}.csv"
        exports.write_frame(fn(store, station), p)
        paths.append(p)
    return paths


def write_run_csvs(result: SimulationResult, station: Station, out_dir: Path) -> list[Path]:
    """The flow CSVs of one simulated run's store, named ``<policy>-*.csv``."""
    store = Store(result.db_path)
    try:
        return write_flow_csvs(store, station, out_dir, prefix=f"{result.policy}-")
    finally:
        store.close()


def _run_policy(
    station: Station,
    policy: str,
    kwargs: dict[str, Any],
    out_dir: Path,
    with_pf: bool,
    progress: Callable[[float], None] | None = None,
    jobs: int = 1,
) -> tuple[str, Kpis, Kpis | None]:
    """One policy's run (in ``jobs`` parts of whole months when it spans months:
    :mod:`megastation.sim.parts`), its CSVs; returns (policy, KPIs, perfect-foresight
    KPIs or None)."""
    r = simulate_in_parts(
        station,
        policy=policy,
        db_path=out_dir / f"{policy}.db",
        with_perfect_foresight=with_pf,
        progress=progress,
        jobs=jobs,
        **kwargs,
    )
    write_run_csvs(r, station, out_dir)
    return policy, r.kpis, r.perfect_foresight


def _queue_progress(queue: Any, policy: str) -> Callable[[float], None]:
    return lambda x: queue.put((policy, x))


def _run_policy_in_worker(
    station: Station,
    policy: str,
    kwargs: dict[str, Any],
    out_dir: Path,
    with_pf: bool,
    queue: Any,
) -> tuple[str, Kpis, Kpis | None]:
    return _run_policy(station, policy, kwargs, out_dir, with_pf, _queue_progress(queue, policy))


def _run_parallel(
    station: Station,
    order: Sequence[str],
    kwargs: dict[str, Any],
    out_dir: Path,
    pf_policy: str,
    jobs: int,
    on_progress: Callable[[str, float], None],
) -> dict[str, tuple[Kpis, Kpis | None]]:
    """The policies in ``jobs`` worker processes, progress relayed through a queue."""
    done: dict[str, tuple[Kpis, Kpis | None]] = {}
    ctx = mp.get_context("spawn")  # no fork of a process with threads (rich)
    with ctx.Manager() as manager:
        q = manager.Queue()
        with cf.ProcessPoolExecutor(min(jobs, len(order)), mp_context=ctx) as pool:
            pending = {
                pool.submit(_run_policy_in_worker, station, p, kwargs, out_dir, p == pf_policy, q)
                for p in order
            }
            while pending:
                finished, pending = cf.wait(pending, timeout=PROGRESS_POLL_S)
                try:
                    while True:
                        on_progress(*q.get_nowait())
                except queue_mod.Empty:
                    pass
                for f in finished:
                    p, k, pf = f.result()
                    done[p] = (k, pf)
    return done


def run_policies(
    station: Station,
    policies: Sequence[str],
    *,
    days: float,
    start: datetime | None,
    weather: str,
    seed: int,
    out_dir: Path,
    plan_interval_s: float | None,
    jobs: int,
    keep_plans: bool = False,
    replan_on_departure: bool = True,
    console: Any = None,
    visits: Sequence[CarVisit] | None = None,
    history: Sequence[CarVisit] | None = None,
) -> tuple[dict[str, Kpis], dict[str, Kpis]]:
    """Run each policy on the same site and cars, ``jobs`` of them at a time in worker
    processes (policies are independent, the results are the same as one at a time);
    a span over more than one calendar month instead runs each policy in ``jobs`` parts of
    whole months in as many processes (:mod:`megastation.sim.parts`, close to but not the
    same as one run); write DBs, CSVs and ``summary.csv``. Returns the KPIs by policy and the
    perfect-foresight optima's by tiers: re100's always, cost's too when ``cost`` is run.
    ``visits`` replace the generated cars (real sessions, :mod:`megastation.sim.sessions`);
    ``history`` is preloaded into every store."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wx = read_weather(weather)
    t0 = start or weather_start(wx, station.site.timezone)
    end = t0 + timedelta(days=days)
    kwargs = {
        "start": t0,
        "days": days,
        "weather": wx,
        "seed": seed,
        "plan_interval_s": plan_interval_s,
        "visits": list(visits) if visits is not None else generate_visits(station, t0, end, seed),
        "history": list(history) if history else None,
        "site": prepare_site(station, t0, end, wx, seed),
        "keep_plan_horizons": keep_plans,
        "replan_on_departure": replan_on_departure,
    }
    order = sorted(policies, key=lambda p: p not in CONTROLLED)
    pf_policy = order[-1]  # the perfect foresight goes with a quick run
    # a span over months runs each policy in parts of whole months on all the jobs, one
    # policy after the other; a shorter one runs the policies side by side
    by_month = jobs > 1 and len(month_parts(t0, end, station.site.timezone)) > 1
    with Progress(console=console, transient=True, disable=console is None) as prog:
        tasks = {p: prog.add_task(p, total=1.0) for p in order}
        if jobs <= 1 or len(order) == 1 or by_month:
            done = {}
            for p in order:
                _, k, pf = _run_policy(
                    station,
                    p,
                    kwargs,
                    out_dir,
                    p == pf_policy,
                    lambda x, t=tasks[p]: prog.update(t, completed=x),
                    jobs=jobs if by_month else 1,
                )
                done[p] = (k, pf)
        else:
            done = _run_parallel(
                station,
                order,
                kwargs,
                out_dir,
                pf_policy,
                jobs,
                lambda p, x: prog.update(tasks[p], completed=x),
            )
    results = {p: done[p][0] for p in policies}
    optima = {"re100": done[pf_policy][1]}
    if "cost" in policies:  # the cost policy's own reference, on the cars the runs had
        # (dispatch.md, "The cost policy against its own optimum")
        optima["cost"], _ = perfect_foresight(
            station, t0, end, kwargs["site"], kwargs["visits"], policy="cost"
        )
    rows = [{"run": k, **v.as_dict()} for k, v in results.items()]
    for tiers, k in optima.items():
        run = "perfect_foresight" if tiers == "re100" else f"perfect_foresight_{tiers}"
        rows.append({"run": run, **k.as_dict()})
    exports.write_frame(pd.DataFrame(rows), out_dir / "summary.csv")
    return results, optima
