"""A long simulation cut at month starts and run in parallel worker processes.

One process simulates a controlled policy at about a day per second or two (some 160
plans a day), so a year takes several minutes even on the fast path. Its months are
nearly independent: the demand charge is billed per month, the battery forgets its
state within a day or two, and the cars are drawn in advance. So :func:`simulate_in_parts`
cuts the span at the station's local month starts into one part per worker, each a run of
whole months about as long as the others (:func:`balanced_parts`: a year on 2 workers is
two halves of six months, on 12 workers twelve months), and simulates each part in its
own worker process and store:

- each part starts :data:`WARMUP` before its first month (not before the span), with the
  battery at the station's initial SoC, and runs to its last month's end; it keeps only
  its months (flows, sessions, plans: :func:`megastation.store.merge.append_part`), the
  warm-up is thrown away;
- its store holds, as history, every car that left before its warm-up began: what the
  controller of one long run would have learned expected cars from (there, what each
  car got; here, what it wanted, which differs by the unmet energy, ~1 %);
- the site (weather, PV, base load) and the cars are drawn once for the whole span, as
  one long run draws them; the KPIs are computed from the merged flows as there.

Fewer, longer parts are closer to one long run (fewer warm-ups, fewer boundaries) and
cheaper: a year of re100 on 2 workers took 547 s of CPU (291 s wall) in two halves
against 579 s (300 s) in twelve months, the same afternoon (``benchmarks/simulate.py
--year``, README "A year in parts"). How close the parts come to one long run is measured there too;
:data:`WARMUP` was chosen there.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import math
import multiprocessing as mp
import queue as queue_mod
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from megastation.core.clock import utc
from megastation.core.config import Station
from megastation.core.fleet import CarVisit, generate_visits
from megastation.sim.options import POLICIES, SimulationError
from megastation.sim.simulator import (
    SimulationResult,
    fresh_store,
    prepare_site,
    read_weather,
    simulate,
    summarise_run,
    truncate_visit,
    weather_start,
)
from megastation.store import merge, records

#: how long each part runs before its month, from the station's initial battery SoC.
#: Chosen on a year of re100 (seed 1, mixed-week): the 5 days after the 1 August and
#: 1 September boundaries run from 0, 1, 2 and 3 days before, compared day by day with
#: one long run. Without a warm-up the first day delivers 78 / 36 kWh less and imports
#: 270 / 227 kWh less (empty connectors, battery at its initial SoC); with 1 day the mean
#: absolute daily difference is 5.2 / 11.2 kWh delivered, with 2 days 4.7 / 11.3, with
#: 3 days 4.4 / 10.2: what is left after one day (+-15 kWh a day of ~1,950, either
#: sign) does not shrink with a longer warm-up (``benchmarks/simulate.py --warmup``).
WARMUP = timedelta(days=1)
#: how often the parent collects the parts' progress [s]
PROGRESS_POLL_S = 0.5


def month_parts(start: datetime, end: datetime, tz: str) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at the local month starts (``tz``) strictly inside it."""
    zone = ZoneInfo(tz)
    cuts = [utc(start)]
    local = utc(start).astimezone(zone)
    month = datetime(local.year, local.month, 1, tzinfo=zone)
    while True:
        month = (month + timedelta(days=32)).replace(day=1)
        if utc(month) >= utc(end):
            break
        cuts.append(utc(month))
    cuts.append(utc(end))
    return list(itertools.pairwise(cuts))


def balanced_parts(
    months: Sequence[tuple[datetime, datetime]], n: int
) -> list[tuple[datetime, datetime]]:
    """Consecutive ``months`` joined into at most ``n`` consecutive parts, the longest of
    them as short as it can be (ties: the earlier cut)."""
    if n >= len(months):
        return list(months)
    if n <= 1:
        return [(months[0][0], months[-1][1])]
    secs = [(b - a).total_seconds() for a, b in months]
    ends = list(itertools.accumulate(secs))

    def span(i: int, j: int) -> float:  # months i .. j-1
        return ends[j - 1] - (ends[i - 1] if i else 0.0)

    m = len(months)
    # best[k][j]: the longest part, months 0 .. j-1 in k parts; cut[k][j]: its last cut
    best = [[math.inf] * (m + 1) for _ in range(n + 1)]
    cut = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for k in range(1, n + 1):
        for j in range(k, m + 1):
            for i in range(k - 1, j):
                worst = max(best[k - 1][i], span(i, j))
                if worst < best[k][j]:
                    best[k][j], cut[k][j] = worst, i
    bounds, j = [m], m
    for k in range(n, 0, -1):
        j = cut[k][j]
        bounds.append(j)
    bounds.reverse()
    return [(months[i][0], months[j - 1][1]) for i, j in itertools.pairwise(bounds)]


