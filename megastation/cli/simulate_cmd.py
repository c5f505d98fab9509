"""`megastation simulate`: the station without sockets, several policies side by side."""

from __future__ import annotations

import os
from pathlib import Path

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
    help="Policies simulated at once, in worker processes [default: one per CPU].",
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
    help="Re-plan when a car leaves, as the live controller does (off: ~25 % fewer LPs).",
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
) -> None:
    """Simulate the station for --days under each --policy and compare them."""
    # lazy: the simulator pulls in scipy, pandas and pvlib; only this command needs them
    from rich.console import Console

    from megastation.app.simulate import kpi_table, run_policies

    station = ctx.station
    policies = parse_policies(policy)
    t0 = parse_when(start, station, option="--start")
    console = Console()
    try:
        results, pf = run_policies(
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
        )
    except (SimulationError, ValueError) as exc:  # e.g. a weather file with bad columns
        raise click.ClickException(str(exc)) from None
    console.print(kpi_table(results, pf, title=f"{station.site.name}: {days:g} day(s), {weather}"))
    console.print(f"CSVs and databases in {out_dir}/")
