"""`megastation serve`: the central system with the supervised control loop beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from megastation.control.controller import ControlSupervisor, controller_from_station
from megastation.control.weather_feed import WeatherFeed
from megastation.core import events
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.devices import DeviceState, StationDevices, build_devices
from megastation.store import Store, records
from megastation.store import devices as device_store
from megastation.web import start_web
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
    devices: StationDevices | None = None,
    **controller_kwargs: Any,
) -> tuple[Any, Any]:
    """``(on_event, extra_task)`` that put the supervised control loop into ``run_server``.

    ``extra_task(system)`` builds an :class:`OcppGateway` on the running central system
    and runs a :class:`megastation.control.controller.ControlSupervisor` (restart with backoff;
    it never raises, so the server keeps answering chargers); ``on_event`` forwards the
    central system's domain events to the running controller. ``devices``
    (:func:`megastation.devices.build_devices`) are given to every controller and polled
    beside it; without them the battery is simulated and (with ``pv_kw(t)``) PV too.

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

    kept: dict[str, Any] = {}  # the simulated devices, kept across restarts

    async def extra_task(system: Any) -> None:
        gateway = OcppGateway(station, store, clock, system)

        def make() -> Any:
            ctl = controller_from_station(
                state["station"], store, clock, gateway=gateway, pv_kw=pv_kw,
                forecaster=forecaster, weather=weather, **controller_kwargs,
            )  # fmt: skip
            if devices is not None:
                ctl.battery = devices.battery
                ctl.pv_meter = devices.pv
                ctl.site_meter = devices.meter
                return ctl
            # keep the same devices across restarts (the battery's state lives in them)
            if "battery" in kept:
                ctl.battery, ctl.pv_meter = kept["battery"], kept["pv"]
            kept["battery"], kept["pv"] = ctl.battery, ctl.pv_meter
            return ctl

        polling = asyncio.create_task(devices.run()) if devices is not None else None
        try:
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
        finally:
            if polling is not None:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)

    return on_event, extra_task


RECORD_INTERVAL_S = 5.0  # a device's state is written at most this often (and on a change of fault)


def device_recorder(store: Store, clock: Clock) -> Callable[[DeviceState], None]:
    """``on_reading`` for the drivers: the latest state of each device into the store."""
    last: dict[str, tuple[datetime, str | None]] = {}

    def record(s: DeviceState) -> None:
        prev = last.get(s.name)
        if (
            prev is not None
            and prev[1] == s.fault
            and (s.time - prev[0]).total_seconds() < RECORD_INTERVAL_S
        ):
            return
        last[s.name] = (s.time, s.fault)
        device_store.record_device_status(
            store, name=s.name, kind=s.kind, address=s.address, model=s.model, time=s.time,
            reading_at=s.reading_at, reading=s.values, fault=s.fault,
        )  # fmt: skip

    return record


def station_devices(station: Station, store: Store, clock: Clock, **kwargs: Any) -> StationDevices:
    """The station's devices, recording their state in the store; logs which are real."""
    devs = build_devices(station, clock, on_reading=device_recorder(store, clock), **kwargs)
    for line in devs.describe():
        logging.getLogger("megastation").info("devices: %s", line)
    device_store.forget_devices_except(store, [d.name for d in devs.drivers])
    for s in devs.placeholders(clock.now()):
        device_store.record_device_status(
            store, name=s.name, kind=s.kind, address=s.address, model=s.model, time=s.time,
            reading_at=None, reading={}, fault=None,
        )  # fmt: skip
    return devs


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
    **controller_kwargs: Any,
) -> None:
    """Run the OCPP central system on ``host:port`` with the control loop until cancelled.

    With a ``[weather]`` section the live weather forecast feed runs beside them and the
    controller plans on its forecasts. With ``web`` the operator console, HTTP API, /metrics
    and the data hub feed run on ``[web]`` host and port (``web_port`` overrides the port).
    The station's ``[[devices]]`` are polled and given to the controller (the start-up
    log says which kinds are simulated or absent); ``controller_kwargs`` go to the
    controller (tests: ``forecaster``, ``guard_interval_s``, ...).
    """
    tasks: list[Callable[[CentralSystem], Any]] = []
    forecaster = controller_kwargs.pop("forecaster", None)
    if station.weather is not None:
        feed = WeatherFeed(station, store, clock)
        tasks.append(feed.run)
        forecaster = feed.forecaster
        log.info("weather forecast from %s", station.weather.url)
    devices = station_devices(station, store, clock)
    on_event, control_task = controller_hooks(
        station, store, clock, forecaster=forecaster, devices=devices, **controller_kwargs
    )
    if web:
        tasks.append(
            start_web(
                station, store, clock, port=web_port, notify=on_event,
                ready=lambda w: log.info("console on %s", w.url),
            )
        )  # fmt: skip
    await run_server(
        station,
        store,
        clock,
        host,
        port,
        ready=ready,
        extra_tasks=[control_task, *tasks],
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