def simulate_in_parts(
    station: Station,
    *,
    policy: str = "re100",
    start: datetime | None = None,
    days: float = 1.0,
    weather: str | Path | pd.DataFrame = "clear-day",
    seed: int = 1,
    db_path: str | Path | None = None,
    jobs: int = 2,
    warmup: timedelta = WARMUP,
    visits: Sequence[CarVisit] | None = None,
    history: Sequence[CarVisit] | None = None,
    site: Any = None,
    with_perfect_foresight: bool = True,
    progress: Callable[[float], None] | None = None,
    **options: Any,
) -> SimulationResult:
    """:func:`megastation.sim.simulator.simulate` of ``days`` from ``start``, in up to
    ``jobs`` parts of whole months in as many worker processes (see the module
    docstring). A span within one month, or ``jobs`` 1, is one ordinary run. ``options``
    go to every part's :func:`simulate` (``plan_interval_s``, ``keep_plan_horizons``, ...)."""
    if policy not in POLICIES:
        raise SimulationError(f"policy: must be one of {', '.join(POLICIES)}; got {policy!r}")
    if days <= 0:
        raise SimulationError("days: must be > 0")
    t_wall = time.perf_counter()
    wx = weather if isinstance(weather, pd.DataFrame) else read_weather(weather)
    start = utc(start) if start is not None else weather_start(wx, station.site.timezone)
    end = start + timedelta(days=days)
    common = dict(weather=wx, seed=seed, **options)
    parts = balanced_parts(month_parts(start, end, station.site.timezone), jobs)
    if jobs <= 1 or len(parts) == 1:
        return simulate(
            station,
            policy=policy,
            start=start,
            days=days,
            db_path=db_path,
            visits=visits,
            history=history,
            site=site,
            with_perfect_foresight=with_perfect_foresight,
            progress=progress,
            **common,
        )
    common["site"] = site if site is not None else prepare_site(station, start, end, wx, seed)
    if visits is None:
        visits = generate_visits(station, start, end, seed)
    visits = [truncate_visit(v, end) for v in visits if start <= v.arrival < end]
    with tempfile.TemporaryDirectory(prefix="megastation-parts-") as tmp:
        runs = _run_parts(
            station, policy, parts, visits, list(history or ()), warmup, common, Path(tmp),
            jobs, progress,
        )  # fmt: skip
        return _merged(
            station, policy, start, end, parts, runs, visits, common["site"], db_path,
            Path(tmp), with_perfect_foresight, t_wall,
        )  # fmt: skip


def _part_inputs(
    visits: Sequence[CarVisit],
    history: list[CarVisit],
    run_start: datetime,
    until: datetime,
) -> tuple[list[CarVisit], list[CarVisit]]:
    """A part's cars (arriving in its run; :func:`simulate` cuts their stays at its end)
    and history (left before it)."""
    cars = [v for v in visits if run_start <= v.arrival < until]
    past = history + [v for v in visits if v.departure <= run_start]
    return cars, past


def _run_part(
    station: Station,
    policy: str,
    run_start: datetime,
    since: datetime,
    until: datetime,
    cars: list[CarVisit],
    past: list[CarVisit],
    common: dict[str, Any],
    db_path: Path,
    key: int,
    queue: Any,
) -> tuple[int, int, float, float, float]:
    """One part in a worker: (key, plans, solve s, battery export kWh, ... at night)."""
    r = simulate(
        station,
        policy=policy,
        start=run_start,
        hours=(until - run_start).total_seconds() / 3600.0,
        db_path=db_path,
        visits=cars,
        history=past or None,
        with_perfect_foresight=False,
        progress=(lambda x: queue.put((key, x))) if queue is not None else None,
        count_from=since,
        **common,
    )
    return key, r.plans, r.solve_s, r.battery_export_kwh, r.battery_export_night_kwh


