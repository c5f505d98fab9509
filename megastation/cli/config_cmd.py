"""`megastation config ...`: check a station file."""

from __future__ import annotations

from pathlib import Path

import click

from megastation.cli import main
from megastation.cli.common import Context, pass_ctx
from megastation.core.config import ConfigError, load_station


@main.group("config")
def config_group() -> None:
    """Station configuration files."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def check(ctx: Context, file: Path | None) -> None:
    """Validate a station TOML FILE (default: --config) and summarise it."""
    path = file or ctx.resolved_config_path
    try:
        station = load_station(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    site = station.site
    dc = [c for c in station.chargers if c.kind == "DC"]
    ac = [c for c in station.chargers if c.kind == "AC"]
    charger_kw = sum(c.max_power_kw for c in station.chargers)
    click.echo(f"{path}: OK")
    click.echo(
        f"  site      {site.name} ({site.latitude:.3f}, {site.longitude:.3f}, {site.timezone})"
    )
    click.echo(
        f"  grid      import <= {site.grid_import_limit_kw:g} kW, export <= {site.grid_export_limit_kw:g} kW"
    )
    click.echo(
        f"  chargers  {len(dc)} DC + {len(ac)} AC, {sum(c.connectors for c in station.chargers)} connectors, "
        f"{charger_kw:g} kW in total"
    )
    click.echo(f"  pv        {len(station.pv_arrays)} arrays, {station.pv_peak_kw:g} kWp")
    if station.battery:
        b = station.battery
        click.echo(
            f"  battery   {b.capacity_kwh:g} kWh, {b.max_charge_kw:g}/{b.max_discharge_kw:g} kW"
        )
    else:
        click.echo("  battery   none")
