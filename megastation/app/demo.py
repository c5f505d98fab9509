"""The station in a box: server, controller and a simulated fleet over real OCPP.

:func:`run_demo` starts, on one accelerated clock (:class:`ScaledClock`): the OCPP
central system on 127.0.0.1 (a free port), the :class:`Controller` with the OCPP
gateway, the simulated battery and PV meter, one simulated charge point per charger
(:class:`megastation.sim.chargepoint.Fleet`, real WebSockets) and the simulated site,
which records the energy flows every minute of station time. At the end it compares
the run with uncontrolled charging (socket-free, same cars and sun) and the
perfect-foresight optimum, and writes the database, CSVs and PNG plots to ``out_dir``.

:func:`run_simulations` is the multi-policy socket-free runner behind ``megastation
simulate``; :func:`kpi_table` renders KPIs side by side with rich.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from forecasts.forecast import forecast_pv
from megastation.control.controller import Controller
from megastation.core.clock import ScaledClock
from megastation.core.config import Station
from megastation.core.devices import GridReading, SimulatedBattery, SimulatedPVMeter
from megastation.core.fleet import generate_visits
from megastation.reports import exports
from megastation.reports import sessions as session_export
from megastation.sim.chargepoint import Fleet
from megastation.sim.simulator import (
    Kpis,
    SimulationResult,
    _Bucket,
    _store_reference,
    flow_kpis,
    perfect_foresight,
    prepare_site,
    read_weather,
    simulate,
    weather_start,
)
from megastation.store import Store, flows, records
from megastation.store import control as control_records
from megastation.store import control as cr
from ocpp_central.gateway import OcppGateway
from ocpp_central.server import CentralSystem

DEMO_GUARD_S = 15.0  # station seconds between guard polls of the site meter

# rows of the comparison table: (label, Kpis field, format)
_ROWS = (
    ("energy delivered [kWh]", "energy_delivered_kwh", "{:,.0f}"),
    ("unmet energy [kWh]", "unmet_kwh", "{:,.0f}"),
    ("renewable share [%]", "renewable_frac", "pct"),
    ("grid import [kWh]", "grid_import_kwh", "{:,.0f}"),
    ("peak import [kW]", "peak_import_kw", "{:,.0f}"),
    ("grid limit [kW]", "grid_limit_kw", "{:,.0f}"),
    ("steps over limit", "steps_over_limit", "{:d}"),
    ("cost [KRW]", "cost_krw", "{:,.0f}"),
    ("PV used [kWh]", "pv_kwh", "{:,.0f}"),
    ("sessions", "sessions", "{:d}"),
)


def kpi_table(results: dict[str, Kpis], pf: Kpis | None = None, *, title: str = "") -> object:
    """A rich Table: one column per run (and the perfect-foresight optimum)."""
    from rich.table import Table

    cols = dict(results)
    if pf is not None:
        cols["perfect foresight"] = pf
    t = Table(title=title or None)
    t.add_column("")
    for name in cols:
        t.add_column(name, justify="right")
    for label, key, fmt in _ROWS:
        vals = []
        for k in cols.values():
            v = getattr(k, key)
            vals.append(
                f"{100 * v:.1f}" if fmt == "pct" else fmt.format(int(v) if fmt == "{:d}" else v)
            )
        t.add_row(label, *vals)
    return t


def write_run_csvs(result: SimulationResult, station: Station, out_dir: Path) -> list[Path]:
    """Energy flows, sessions by source and daily CSVs of one simulated run's store."""
    paths = []
    store = Store(result.db_path)
    try:
        for name, fn in (
            ("energy-flows", exports.energy_flows_frame),
            ("sessions", exports.sessions_by_source_frame),
            ("daily", exports.daily_frame),
        ):
            p = out_dir / f"{result.policy}-{name}.csv"
            exports.write_frame(fn(store, station), p)
            paths.append(p)
    finally:
        store.close()
    return paths


