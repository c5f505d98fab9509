"""`megastation serve`: the central system with the supervised control loop beside it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from megastation.control.controller import ControlSupervisor, controller_from_station
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.store import Store
from ocpp_central.gateway import OcppGateway
from ocpp_central.server import CentralSystem, run_server

log = logging.getLogger("megastation")


def controller_hooks(
    station: Station,
    store: Store,
    clock: Clock,
    *,
    pv_kw: Any = None,
    forecaster: Any = None,
    weather: Any = None,
    **controller_kwargs: Any,
) -> tuple[Any, Any]:
    """``(on_event, extra_task)`` that put the supervised control loop into ``run_server``.

    ``extra_task(system)`` builds an :class:`OcppGateway` on the running central system
    and runs a :class:`megastation.control.controller.ControlSupervisor` (restart with backoff;
    it never raises, so the server keeps answering chargers); ``on_event`` forwards the
    central system's domain events to the running controller. Devices default to the
    simulated battery and (with ``pv_kw(t)``) a simulated PV meter.
    """
    state: dict[str, Any] = {}

    def on_event(event: Any) -> None:
        sup = state.get("supervisor")
        if sup is not None:
            sup.notify(event)

    devices: dict[str, Any] = {}

    async def extra_task(system: Any) -> None:
        gateway = OcppGateway(station, store, clock, system)

        def make() -> Any:
            ctl = controller_from_station(
                station, store, clock, gateway=gateway, pv_kw=pv_kw, forecaster=forecaster,
                weather=weather, **controller_kwargs,
            )  # fmt: skip
            # keep the same devices across restarts (the battery's state lives in them)
            if "battery" in devices:
                ctl.battery, ctl.pv_meter = devices["battery"], devices["pv"]
            devices["battery"], devices["pv"] = ctl.battery, ctl.pv_meter
            return ctl

        sup = ControlSupervisor(make, clock)
        state["supervisor"] = sup
        await sup.run()

    return on_event, extra_task


async def serve(
    station: Station,
    store: Store,
    clock: Clock,
    host: str,
    port: int,
    *,
    ready: Callable[[CentralSystem], Any] | None = None,
) -> None:
    """Run the OCPP central system on ``host:port`` with the control loop until cancelled."""
    on_event, control_task = controller_hooks(station, store, clock)
    await run_server(
        station,
        store,
        clock,
        host,
        port,
        ready=ready,
        extra_tasks=[control_task],
        on_event=on_event,
    )
