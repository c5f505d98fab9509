"""The station in a box: server, controller and a simulated fleet over real OCPP.

:func:`run_demo` starts, on one accelerated clock (:class:`ScaledClock`): the OCPP
central system on 127.0.0.1 (a free port), the :class:`Controller` with the OCPP
gateway, the simulated battery and PV meter, one simulated charge point per charger
(:class:`megastation.sim.chargepoint.Fleet`, real WebSockets) and the simulated site,
which records the energy flows every minute of station time. At the end it compares
the run with uncontrolled charging (socket-free, same cars and sun) and the
perfect-foresight optimum, and writes the database, CSVs and PNG plots to ``out_dir``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from forecasts.forecast import forecast_pv
from megastation.app.simulate import write_flow_csvs
from megastation.control.controller import Controller
from megastation.core.clock import ScaledClock
from megastation.core.config import Station
from megastation.core.devices import GridReading, SimulatedBattery, SimulatedPVMeter
from megastation.core.fleet import generate_visits
from megastation.reports import exports
from megastation.reports import sessions as session_export
from megastation.sim.chargepoint import Fleet
from megastation.sim.simulator import (
    SITE_STEP,
    SITE_STEP_S,
    FlowBucket,
    Kpis,
    SiteInputs,
    flow_kpis,
    perfect_foresight,
    prepare_site,
    read_weather,
    simulate,
    store_reference,
    weather_start,
)
from megastation.store import Store, flows, records
from megastation.store import control as cr
from megastation.web import WebServer
from megastation.web.auth import add_user
from ocpp_central.gateway import OcppGateway
from ocpp_central.server import CentralSystem

DEMO_GUARD_S = 15.0  # station seconds between guard polls of the site meter
RECORD_STEP_S = 60.0  # station seconds between samples of the site's flows
BOOT_TIMEOUT_S = 30.0  # wall seconds the chargers have to boot before the clock starts
BOOT_POLL_S = 0.02  # wall seconds between checks that they have
FLEET_END_WAIT_S = 30.0  # wall seconds the chargers have to stop at the end
FLEET_STOP_WAIT_S = 10.0  # ... and to close after being cancelled
PROGRESS_LINES = 8  # plain progress lines over a run when stdout is not a terminal
# operator commands are polled about twice a second of wall time, not per station second
COMMAND_POLL_WALL_S = 0.5


@dataclass
class DemoResult:
    """What :func:`run_demo` returns."""

    kpis: Kpis  # the live run
    uncontrolled: Kpis  # same cars and sun, socket-free, no control
    perfect_foresight: Kpis
    out_dir: Path
    db_path: Path
    files: list[Path] = field(default_factory=list)
    wall_s: float = 0.0
    start: datetime | None = None
    end: datetime | None = None
    sessions: int = 0  # transactions stored over OCPP


class _SiteBattery(SimulatedBattery):
    """The simulated battery behind an inverter that does not discharge into the grid
    beyond the export limit (the socket-free simulator's rule, so both runs agree).

    ``headroom_kw()`` is the most it may discharge now: EV + base load - PV + export limit.
    """

    def __init__(self, config, clock, headroom_kw: Callable[[], float]) -> None:
        super().__init__(config, clock)
        self.headroom_kw = headroom_kw

    def _effective_kw(self) -> float:
        p = super()._effective_kw()
        return min(p, max(0.0, self.headroom_kw())) if p > 0 else p


class _FleetThread:
    """The simulated fleet on its own event loop in a thread (real sockets in between),
    so the controller's solves do not stall the chargers' clocks and meters."""

    def __init__(self, station: Station, visits, url: str, clock: ScaledClock, end: datetime):

        self.fleet = Fleet(station, visits, url, clock)
        self.end = end
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            await self.fleet.run(self.end)

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # reported by the demo
            self.error = e

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def booted(self) -> bool:
        return all(
            cp.boot_status is not None and cp.idle.is_set()
            for cp in self.fleet.chargepoints.values()
        )

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and self.alive():
            self._loop.call_soon_threadsafe(self._task.cancel)

    async def join(self, timeout_s: float) -> None:
        await asyncio.to_thread(self._thread.join, timeout_s)


def _live_view(station: Station, fleet, battery, s: dict, now: datetime, start, end):
    done = (now - start) / (end - start)
    head = Text.assemble(
        (f"{station.site.name}  ", "bold"),
        f"{now.astimezone(station.site.tz):%Y-%m-%d %H:%M}  ",
        (f"{100 * done:3.0f}%", "cyan"),
        f"  {s['wall_s']:.0f} s wall",
    )
    t = Table(
        caption=(
            f"PV {s['pv_kw']:.0f} kW | battery {100 * s['soc_frac']:.0f}% "
            f"({s['battery_kw']:+.0f} kW) | grid import {s['import_kw']:.0f} / "
            f"{station.site.grid_import_limit_kw:.0f} kW (peak {s['peak_kw']:.0f}) | "
            f"{s['sessions']} sessions, {s['ev_kwh']:.0f} kWh delivered"
        ),
    )
    t.add_column("connector")
    for c in ("kW", "limit kW", "car"):
        t.add_column(c, justify="right")
    limits = fleet.limits_kw()
    for (cid, n), p in fleet.power_kw().items():
        lim = limits.get((cid, n))
        cp = fleet.chargepoints[cid].connectors[n]
        car = ""
        if cp.car is not None:
            car = f"{100 * cp.car.soc_frac:.0f}% {cp.car.visit.car_model}"[:28]
        t.add_row(f"{cid}/{n}", f"{p:.1f}", "" if lim is None else f"{lim:.1f}", car)
    return Group(head, ProgressBar(total=1.0, completed=done), t)


class _DemoSite:
    """The simulated site on the demo clock: PV, the varying base load, the fleet's
    charging power and the battery behind its inverter; :meth:`read` is its grid meter
    (what a real station's meter reads), polled by the controller's guard."""

    def __init__(self, station: Station, site: SiteInputs, clock: ScaledClock) -> None:
        self.station = station
        self.site = site
        self.clock = clock
        self.fleet: Fleet | None = None  # set once the fleet is built
        self.battery = (
            _SiteBattery(station.battery, clock, self.headroom_kw) if station.battery else None
        )

    def row(self, t: datetime) -> int:
        """The site-input step of ``t`` (clamped to the inputs)."""
        n = len(self.site.index)
        return min(max(0, int((pd.Timestamp(t) - self.site.index[0]) // SITE_STEP)), n - 1)

    def pv_kw(self, t: datetime) -> float:
        return float(self.site.pv_actual_kw[self.row(t)])

    def base_load_kw(self, t: datetime) -> float:
        return float(self.site.base_load_kw[self.row(t)])

    def ev_kw(self) -> float:
        return self.fleet.total_power_kw() if self.fleet is not None else 0.0

    def battery_kw(self) -> float:
        return self.battery.power_kw if self.battery else 0.0

    def headroom_kw(self) -> float:
        """The most the battery may discharge now: EV + base load - PV + export limit."""
        now = self.clock.now()
        export_kw = self.station.site.grid_export_limit_kw
        return self.ev_kw() + self.base_load_kw(now) - self.pv_kw(now) + export_kw

    async def read(self) -> GridReading:
        now = self.clock.now()
        net = self.ev_kw() + self.base_load_kw(now) - self.pv_kw(now) - self.battery_kw()
        return GridReading(max(net, 0.0), max(-net, 0.0), now)


def _start_station(
    station: Station, store: Store, clock: ScaledClock, site: _DemoSite, speed: float
) -> tuple[CentralSystem, Controller]:
    """The central system and the controller with its OCPP gateway (not started)."""
    holder: dict[str, Controller] = {}
    central = CentralSystem(
        station,
        store,
        clock,
        on_event=lambda e: holder["c"].notify(e) if "c" in holder else None,
        command_poll_s=max(1.0, COMMAND_POLL_WALL_S * speed),
    )
    controller = Controller(
        station,
        store,
        clock,
        gateway=OcppGateway(station, store, clock, central),
        battery=site.battery,
        pv_meter=SimulatedPVMeter(site.pv_kw, clock),
        weather=site.site.forecast_weather,
        site_meter=site,
        # the guard (over-limit check, battery following the site balance between plans)
        # polls the meter every DEMO_GUARD_S station seconds
        guard_interval_s=DEMO_GUARD_S,
        # the demo records the simulated site's true flows itself (its varying base load
        # and curtailment, which the controller does not measure)
        record_flows=False,
    )
    holder["c"] = controller
    return central, controller


async def _wait_booted(
    station: Station,
    store: Store,
    fleet_thread: _FleetThread,
    controller: Controller,
    timeout_s: float,
) -> None:
    """Until every charger has booted and got its fail-safe profile (or ``timeout_s``)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline and fleet_thread.alive():
        if fleet_thread.booted() and all(
            cr.active_profile(store, ch.id, 0, "max") is not None for ch in station.chargers
        ):
            break
        await asyncio.sleep(BOOT_POLL_S)
    await controller.wait_idle(timeout_s)


async def _start_console(
    station: Station,
    store: Store,
    clock: ScaledClock,
    central: CentralSystem,
    controller: Controller,
    port: int,
    console,
) -> WebServer:
    """The operator console on 127.0.0.1:``port`` (0 = any free port), to watch the
    simulated day live; prints its URL and a one-off login."""
    password = secrets.token_urlsafe(9)
    add_user(store, "demo", "operator", password)
    web = WebServer(station, store, clock, central=central, port=port, notify=controller.notify)
    await web.start()
    if console is not None:
        console.print(f"console: {web.url} (log in as demo, password {password})")
    return web


@dataclass
class _Sample:
    """The site over one sampling interval [kW] (EV power from the energy registers)."""

    pv_kw: float
    ev_kw: float
    import_kw: float
    battery_kw: float  # + discharge
    soc_frac: float


class _FlowRecorder:
    """Samples the simulated site every :data:`RECORD_STEP_S` and writes one
    :class:`FlowBucket` per dispatch step, with the day-ahead forecast, so the flows add up
    to the metered energy of the stored transactions."""

    def __init__(
        self, station: Station, store: Store, site: _DemoSite, fleet: Fleet, day_ahead
    ) -> None:
        self.station, self.store, self.site, self.fleet = station, store, site, fleet
        self.day_ahead = day_ahead
        self.flow_step_s = station.site.dispatch_step_min * 60
        self.limit_kw = station.site.grid_import_limit_kw
        self.bucket: FlowBucket | None = None
        self.known_tx: dict[tuple[str, int], int] = {}  # connector -> its stored transaction
        self.prev_wh: dict[tuple[str, int], float] = fleet.registers_wh()

    @property
    def sessions(self) -> int:
        return len(set(self.known_tx.values()))

    def sample(self, last: datetime, now: datetime) -> _Sample:
        """Record the site over ``[last, now)``; the readings hold over the interval."""
        dt_s = (now - last).total_seconds()
        # mean EV power over [last, now) from the chargers' energy registers, so the
        # flows add up to the metered energy of the transactions
        regs = self.fleet.registers_wh()
        power = {k: max(0.0, (wh - self.prev_wh.get(k, wh)) * 3.6 / dt_s) for k, wh in regs.items()}
        self.prev_wh.update(regs)
        ev_kw = sum(power.values())
        pv = self.site.pv_kw(last)
        base = self.site.base_load_kw(last)
        batt = self.site.battery_kw()
        net = ev_kw + base - pv - batt
        curtailed = min(pv, max(0.0, -net - self.station.site.grid_export_limit_kw))
        net += curtailed
        values = {
            "pv_kw": pv - curtailed,
            "curtailed_kw": curtailed,
            "ev_kw": ev_kw,
            "base_load_kw": base,
            "battery_charge_kw": max(-batt, 0.0),
            "battery_discharge_kw": max(batt, 0.0),
            "grid_import_kw": max(net, 0.0),
            "grid_export_kw": max(-net, 0.0),
        }
        self._add(last, now, values, self._connector_tx(power))
        soc = self.site.battery.soc_frac if self.site.battery else 0.0
        return _Sample(pv, ev_kw, max(net, 0.0), batt, soc)

    def _connector_tx(
        self, power: dict[tuple[str, int], float]
    ) -> dict[tuple[str, int], tuple[float, int | None]]:
        """Each connector's power and the stored transaction its energy belongs to."""
        open_tx = {
            (t.charger_id, t.connector_id): t.transaction_id
            for t in records.open_transactions(self.store)
        }
        conn_tx: dict[tuple[str, int], tuple[float, int | None]] = {}
        for conn, p in power.items():
            tx = open_tx.get(conn)
            if tx is not None:
                self.known_tx[conn] = tx
            elif p > 0:
                tx = self.known_tx.get(conn)  # stored a moment after the charger started
            if p > 0 or tx is not None:
                conn_tx[conn] = (p, tx)
        return conn_tx

    def _add(self, last: datetime, now: datetime, values: dict[str, float], conn_tx) -> None:
        """The sample holds over [last, now); split it at the flow-step boundaries."""
        t = last
        while t < now:
            ts = pd.Timestamp(t).floor(f"{self.flow_step_s}s").to_pydatetime()
            seg_end = min(now, ts + timedelta(seconds=self.flow_step_s))
            seg_s = (seg_end - t).total_seconds()
            if self.bucket is None or self.bucket.ts != ts:
                self._flush()
                self.bucket = FlowBucket(ts)
            b = self.bucket
            if b.soc_frac is None and self.site.battery:
                b.soc_frac = self.site.battery.soc_frac
            b.add(seg_s, values)
            for conn, (p, tx) in conn_tx.items():
                old = b.connector.get(conn, (0.0, tx, None))
                b.connector[conn] = (old[0] + p * seg_s, tx or old[1], None)
            t = seg_end

    def finish(self) -> None:
        """Energy the chargers metered after the last sample (their final tick at the
        end) goes into the last step, so the flows add up to the transactions; write it."""
        b = self.bucket
        if b is not None:
            for k, wh in self.fleet.registers_wh().items():
                kw_s = max(0.0, wh - self.prev_wh.get(k, wh)) * 3.6  # kW x s
                if kw_s > 0:
                    for name in ("ev_kw", "grid_import_kw"):
                        b.sums[name] = b.sums.get(name, 0.0) + kw_s
                    e, tx, _ = b.connector.get(k, (0.0, self.known_tx.get(k), None))
                    b.connector[k] = (e + kw_s, tx, None)
        self._flush()

    def _flush(self) -> None:
        b = self.bucket
        if b is None:
            return
        t = pd.Timestamp(b.ts).floor(SITE_STEP)
        fc = self.day_ahead.loc[t] if t in self.day_ahead.index else None
        forecast = (None, None, None) if fc is None else (
            float(fc["pv_ac_kw"]), float(fc["pv_ac_p10_kw"]), float(fc["pv_ac_p90_kw"])
        )  # fmt: skip
        b.record(self.store, grid_limit_kw=self.limit_kw, forecast=forecast)


class _Progress:
    """The live table on a terminal, else :data:`PROGRESS_LINES` plain lines (or nothing
    without a console). A context manager: the live view stops on exit."""

    def __init__(self, station: Station, console, start: datetime, end: datetime) -> None:
        self.station, self.console, self.start, self.end = station, console, start, end
        self.t_wall = time.perf_counter()
        tty = console is not None and getattr(console, "is_terminal", False)
        self.live = Live(console=console, refresh_per_second=4, transient=True) if tty else None
        self.stats = {"peak_kw": 0.0, "ev_kwh": 0.0, "sessions": 0, "wall_s": 0.0}
        self.next_line = start
        self.line_every = (end - start) / PROGRESS_LINES

    def __enter__(self) -> _Progress:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def update(self, now: datetime, dt_s: float, s: _Sample, sessions: int, fleet, battery):
        stats = self.stats
        stats.update(
            pv_kw=s.pv_kw,
            import_kw=s.import_kw,
            soc_frac=s.soc_frac,
            battery_kw=s.battery_kw,
            wall_s=time.perf_counter() - self.t_wall,
        )
        stats["peak_kw"] = max(stats["peak_kw"], s.import_kw)
        stats["ev_kwh"] += s.ev_kw * dt_s / 3600.0
        stats["sessions"] = sessions
        if self.live:
            self.live.update(
                _live_view(self.station, fleet, battery, stats, now, self.start, self.end)
            )
        elif self.console is not None and now >= self.next_line:
            self.next_line += self.line_every
            limit_kw = self.station.site.grid_import_limit_kw
            self.console.print(
                f"{now.astimezone(self.station.site.tz):%H:%M} "
                f"{100 * (now - self.start) / (self.end - self.start):3.0f}% EV {s.ev_kw:.0f} kW, "
                f"PV {s.pv_kw:.0f}, grid {s.import_kw:.0f}/{limit_kw:.0f}, "
                f"SoC {100 * s.soc_frac:.0f}%, {stats['ev_kwh']:.0f} kWh",
                soft_wrap=True,
            )


async def _demo_async(
    station: Station,
    *,
    start: datetime,
    end: datetime,
    speed: float,
    policy: str,
    site: SiteInputs,
    visits,
    db_path: Path,
    console,
    record_step_s: float = RECORD_STEP_S,
    boot_timeout_s: float = BOOT_TIMEOUT_S,
    web_port: int | None = None,
) -> int:
    """The live run (with the operator console on ``web_port`` if given): returns the
    number of transactions stored over OCPP."""
    clock = ScaledClock(start, speed, held=True)  # stands still until the chargers booted
    store = Store(db_path, clock)
    cr.set_policy(store, policy)
    for token in sorted({v.id_token for v in visits}):  # the fleet's RFID cards
        records.set_id_token(store, token, "Accepted")
    demo_site = _DemoSite(station, site, clock)
    central, controller = _start_station(station, store, clock, demo_site, speed)
    await central.start("127.0.0.1", 0)
    web = None
    if web_port is not None:
        web = await _start_console(station, store, clock, central, controller, web_port, console)
    fleet_thread = _FleetThread(station, visits, f"ws://127.0.0.1:{central.port}", clock, end)
    demo_site.fleet = fleet = fleet_thread.fleet
    ctl_task = asyncio.create_task(controller.run())
    fleet_thread.start()
    n_fc = max(1, int((end - start).total_seconds() // SITE_STEP_S) + 1)
    day_ahead = forecast_pv(
        station.pv_site(), start, n_fc, SITE_STEP_S // 60, site.forecast_weather
    )
    await _wait_booted(station, store, fleet_thread, controller, boot_timeout_s)
    clock.release()
    try:
        with _Progress(station, console, start, end) as progress:
            recorder = _FlowRecorder(station, store, demo_site, fleet, day_ahead)
            last = clock.now()
            while fleet_thread.alive() and clock.now() < end:
                await asyncio.sleep(record_step_s / speed)
                now = min(clock.now(), end)
                if now <= last:
                    continue
                sample = recorder.sample(last, now)
                dt_s = (now - last).total_seconds()
                progress.update(now, dt_s, sample, recorder.sessions, fleet, demo_site.battery)
                last = now
            await fleet_thread.join(FLEET_END_WAIT_S)  # the chargers stop at ``end``
            recorder.finish()
    finally:
        fleet_thread.stop()
        ctl_task.cancel()
        await asyncio.gather(ctl_task, return_exceptions=True)
        await fleet_thread.join(FLEET_STOP_WAIT_S)
        if web is not None:
            await web.stop()
        await central.close()
    if fleet_thread.error is not None:
        raise RuntimeError(f"simulated fleet failed: {fleet_thread.error!r}")
    n_tx = len(records.list_transactions(store))
    store.close()
    return n_tx


def run_demo(
    station: Station,
    *,
    hours: float = 24.0,
    speed: float = 1440.0,
    seed: int = 1,
    weather: str | Path = "clear-day",
    policy: str = "re100",
    out_dir: str | Path = "demo-out",
    console: object | None = None,
    start_hour: float = 0.0,
    web_port: int | None = None,
) -> DemoResult:
    """Run the station in a box; see the module docstring. Returns the KPIs and files.

    ``hours`` of station time from ``start_hour`` [h, site time] on the weather file's
    first day, at ``speed`` times the wall clock (24 h at 1440x: about a minute).
    With ``web_port`` (0 = any free port) the operator console serves the run on
    127.0.0.1 and its URL and a one-off login are printed.
    """
    t_wall = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "megastation.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    wx = read_weather(weather)
    start = weather_start(wx, station.site.timezone) + timedelta(hours=start_hour)
    end = start + timedelta(hours=hours)
    site = prepare_site(station, start, end, wx, seed)
    visits = [v for v in generate_visits(station, start, end, seed) if v.arrival < end]
    n_tx = asyncio.run(
        _demo_async(
            station,
            start=start,
            end=end,
            speed=speed,
            policy=policy,
            site=site,
            visits=visits,
            db_path=db_path,
            console=console,
            web_port=web_port,
        )
    )
    wanted = sum(v.energy_wanted_kwh for v in visits)
    store = Store(db_path)
    try:
        frame = flows.read_flows(store)
        kpis = flow_kpis(station, frame, energy_wanted_kwh=wanted, sessions=len(visits))
        pf, pf_frame = perfect_foresight(station, start, end, site, visits)
        store_reference(store, station, "perfect_foresight", pf_frame=pf_frame, kpis=pf)
        files = write_flow_csvs(store, station, out)
        session_export.export_meter_values(store, out / "meter-values.csv")
        cr.export_dispatch_csv(store, out / "dispatch.csv")
        files += [out / "meter-values.csv", out / "dispatch.csv"]
        files += exports.write_day_plots(store, station, start, end, out)
    finally:
        store.close()
    unc = simulate(
        station,
        start=start,
        hours=hours,
        policy="uncontrolled",
        weather=wx,
        seed=seed,
        visits=visits,
        site=site,
        with_perfect_foresight=False,
    ).kpis
    rows = [
        {"run": "demo", **kpis.as_dict()},
        {"run": "uncontrolled", **unc.as_dict()},
        {"run": "perfect_foresight", **pf.as_dict()},
    ]
    exports.write_frame(pd.DataFrame(rows), out / "summary.csv")
    files.append(out / "summary.csv")
    return DemoResult(
        kpis=kpis,
        uncontrolled=unc,
        perfect_foresight=pf,
        out_dir=out,
        db_path=db_path,
        files=files,
        wall_s=time.perf_counter() - t_wall,
        start=start,
        end=end,
        sessions=n_tx,
    )
