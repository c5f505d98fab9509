"""`megastation demo`: a simulated day of the station over real OCPP, in about a minute."""

from __future__ import annotations

from pathlib import Path

import click

from megastation.cli import main
from megastation.cli.common import Context, check_weather, pass_ctx


@main.command("demo")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True, max=7 * 24),
    default=24.0,
    show_default=True,
    help="Station hours to run.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1440.0,
    show_default=True,
    help="Clock speed-up (1440 = a day a minute; the clock stands still while the controller solves).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the fleet's cars.")
@click.option(
    "--start-hour",
    type=click.FloatRange(min=0, max=24, max_open=True),
    default=0.0,
    show_default=True,
    help="Site-local hour the run starts.",
)
@click.option(
    "--weather",
    callback=check_weather,
    default="clear-day",
    show_default=True,
    help="clear-day, cloudy-day, mixed-week or a weather CSV file.",
)
@click.option(
    "--policy",
    type=click.Choice(["re100", "cost"]),
    default="re100",
    show_default=True,
    help="Dispatch policy: renewable share first, or money first.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the database, CSVs and plots.",
)
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the console on 127.0.0.1 that shows the run live (0: any free port).",
)
@click.option("--no-web", is_flag=True, help="No console.")
@pass_ctx
def demo(
    ctx: Context,
    hours: float,
    speed: float,
    seed: int,
    start_hour: float,
    weather: str,
    policy: str,
    out_dir: Path,
    web_port: int,
    no_web: bool,
) -> None:
    """Server, controller and simulated chargers on an accelerated clock; summary at the end."""
    # lazy: the demo pulls in the server, the controller, scipy, pandas and pvlib
    from rich.console import Console

    from megastation.app.demo import run_demo
    from megastation.app.simulate import kpi_table

    console = Console()
    station = ctx.station
    console.print(
        f"[bold]{station.site.name}[/]: {hours:g} h at {speed:g}x "
        f"(about {hours * 3600 / speed:.0f} s), policy {policy}, weather {weather}"
    )
    r = run_demo(
        station, hours=hours, speed=speed, seed=seed, weather=weather, policy=policy,
        out_dir=out_dir, console=console, start_hour=start_hour,
        web_port=None if no_web else web_port,
    )  # fmt: skip
    console.print(
        kpi_table(
            {"this run": r.kpis, "uncontrolled": r.uncontrolled},
            r.perfect_foresight,
            title=f"Summary ({r.sessions} sessions over OCPP, {r.wall_s:.0f} s wall time)",
        )
    )
    console.print(f"Database, CSVs and plots in {out_dir}/:")
    for p in r.files:
        console.print(f"  {p}")
