"""`megastation export energy-flows|daily|sessions-by-source` and `megastation report`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from megastation.cli import main
from megastation.cli.common import (
    Context,
    export_group,
    output_option,
    parse_range,
    parse_when,
    pass_ctx,
    range_options,
)
from megastation.reports.frames import ExportError

_export = export_group()


def _exports():
    # lazy: the analyst exports pull in pandas, the simulator and matplotlib; importing
    # them here would slow every CLI command down
    from megastation.reports import exports

    return exports


def _run(name: str, ctx: Context, output: Path, start: str | None, end: str | None, what: str):
    st = ctx.station
    try:
        n = getattr(_exports(), name)(ctx.store, st, output, *parse_range(start, end, st))
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{output}: {n} {what}")


@_export.command("energy-flows")
@output_option
@range_options
@pass_ctx
def export_energy_flows(ctx: Context, output: Path, start: str | None, end: str | None) -> None:
    """Site energy flows per step: pv_kw, ev_kw, battery_kw, grid_import_kw, soc_frac, ..."""
    _run("export_energy_flows", ctx, output, start, end, "steps")


@_export.command("daily")
@output_option
@range_options
@pass_ctx
def export_daily(ctx: Context, output: Path, start: str | None, end: str | None) -> None:
    """Per day: energy_kwh, renewable_frac, grid_import_kwh, peak_import_kw, cost_krw, gaps."""
    _run("export_daily", ctx, output, start, end, "days")


@_export.command("sessions-by-source")
@output_option
@range_options
@pass_ctx
def export_sessions_by_source(
    ctx: Context, output: Path, start: str | None, end: str | None
) -> None:
    """Sessions with energy by source: pv_direct_kwh, battery_kwh, grid_kwh, renewable_frac."""
    _run("export_sessions_by_source", ctx, output, start, end, "sessions")


@main.command("report")
@click.option("--day", required=True, help="Local date, YYYY-MM-DD.")
@click.option(
    "-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".")
)
@pass_ctx
def report(ctx: Context, day: str, out_dir: Path) -> None:
    """Write a stored day's three PNG plots (energy flows, connectors, PV forecast)."""
    start = parse_when(day, ctx.station, option="--day")
    try:
        paths = _exports().write_day_plots(
            ctx.store, ctx.station, start, start + timedelta(days=1), out_dir
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    for p in paths:
        click.echo(str(p))
