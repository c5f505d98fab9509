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
@click.option("--web-port", type=int, default=None, help="Console port [default: [web].port].")
@click.option("--no-web", is_flag=True, help="No console, API, /metrics or data hub feed.")
@click.option("-v", "--verbose", is_flag=True, help="Log every OCPP frame.")
@pass_ctx
def serve(
    ctx: Context,
    host: str | None,
    port: int | None,
    web_port: int | None,
    no_web: bool,
    verbose: bool,
) -> None:
    """Run the OCPP central system: chargers connect over OCPP-J 1.6 / 2.0.1.

    The control loop runs beside it with the station's [[devices]] (Modbus TCP battery,
    PV inverters, grid meter); the log says at start which kinds are simulated or absent.

    The operator console, HTTP API (/api/v1), /metrics and the data hub feed
    (/ngsi-ld/v1) run beside it on [web].host:port (127.0.0.1:8080 by default; accounts:
    `megastation users add`). Logs go to stderr; the bound addresses are logged as
    "listening on HOST:PORT" and "console on URL". Ctrl-C and SIGTERM (systemd, Docker)
    stop cleanly: chargers get a 1001 close and are marked disconnected, commands
    awaiting an answer end `interrupted`.
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
        # device faults are logged once by megastation.devices, with the reason
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    station = ctx.station
    store = ctx.store
    h = host or station.server.host
    p = station.server.port if port is None else port

    def ready(system) -> None:
        logging.getLogger("megastation").info("listening on %s:%s", h, system.port)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                until_stopped(
                    serve_station(
                        station,
                        store,
                        SystemClock(),
                        h,
                        p,
                        ready=ready,
                        web=not no_web,
                        web_port=web_port,
                    )
                )
            )
    except ConfigError as e:  # TLS files that exist but cannot be loaded
        raise click.ClickException(str(e)) from None
    except ListenError as e:
        option = "--port or [server].port" if e.kind == "port" else "--host or [server].host"
        raise click.ClickException(
            f"{e.strerror}; choose another with {option} ({station.source})"
        ) from None
    except OSError as e:  # the console's port
        raise click.ClickException(
            f"cannot listen on {station.web.host}:{station.web.port if web_port is None else web_port}"
            f" for the console: {e.strerror or e}; choose another with --web-port or [web].port "
            f"({station.source}), or --no-web"
        ) from None
    click.echo("stopped", err=True)