def run_simulations(
    station: Station,
    policies: Sequence[str],
    *,
    days: float = 1.0,
    start: datetime | None = None,
    weather: str | Path = "mixed-week",
    seed: int = 1,
    out_dir: str | Path = "simulate-out",
    plan_interval_s: float = 900.0,
    console: object | None = None,
) -> tuple[dict[str, Kpis], Kpis]:
    """Run each policy on the same site and cars; write DBs, CSVs and a summary CSV."""
    from rich.progress import Progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wx = read_weather(weather)
    t0 = start or weather_start(wx, station.site.timezone)
    end = t0 + timedelta(days=days)
    site = prepare_site(station, t0, end, wx, seed)
    visits = generate_visits(station, t0, end, seed)
    results: dict[str, Kpis] = {}
    pf: Kpis | None = None
    with Progress(console=console, transient=True, disable=console is None) as prog:
        for i, pol in enumerate(policies):
            task = prog.add_task(f"{pol}", total=1.0)
            r = simulate(
                station,
                start=t0,
                days=days,
                policy=pol,
                weather=wx,
                seed=seed,
                db_path=out / f"{pol}.db",
                plan_interval_s=plan_interval_s,
                visits=visits,
                site=site,
                with_perfect_foresight=(i == 0),
                progress=lambda x, task=task: prog.update(task, completed=x),
            )
            results[pol] = r.kpis
            pf = pf or r.perfect_foresight
            write_run_csvs(r, station, out)
    rows = [{"run": k, **v.as_dict()} for k, v in results.items()]
    rows.append({"run": "perfect_foresight", **pf.as_dict()})
    exports.write_frame(pd.DataFrame(rows), out / "summary.csv")
    return results, pf


# --------------------------------------------------------------------------- demo


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


