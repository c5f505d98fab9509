"""`megastation serve`: the central system with the supervised control loop beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from megastation.control.controller import ControlSupervisor, controller_from_station
from megastation.core import events
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.store import Store, records
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

    The loop steers the station file's chargers and the auto-registered chargers an
    operator accepted (:func:`megastation.store.records.station_with_registered`): when one
    that the running loop does not know boots Accepted, the loop restarts with it (it
    resumes from the store; its start-up installs the fail-safe profiles).
    """
    state: dict[str, Any] = {"station": station}
    reload = asyncio.Event()

    def on_event(event: Any) -> None:
        if (
            isinstance(event, events.ChargerBooted)
            and event.registration == "Accepted"
            and state["station"].charger(event.charger_id) is None
        ):
            log.info("%s accepted: the control loop restarts to steer it", event.charger_id)
            reload.set()
        sup = state.get("supervisor")
        if sup is not None:
            sup.notify(event)

    devices: dict[str, Any] = {}

    async def extra_task(system: Any) -> None:
        gateway = OcppGateway(station, store, clock, system)

        def make() -> Any:
            ctl = controller_from_station(
                state["station"], store, clock, gateway=gateway, pv_kw=pv_kw,
                forecaster=forecaster, weather=weather, **controller_kwargs,
            )  # fmt: skip
            # keep the same devices across restarts (the battery's state lives in them)
            if "battery" in devices:
                ctl.battery, ctl.pv_meter = devices["battery"], devices["pv"]
            devices["battery"], devices["pv"] = ctl.battery, ctl.pv_meter
            return ctl

        while True:
            reload.clear()
            state["station"] = gateway.station = records.station_with_registered(station, store)
            sup = ControlSupervisor(make, clock)
            state["supervisor"] = sup
            task = asyncio.ensure_future(sup.run())
            waiter = asyncio.ensure_future(reload.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if not reload.is_set():
                return task.result()

    return on_event, extra_task


async def serve(
    station: Station,
    store: Store,
    clock: Clock,
    host: str,
    port: int,
    *,
    ready: Callable[[CentralSystem], Any] | None = None,
    web: bool = True,
    web_port: int | None = None,
) -> None:
    """Run the OCPP central system on ``host:port`` with the control loop until cancelled.

    With ``web`` the operator console, HTTP API, /metrics and the data hub feed run beside
    it on ``[web]`` host and port (``web_port`` overrides the port)."""
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


async def until_stopped(main_coro: Awaitable[None]) -> None:
    """Run ``main_coro`` until it ends or SIGTERM / SIGINT arrives; then cancel it, so its
    clean-up runs (the same path for both signals)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(main_coro)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if task.done():
        return task.result()
    logging.getLogger("megastation").info("stopping (signal)")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
