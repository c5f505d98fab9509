"""`megastation simulate`: the station without sockets, several policies side by side."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from megastation.cli import main
from megastation.cli.common import Context, check_weather, parse_when, pass_ctx
from megastation.sim.options import POLICIES, SimulationError


def parse_policies(text: str) -> list[str]:
    """``re100,uncontrolled`` -> the policy names, each checked (duplicates dropped)."""
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise click.BadParameter(
            f"{', '.join(bad) or repr(text)}: use any of {', '.join(POLICIES)}",
            param_hint="'--policy'",
        )
    return names


@main.command("simulate")
@click.option(
    "--days",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Days to simulate (fractions allowed: 0.25 = 6 h).",
)
@click.option(
    "--start",
    "start",
    default=None,
    help="Start: ISO date (local midnight) or date-time; default: the weather's first day.",
)
@click.option(
    "--policy",
    "policy",
    default="re100,uncontrolled",
    show_default=True,
    help=f"Comma-separated, any of {', '.join(POLICIES)}.",
)
@click.option(
    "--weather",
    callback=check_weather,
    default="mixed-week",
    show_default=True,
    help="clear-day, cloudy-day, mixed-week or a weather CSV file.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("simulate-out"),
    show_default=True,
    help="Folder for the databases (one per policy) and CSVs.",
)
@click.option(
    "--plan-interval-s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Re-plan interval of the controller (it also re-plans on every arrival/departure) "
    "[default: the station's dispatch step].",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: one per CPU]: policies side by side, or, for a span "
    "over more than one calendar month, each policy cut at month starts into one part per "
    "worker, run in parallel (each part after a 1-day warm-up; see the README).",
)
@click.option(
    "--keep-plans",
    is_flag=True,
    help="Keep every plan's per-step horizon in the databases (by default only the last).",
)
@click.option(
    "--departure-replans/--no-departure-replans",
    default=True,
    show_default=True,
    help="Re-plan when a car that draws power leaves, as the live controller does "
    "(off: ~8 % fewer LPs).",
)
@click.option(
    "--sessions",
    "sessions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Real sessions instead of generated cars: generic CSV, ACN-Data JSON or "
    "`megastation export sessions` CSV (see the README).",
)
@click.option(
    "--history",
    "history_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Sessions (any format --sessions reads) preloaded as the station's history, "
    "moved by whole weeks to end before the start: the controller learns expected cars from them.",
)
@click.option(
    "--sessions-format",
    type=click.Choice(["auto", "generic", "acn", "export"]),
    default="auto",
    show_default=True,
    help="Format of --sessions/--history.",
)
@click.option(
    "--columns",
    default=None,
    help="Generic CSV column names, e.g. 'arrival=Start,energy_kwh=kWh,arrival=Date+Time'.",
)
@click.option(
    "--data-timezone",
    default=None,
    help="Zone of times without UTC offset in the files [default: the station's].",
)
@click.option(
    "--align-to",
    default=None,
    help="Move the sessions by whole weeks onto this local date (weekday and time of day "
    "kept) [default: with --start, the week before it; else the data's own dates].",
)
@click.option(
    "--wants",
    type=click.Choice(["delivered", "requested"]),
    default="delivered",
    show_default=True,
    help="Cars want what they got, or what their drivers asked for (where the data says).",
)
@click.option(
    "--stated/--no-stated",
    default=True,
    show_default=True,
    help="Stated departures/energies reach the controller (ChargingNeeds on 2.0.1, an "
    "override on 1.6); the truth always drives the car.",
)
@click.option(
    "--skip-bad-rows",
    is_flag=True,
    help="Drop rows with bad values (counted warnings) instead of stopping at the first.",
)
@pass_ctx
def simulate_cmd(
    ctx: Context,
    days: float,
    start: str | None,
    policy: str,
    weather: str,
    seed: int,
    out_dir: Path,
    plan_interval_s: float | None,
    jobs: int | None,
    keep_plans: bool,
    departure_replans: bool,
    sessions_file: Path | None,
    history_file: Path | None,
    sessions_format: str,
    columns: str | None,
    data_timezone: str | None,
    align_to: str | None,
    wants: str,
    stated: bool,
    skip_bad_rows: bool,
) -> None:
    """Simulate the station for --days under each --policy and compare them.

    The table ends with the perfect-foresight optimum of the same cars and sun (re100
    tiers; with cost among the policies, the cost-tier optimum too).
    """
    # lazy: the simulator pulls in scipy, pandas and pvlib; only this command needs them
    from rich.console import Console

    from megastation.app.simulate import kpi_table, run_policies

    station = ctx.station
    policies = parse_policies(policy)
    t0 = parse_when(start, station, option="--start")
    console = Console()
    visits = history = None
    if sessions_file is not None or history_file is not None:
        visits, history, t0 = _read_sessions(
            station,
            sessions_file=sessions_file,
            history_file=history_file,
            sessions_format=sessions_format,
            columns=columns,
            data_timezone=data_timezone,
            align_to=align_to,
            wants=wants,
            stated=stated,
            skip_bad_rows=skip_bad_rows,
            start=t0,
            weather=weather,
            days=days,
            console=console,
        )
    try:
        results, optima = run_policies(
            station,
            policies,
            days=days,
            start=t0,
            weather=weather,
            seed=seed,
            out_dir=out_dir,
            plan_interval_s=plan_interval_s,
            jobs=jobs or os.cpu_count() or 1,
            keep_plans=keep_plans,
            replan_on_departure=departure_replans,
            console=console,
            visits=visits,
            history=history,
        )
    except (SimulationError, ValueError) as exc:  # e.g. a weather file with bad columns
        raise click.ClickException(str(exc)) from None
    console.print(
        kpi_table(results, optima, title=f"{station.site.name}: {days:g} day(s), {weather}")
    )
    console.print(f"CSVs and databases in {out_dir}/")


def _read_sessions(
    station: Any,
    *,
    sessions_file: Path | None,
    history_file: Path | None,
    sessions_format: str,
    columns: str | None,
    data_timezone: str | None,
    align_to: str | None,
    wants: str,
    stated: bool,
    skip_bad_rows: bool,
    start: datetime | None,
    weather: str,
    days: float,
    console: Any,
) -> tuple[list[Any] | None, list[Any] | None, datetime]:
    """--sessions / --history: (visits or None, history or None, the run's start)."""
    from datetime import date

    from megastation.sim import sessions as ss
    from megastation.sim.simulator import read_weather, weather_start

    try:
        mapping = ss.parse_columns(columns) if columns else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--columns'") from None
    day = None
    if align_to is not None:
        try:
            day = date.fromisoformat(align_to)
        except ValueError:
            raise click.BadParameter(
                f"not an ISO date: {align_to!r}", param_hint="'--align-to'"
            ) from None
    if sessions_file is None and start is None:
        start = weather_start(read_weather(weather), station.site.timezone)
    try:
        got = ss.sessions_for_simulation(
            station,
            sessions=sessions_file,
            history=history_file,
            span=timedelta(days=days),
            start=start,
            align_to=day,
            format=sessions_format,
            columns=mapping,
            timezone=data_timezone,
            errors="skip" if skip_bad_rows else "raise",
            wants=wants,
            stated=stated,
        )
    except ss.SessionImportError as exc:
        raise click.ClickException(str(exc)) from None
    for report in got.reports:
        for i, line in enumerate(report.lines()):
            console.print(("warning: " if i else "") + line, highlight=False, soft_wrap=True)
    if sessions_file is not None and not got.visits:
        raise click.ClickException(
            f"{sessions_file}: no session arrives in the {days:g} simulated day(s) from "
            f"{got.start.isoformat()}"
        )
    return (
        got.visits if sessions_file is not None else None,
        got.history or None,
        got.start,
    )
