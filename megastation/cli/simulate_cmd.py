"""`megastation simulate`: the station without sockets, several policies side by side."""

from __future__ import annotations

from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import click

from megastation.cli import main
from megastation.cli.common import Context, pass_ctx
from megastation.simulation import POLICIES, SimulationError, weather_path


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


def _check_weather(weather: str) -> str:
    try:
        weather_path(weather)
    except SimulationError as exc:
        raise click.BadParameter(
            str(exc).removeprefix("weather: "), param_hint="'--weather'"
        ) from None
    return weather


@main.command("simulate")
@click.option(
    "--days",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Days to simulate (fractions allowed: 0.25 = 6 h).",
)
@click.option("--start", "start", default=None, help="Local start date (default: the weather's).")
@click.option(
    "--policy",
    "policy",
    default="re100,uncontrolled",
    show_default=True,
    help=f"Comma-separated, any of {', '.join(POLICIES)}.",
)
@click.option(
    "--weather",
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
    default=900.0,
    show_default=True,
    help="Re-plan interval of the controller (it also re-plans on every arrival/departure).",
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
    plan_interval_s: float,
) -> None:
    """Simulate the station for --days under each --policy and compare them."""
    from rich.console import Console

    from megastation.demo import kpi_table, run_simulations

    station = ctx.station
    policies = parse_policies(policy)
    _check_weather(weather)
    t0 = None
    if start:
        try:
            d = datetime.fromisoformat(start)
        except ValueError:
            raise click.BadParameter(
                f"not an ISO date or time: {start!r}", param_hint="'--start'"
            ) from None
        t0 = d if d.tzinfo else datetime.combine(d.date(), dtime(0), station.site.tz)
    console = Console()
    try:
        results, pf = run_simulations(
            station,
            policies,
            days=days,
            start=t0,
            weather=weather,
            seed=seed,
            out_dir=out_dir,
            plan_interval_s=plan_interval_s,
            console=console,
        )
    except (SimulationError, ValueError) as exc:  # e.g. a weather file with bad columns
        raise click.ClickException(str(exc)) from None
    console.print(kpi_table(results, pf, title=f"{station.site.name}: {days:g} day(s), {weather}"))
    console.print(f"CSVs and databases in {out_dir}/")