def _run_parts(
    station: Station,
    policy: str,
    parts: list[tuple[datetime, datetime]],
    visits: Sequence[CarVisit],
    history: list[CarVisit],
    warmup: timedelta,
    common: dict[str, Any],
    tmp: Path,
    jobs: int,
    progress: Callable[[float], None] | None,
) -> dict[int, tuple[int, float, float, float]]:
    """Every part in ``jobs`` worker processes; returns their counts by part index."""
    run_starts = [max(s - warmup, parts[0][0]) for s, _ in parts]  # no warm-up before the span
    span_s = [(u - r).total_seconds() for r, (_, u) in zip(run_starts, parts, strict=True)]
    done_frac = [0.0] * len(parts)
    runs: dict[int, tuple[int, float, float, float]] = {}
    ctx = mp.get_context("spawn")  # no fork of a process with threads
    manager = ctx.Manager() if progress is not None else contextlib.nullcontext()
    with manager, cf.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        q = manager.Queue() if progress is not None else None
        pending = set()
        for i in sorted(range(len(parts)), key=lambda i: -span_s[i]):  # longest first
            since, until = parts[i]
            run_start = run_starts[i]
            cars, past = _part_inputs(visits, history, run_start, until)
            args = (run_start, since, until, cars, past, common, tmp / f"part-{i:03d}.db", i, q)
            pending.add(pool.submit(_run_part, station, policy, *args))
        while pending:
            finished, pending = cf.wait(pending, timeout=PROGRESS_POLL_S)
            for f in finished:
                key, *counts = f.result()
                runs[key] = tuple(counts)
                done_frac[key] = 1.0
            if q is not None:
                _drain(q, done_frac)
                progress(sum(f * s for f, s in zip(done_frac, span_s, strict=True)) / sum(span_s))
    return runs


def _drain(q: Any, done_frac: list[float]) -> None:
    try:
        while True:
            key, frac = q.get_nowait()
            done_frac[key] = max(done_frac[key], frac)
    except queue_mod.Empty:
        pass


def _merged(
    station: Station,
    policy: str,
    start: datetime,
    end: datetime,
    parts: list[tuple[datetime, datetime]],
    runs: dict[int, tuple[int, float, float, float]],
    visits: list[CarVisit],
    site: Any,
    db_path: str | Path | None,
    tmp: Path,
    with_perfect_foresight: bool,
    t_wall: float,
) -> SimulationResult:
    """The parts' stores merged into one (``db_path``, else a temporary file), its KPIs
    and the result, as :func:`simulate` gives them."""
    target = fresh_store(db_path if db_path is not None else tmp / "merged.db")
    try:
        records.register_station_chargers(target, station)
        for i, (since, until) in enumerate(parts):
            merge.append_part(target, tmp / f"part-{i:03d}.db", since, until)
        sessions = pd.DataFrame(list(target.db["sim_sessions"].rows))
        if not sessions.empty:
            sessions = sessions.drop(columns="id").sort_values("arrival", ignore_index=True)
        frame, kpis, pf = summarise_run(
            target, station, visits, site, (start, end), with_perfect_foresight
        )
    finally:
        target.close()
    counts = [runs[i] for i in range(len(parts))]
    return SimulationResult(
        policy=policy,
        start=start,
        end=end,
        kpis=kpis,
        flows=frame,
        sessions=sessions,
        db_path=str(db_path) if db_path is not None else None,
        wall_s=time.perf_counter() - t_wall,
        plans=sum(c[0] for c in counts),
        solve_s=sum(c[1] for c in counts),
        perfect_foresight=pf,
        battery_export_kwh=sum(c[2] for c in counts),
        battery_export_night_kwh=sum(c[3] for c in counts),
    )


__all__ = ["WARMUP", "balanced_parts", "month_parts", "simulate_in_parts"]
