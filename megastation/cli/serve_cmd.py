"""`megastation serve`: run the OCPP central system."""

from __future__ import annotations

import contextlib
import logging
import sys

import click

from megastation.cli import main
from megastation.cli.common import Context, pass_ctx
from megastation.core.clock import SystemClock
from megastation.core.config import ConfigError


@main.command("serve")
@click.option("--host", default=None, help="Address to listen on [default: [server].host].")
@click.option("--port", type=int, default=None, help="Port [default: [server].port; 0 = any free].")
@click.option("-v", "--verbose", is_flag=True, help="Log every OCPP frame.")
@pass_ctx
def serve(ctx: Context, host: str | None, port: int | None, verbose: bool) -> None:
    """Run the OCPP central system: chargers connect over OCPP-J 1.6 / 2.0.1.

    Logs go to stderr; the bound address is logged as "listening on HOST:PORT".
    Ctrl-C and SIGTERM (systemd, Docker) stop cleanly: chargers get a 1001 close and
    are marked disconnected, commands awaiting an answer end `interrupted`.
    """
    # lazy: the server, the controller and asyncio are for this command only
    import asyncio

    from megastation.app.serve import serve as serve_station
    from megastation.app.serve import until_stopped
    from ocpp_central.server import ListenError

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    station = ctx.station
    store = ctx.store
    h = host or station.server.host
    p = station.server.port if port is None else port

    def ready(system) -> None:
        logging.getLogger("megastation").info("listening on %s:%s", h, system.port)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                until_stopped(serve_station(station, store, SystemClock(), h, p, ready=ready))
            )
    except ConfigError as e:  # TLS files that exist but cannot be loaded
        raise click.ClickException(str(e)) from None
    except ListenError as e:
        option = "--port or [server].port" if e.kind == "port" else "--host or [server].host"
        raise click.ClickException(
            f"{e.strerror}; choose another with {option} ({station.source})"
        ) from None
    click.echo("stopped", err=True)