class _HeldClock(ScaledClock):
    """A :class:`ScaledClock` that stands at ``start`` until :meth:`release`.

    The chargers boot and receive their fail-safe profiles while station time stands
    still, so the first car of the day finds a charger that is ready. Sleeps begun
    while held end ``seconds / speed`` after the release. Safe across threads.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        super().__init__(start, speed)
        self._released = threading.Event()

    def now(self) -> datetime:
        return super().now() if self._released.is_set() else self._start

    async def sleep(self, seconds: float) -> None:
        while not self._released.is_set():
            await asyncio.sleep(0.01)
        await super().sleep(seconds)

    def release(self) -> None:
        self._t0 = time.monotonic()
        self._released.set()


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
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

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


async def _demo_async(
    station: Station,
    *,
    start: datetime,
    end: datetime,
    speed: float,
    policy: str,
    site,
    visits,
    db_path: Path,
    console,
    record_step_s: float = 60.0,
    boot_timeout_s: float = 30.0,
    web_port: int | None = None,
) -> int:

    t_wall = time.perf_counter()
    clock = _HeldClock(start, speed)
    store = Store(db_path, clock)
    cr.set_policy(store, policy)
    for token in sorted({v.id_token for v in visits}):  # the fleet's RFID cards
        records.set_id_token(store, token, "Accepted")
    step = pd.Timedelta(minutes=15)

    def row(t: datetime) -> int:
        return min(max(0, int((pd.Timestamp(t) - site.index[0]) // step)), len(site.index) - 1)

    def pv_at(t: datetime) -> float:
        return float(site.pv_actual_kw[row(t)])

    fleet_holder: list[_FleetThread] = []

    def headroom_kw() -> float:
        now = clock.now()
        ev = fleet_holder[0].fleet.total_power_kw() if fleet_holder else 0.0
        base = float(site.base_load_kw[row(now)])
        return ev + base - pv_at(now) + station.site.grid_export_limit_kw

    battery = _SiteBattery(station.battery, clock, headroom_kw) if station.battery else None

    class _SiteMeter:
        """The simulated site's grid connection point: what a real station's meter reads
        (the fleet's true charging power, the varying base load, PV and the battery)."""

        async def read(self) -> GridReading:
            now = clock.now()
            ev = fleet_holder[0].fleet.total_power_kw() if fleet_holder else 0.0
            batt = battery.power_kw if battery else 0.0
            net = ev + float(site.base_load_kw[row(now)]) - pv_at(now) - batt
            return GridReading(max(net, 0.0), max(-net, 0.0), now)

    holder: dict[str, Controller] = {}
    # operator commands are polled about twice a second of wall time, not per station second
    central = CentralSystem(
        station,
        store,
        clock,
        on_event=lambda e: holder["c"].notify(e) if "c" in holder else None,
        command_poll_s=max(1.0, 0.5 * speed),
    )
    gateway = OcppGateway(station, store, clock, central)
    controller = Controller(
        station,
        store,
        clock,
        gateway=gateway,
        battery=battery,
        pv_meter=SimulatedPVMeter(pv_at, clock),
        weather=site.forecast_weather,
        site_meter=_SiteMeter(),
        # the guard (over-limit check, battery following the site balance between plans)
        # polls the meter every DEMO_GUARD_S station seconds
        guard_interval_s=DEMO_GUARD_S,
        # the demo records the simulated site's true flows itself (its varying base load
        # and curtailment, which the controller does not measure)
        record_flows=False,
    )
    holder["c"] = controller
    await central.start("127.0.0.1", 0)
    web = None
    if web_port is not None:  # the console, to watch the simulated day live
        import secrets

        from megastation.web import WebServer
        from megastation.web.auth import add_user

        password = secrets.token_urlsafe(9)
        add_user(store, "demo", "operator", password)
        web = WebServer(
            station, store, clock, central=central, port=web_port,
            notify=lambda e: holder["c"].notify(e),
        )  # fmt: skip
        await web.start()
        if console is not None:
            console.print(f"console: {web.url} (log in as demo, password {password})")
    fleet_thread = _FleetThread(station, visits, f"ws://127.0.0.1:{central.port}", clock, end)
    fleet_holder.append(fleet_thread)
    fleet = fleet_thread.fleet
    ctl_task = asyncio.create_task(controller.run())
    fleet_thread.start()

    n_fc = max(1, int((end - start).total_seconds() // 900) + 1)
    day_ahead = forecast_pv(station.pv_site(), start, n_fc, 15, site.forecast_weather)
    bucket: _Bucket | None = None
    flow_step_s = station.site.dispatch_step_min * 60
    limit_kw = station.site.grid_import_limit_kw

    # station time stands still until every charger has booted and got its fail-safe
    deadline = time.perf_counter() + boot_timeout_s
    while time.perf_counter() < deadline and fleet_thread.alive():
        if fleet_thread.booted() and all(
            cr.active_profile(store, ch.id, 0, "max") is not None for ch in station.chargers
        ):
            break
        await asyncio.sleep(0.02)
    await controller.wait_idle(boot_timeout_s)
    clock.release()

    def flush(b: _Bucket | None) -> None:
        if b is None or b.seconds <= 0:
            return
        mean = {k: v / b.seconds for k, v in b.sums.items()}
        t = pd.Timestamp(b.ts).floor("15min")
        fc = day_ahead.loc[t] if t in day_ahead.index else None
        flows.record_flows(
            store,
            flows.FlowStep(
                ts=b.ts,
                step_s=b.seconds,
                soc_frac=b.soc_frac,
                grid_limit_kw=limit_kw,
                pv_forecast_kw=None if fc is None else float(fc["pv_ac_kw"]),
                pv_p10_kw=None if fc is None else float(fc["pv_ac_p10_kw"]),
                pv_p90_kw=None if fc is None else float(fc["pv_ac_p90_kw"]),
                **mean,
            ),
        )
        flows.record_connector_flows(
            store,
            [
                flows.ConnectorStep(b.ts, c, n, e / b.seconds, tx, None)
                for (c, n), (e, tx, _) in b.connector.items()
            ],
        )

    from rich.live import Live

    tty = console is not None and getattr(console, "is_terminal", False)
    live = Live(console=console, refresh_per_second=4, transient=True) if tty else None
    if live:
        live.start()
    stats = {"peak_kw": 0.0, "ev_kwh": 0.0, "sessions": 0, "wall_s": 0.0}
    next_line = start
    line_every = (end - start) / 8  # plain progress lines when stdout is not a terminal
    known_tx: dict[tuple[str, int], int] = {}
    prev_wh: dict[tuple[str, int], float] = fleet.registers_wh()
    try:
        last = clock.now()
        while fleet_thread.alive() and clock.now() < end:
            await asyncio.sleep(record_step_s / speed)
            now = min(clock.now(), end)
            dt_s = (now - last).total_seconds()
            if dt_s <= 0:
                continue
            # mean EV power over [last, now) from the chargers' energy registers, so the
            # flows add up to the metered energy of the transactions
            regs = fleet.registers_wh()
            power = {k: max(0.0, (wh - prev_wh.get(k, wh)) * 3.6 / dt_s) for k, wh in regs.items()}
            prev_wh.update(regs)
            ev_kw = sum(power.values())
            pv = pv_at(last)
            base = float(site.base_load_kw[row(last)])
            batt = battery.power_kw if battery else 0.0
            net = ev_kw + base - pv - batt
            curtailed = min(pv, max(0.0, -net - station.site.grid_export_limit_kw))
            net += curtailed
            # which stored transaction each connector's energy belongs to
            open_tx = {
                (t.charger_id, t.connector_id): t.transaction_id
                for t in records.open_transactions(store)
            }
            conn_tx: dict[tuple[str, int], tuple[float, int | None]] = {}
            for conn, p in power.items():
                tx = open_tx.get(conn)
                if tx is not None:
                    known_tx[conn] = tx
                elif p > 0:
                    tx = known_tx.get(conn)  # stored a moment after the charger started
                if p > 0 or tx is not None:
                    conn_tx[conn] = (p, tx)
            # the sample holds over [last, now); split it at the flow-step boundaries
            t = last
            while t < now:
                ts = pd.Timestamp(t).floor(f"{flow_step_s}s").to_pydatetime()
                seg_end = min(now, ts + timedelta(seconds=flow_step_s))
                seg_s = (seg_end - t).total_seconds()
                if bucket is None or bucket.ts != ts:
                    flush(bucket)
                    bucket = _Bucket(ts)
                if bucket.soc_frac is None and battery:
                    bucket.soc_frac = battery.soc_frac
                bucket.add(
                    seg_s,
                    pv_kw=pv - curtailed,
                    curtailed_kw=curtailed,
                    ev_kw=ev_kw,
                    base_load_kw=base,
                    battery_charge_kw=max(-batt, 0.0),
                    battery_discharge_kw=max(batt, 0.0),
                    grid_import_kw=max(net, 0.0),
                    grid_export_kw=max(-net, 0.0),
                )
                for conn, (p, tx) in conn_tx.items():
                    old = bucket.connector.get(conn, (0.0, tx, None))
                    bucket.connector[conn] = (old[0] + p * seg_s, tx or old[1], None)
                t = seg_end
            stats.update(
                pv_kw=pv,
                import_kw=max(net, 0.0),
                soc_frac=battery.soc_frac if battery else 0.0,
                battery_kw=batt,
                wall_s=time.perf_counter() - t_wall,
            )
            stats["peak_kw"] = max(stats["peak_kw"], max(net, 0.0))
            stats["ev_kwh"] += ev_kw * dt_s / 3600.0
            stats["sessions"] = len(set(known_tx.values()))
            last = now
            if live:
                live.update(_live_view(station, fleet, battery, stats, now, start, end))
            elif console is not None and now >= next_line:
                next_line += line_every
                console.print(
                    f"{now.astimezone(station.site.tz):%H:%M} "
                    f"{100 * (now - start) / (end - start):3.0f}% EV {ev_kw:.0f} kW, "
                    f"PV {pv:.0f}, grid {max(net, 0.0):.0f}/{limit_kw:.0f}, "
                    f"SoC {100 * stats['soc_frac']:.0f}%, {stats['ev_kwh']:.0f} kWh",
                    soft_wrap=True,
                )
        await fleet_thread.join(30.0)  # the chargers stop their transactions at ``end``
        # energy the chargers metered after the last sample (their final tick at ``end``)
        # goes into the last step, so the flows add up to the transactions
        if bucket is not None:
            for k, wh in fleet.registers_wh().items():
                kw_s = max(0.0, wh - prev_wh.get(k, wh)) * 3.6  # kW x s
                if kw_s > 0:
                    for name in ("ev_kw", "grid_import_kw"):
                        bucket.sums[name] = bucket.sums.get(name, 0.0) + kw_s
                    e, tx, _ = bucket.connector.get(k, (0.0, known_tx.get(k), None))
                    bucket.connector[k] = (e + kw_s, tx, None)
        flush(bucket)
    finally:
        if live:
            live.stop()
        fleet_thread.stop()
        ctl_task.cancel()
        await asyncio.gather(ctl_task, return_exceptions=True)
        await fleet_thread.join(10.0)
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
        _store_reference(store, station, "perfect_foresight", pf_frame=pf_frame, kpis=pf)
        files = []
        for name, fn in (
            ("energy-flows.csv", exports.energy_flows_frame),
            ("sessions.csv", exports.sessions_by_source_frame),
            ("daily.csv", exports.daily_frame),
        ):
            exports.write_frame(fn(store, station), out / name)
            files.append(out / name)
        session_export.export_meter_values(store, out / "meter-values.csv")
        control_records.export_dispatch_csv(store, out / "dispatch.csv")
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
