"""The operator's web console, HTTP API (``/api/v1``), Prometheus ``/metrics`` and the
city data hub feed (NGSI-LD ``EVChargingStation``), served beside the OCPP central
system on its event loop. :func:`start_web` is the one entry point ``serve`` and
``demo`` use; :func:`create_app` builds the Starlette app alone."""

from __future__ import annotations

from typing import Any

__all__ = ["WebServer", "create_app", "start_web"]


def __getattr__(name: str) -> Any:  # lazy: the CLI imports this package without the server
    if name in __all__:
        from megastation.web import app

        return getattr(app, name)
    raise AttributeError(name)
