"""The operator CLI: a thin click layer over the library.

Each command opens what it needs (station config, store), calls one library
function and turns domain errors into a clear message. Command groups live in
modules of this package, each registering itself on :data:`main`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from megastation.cli.common import Context, MegastationGroup, pass_ctx

__all__ = ["Context", "main", "pass_ctx"]


@click.group(
    cls=MegastationGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MEGASTATION_CONFIG",
    default=None,
    help="Station TOML file [env MEGASTATION_CONFIG; default: the Gwangju seed station].",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MEGASTATION_DB",
    default="megastation.db",
    show_default=True,
    help="SQLite database file [env MEGASTATION_DB].",
)
@click.version_option(package_name="megastation")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, db_path: Path) -> None:
    """megastation: controller for an RE100 EV charging station.

    Chargers speak OCPP to `megastation serve`; the dispatch loop steers them from
    the solar forecast, the battery and the grid limit; operators and analysts use
    the other commands.
    """
    ctx.obj = Context(config_path=config_path, db_path=db_path)
    ctx.call_on_close(ctx.obj.close)


# Command modules register themselves on `main` when imported.
_COMMAND_MODULES = (
    "megastation.cli.config_cmd",
    "megastation.cli.forecast_cmd",
    "megastation.cli.serve_cmd",
    "megastation.cli.ocpp_cmd",
    "megastation.cli.simulate_cmd",
    "megastation.cli.study_cmd",
    "megastation.cli.demo_cmd",
    "megastation.cli.exports_cmd",
    "megastation.cli.control_cmd",
    "megastation.cli.devices_cmd",
    "megastation.cli.web_cmd",
)
for _name in _COMMAND_MODULES:
    importlib.import_module(_name)
