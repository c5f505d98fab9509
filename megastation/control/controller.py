"""The live control loop: gather -> problem -> solve -> set points -> apply -> record.

:class:`Controller` re-plans every ``site.dispatch_interval_s`` seconds of its injected
clock and at once when something happens (:meth:`Controller.notify` is given the
central system's domain events): a car plugged in or left, ChargingNeeds arrived, a
charger went offline, the battery reports a fault, or the grid import is above the
limit. The over-limit guard polls the site meter every ``guard_interval_s`` (and checks
the import computed from the chargers' meter values on every sample), so a cut
reaches the chargers within about a second of clock time. Between plans the battery
follows the site balance around the plan (:mod:`megastation.control.balance`).

One cycle (:meth:`Controller.cycle`) is a pipeline of stages, each a module here:
:mod:`~megastation.control.gather` (devices, settings, open sessions),
:mod:`~megastation.control.problem` (needs, forecast, expected cars -> a dispatch
Problem), :mod:`~megastation.control.solve`, :mod:`~megastation.control.setpoints`
(plan -> schedules), :mod:`~megastation.control.apply` and :mod:`~megastation.control.record`.
What the loop learns of each car's power is :mod:`~megastation.control.caps`.

The controller talks only to protocols: :class:`ChargerGateway` (OCPP in
``ocpp_central.gateway``, or :class:`DirectGateway` for the socket-free simulator),
:class:`megastation.core.devices.Battery`, ``SiteMeter``, ``PVMeter`` and a forecaster
callable. It never imports ``ocpp``. Everything it needs after a restart is in the
store (open transactions, needs, overrides, profiles already sent), so
:class:`megastation.control.supervisor.ControlSupervisor` can restart a crashed loop
with backoff and it carries on.

Safety when the controller is *not* running rests on the fail-safe profiles installed
when a charger boots (see :mod:`ocpp_central.profiles`): a station maximum and a
TxDefaultProfile that share the grid limit among chargers. TxProfiles carry the plan's
whole horizon, but beyond ``lease_s`` after they are sent each connector is capped at
its fail-safe share: a charger that loses the controller keeps following the plan for
the lease, then falls back to a share that holds whatever the battery does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from megastation.control.apply import Applied, apply_battery, apply_setpoints, note_sent
from megastation.control.balance import BalanceFollower, balance_setpoint_kw
from megastation.control.caps import CarCaps
from megastation.control.demand import RELEARN_INTERVAL, Demand
from megastation.control.flows import FlowRecorder, Reading
from megastation.control.gather import (
    SiteDevices,
    SiteReadings,
    TxReading,
    read_sessions,
    read_site,
)
from megastation.control.problem import (
    DEFAULT_COARSE_AFTER_H,
    DEFAULT_COARSE_STEP_S,
    BuiltProblem,
    build_problem,
    car_sessions,
    controller_policy,
    peak_so_far_kw,
    plan_grid,
    unsampled_kw,
)
from megastation.control.pv import Forecaster, PvForecast, default_forecaster, forecast_on_grid
from megastation.control.record import record_cycle, setpoint_record
from megastation.control.renewable import StoredRenewable
from megastation.control.setpoints import (
    TxPowers,
    connector_setpoints,
    fit_headroom,
    tx_powers,
)
from megastation.control.solve import Solver, solve_plan
from megastation.core import events as ev
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.core.devices import (
    Battery,
    PVMeter,
    SimulatedBattery,
    SimulatedPVMeter,
    SiteMeter,
)
from megastation.core.gateway import ApplyOutcome, ChargerGateway, ConnectorSetpoint
from megastation.core.schedules import FailSafe, failsafe_limits_kw
from megastation.dispatch import Plan, SetPoints, TimeGrid, WarmStart, solve
from megastation.store import Store, records
from megastation.store import control as cr

log = logging.getLogger(__name__)

GUARD_TOLERANCE_KW = 0.5  # import above limit + this triggers the guard
DEFAULT_GUARD_INTERVAL_S = 0.5  # the guard polls the site meter this often [s]
DEFAULT_LEASE_INTERVALS = 5  # TxProfile follows the plan this many intervals, then fail-safe
# While running, the loop samples battery, PV, site meter and car powers this often
# [s] for the energy-flow record (megastation.control.flows).
FLOW_SAMPLE_S = 10.0
LIMIT_CHANGE_KW = 1e-6  # a grid limit that moved more than this gets new fail-safe shares


@dataclass
class CycleResult:
    """Summary of one control cycle."""

    plan_id: int | None
    reason: str
    status: str
    cycle_s: float  # wall time of the whole cycle
    solve_s: float
    n_sessions: int
    outcomes: list[ApplyOutcome] = field(default_factory=list)


class Controller:
    """The control loop of one station (see the module docstring)."""

    def __init__(
        self,
        station: Station,
        store: Store,
        clock: Clock,
        *,
        gateway: ChargerGateway,
        battery: Battery | None = None,
        site_meter: SiteMeter | None = None,
        pv_meter: PVMeter | None = None,
        forecaster: Forecaster | None = None,
        weather: pd.DataFrame | None = None,
        guard_interval_s: float | None = DEFAULT_GUARD_INTERVAL_S,
        lease_s: float | None = None,
        expect_arrivals: bool = True,
        evening_reserve: bool = True,
        record_flows: bool = True,
        flow_sample_s: float = FLOW_SAMPLE_S,
        coarse_after_h: float | None = DEFAULT_COARSE_AFTER_H,
        coarse_step_s: int = DEFAULT_COARSE_STEP_S,
        solver: Solver | None = None,
        relearn_interval: timedelta = RELEARN_INTERVAL,
    ) -> None:
        self.station = station  # the station config
        self.store = store  # source of truth (transactions, needs, overrides, sent profiles)
        self.clock = clock  # injected time
        self.gateway = gateway  # reaches the chargers
        self.devices = SiteDevices(
            clock,
            battery=battery,
            site_meter=site_meter,
            pv_meter=pv_meter,
            on_battery_fault=lambda: self.trigger("battery_fault"),
        )
        self.forecaster = forecaster or default_forecaster()
        self.weather = weather  # weather DataFrame for the forecaster, or None = clear sky
        self.guard_interval_s = guard_interval_s  # None disables the polling guard
        self.interval_s = float(station.site.dispatch_interval_s)
        self.lease_s = lease_s if lease_s is not None else DEFAULT_LEASE_INTERVALS * self.interval_s
        # plan grid: fine steps for coarse_after_h hours, then coarse_step_s steps (None: fine)
        self.coarse_after_h = coarse_after_h
        self.coarse_step_s = coarse_step_s
        # plan the cars still to come (history, else the fleet profile) as expected sessions
        self.expect_arrivals = expect_arrivals
        # keep a battery reserve for the evening, sized by the forecast PV surplus
        # (megastation.control.reserve; dispatch.md, "Session 7")
        self.evening_reserve = evening_reserve
        # record the measured energy flows per dispatch step while running (flows.py);
        # False where the caller records them itself (the simulators)
        self.record_flows = record_flows
        self.flow_sample_s = flow_sample_s
        self.flow_recorder: FlowRecorder | None = None
        self.solve_inline = False  # True: solve on the event loop (socket-free simulator)
        # the dispatch solver: by default HiGHS warm-started from the last plan's basis
        self.warm_start = WarmStart()
        self.solver: Solver = solver or (lambda problem: solve(problem, self.warm_start))
        self.cycles = 0  # completed cycles
        self.last: CycleResult | None = None
        self.guard_trips = 0
        self.caps = CarCaps()  # per transaction: schedule sent, the car's own limit
        self.balance = BalanceFollower()  # the plan the battery follows between plans
        # learned defaults and expected cars, re-learned from history every relearn_interval
        self.demand = Demand(store, station, relearn_interval)
        self.renewable = StoredRenewable(store, station)  # the battery's green share
        self._ev_kw: dict[tuple[str, int], float] = {}  # latest EV power per connector
        self._failsafe_limit_kw: float | None = None  # grid limit the fail-safe was built for
        self._reasons: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cycle_failing: bool | None = None  # None: not known (a failure may be stored)
        self.warnings: list[str] = []  # bad stored values the last cycle skipped
        self._pv_key: tuple | None = None  # the last forecast, for a per_step forecaster
        self._pv: PvForecast | None = None
        self._failsafe_shares_of: tuple[tuple, dict[str, FailSafe]] | None = None

    # the devices (settable: the composition root shares them between restarts)

    @property
    def battery(self) -> Battery | None:
        return self.devices.battery

    @battery.setter
    def battery(self, value: Battery | None) -> None:
        self.devices.battery = value

    @property
    def pv_meter(self) -> PVMeter | None:
        return self.devices.pv_meter

    @pv_meter.setter
    def pv_meter(self, value: PVMeter | None) -> None:
        self.devices.pv_meter = value

    @property
    def site_meter(self) -> SiteMeter | None:
        return self.devices.site_meter

    @site_meter.setter
    def site_meter(self, value: SiteMeter | None) -> None:
        self.devices.site_meter = value

    # ----------------------------------------------------------------- events

    def trigger(self, reason: str) -> None:
        """Ask for a re-plan now."""
        self._reasons.add(reason)
        self._idle.clear()
        self._wake.set()

    def notify(self, event: ev.Event) -> None:
        """Receive a central-system domain event (synchronous, never blocks)."""
        if isinstance(event, ev.ChargerBooted | ev.ChargerConnected):
            self._spawn(self._install_failsafe(event.charger_id, rebooted=True))
            self.trigger("charger_online")
        elif isinstance(event, ev.TransactionStarted):
            self.trigger("car_plugged_in")
        elif isinstance(event, ev.TransactionEnded):
            last_kw = self._ev_kw.pop((event.charger_id, event.connector_id or 0), None)
            if last_kw is None or last_kw > 0.0:  # a car drawing nothing frees nothing now
                self.trigger("car_left")
        elif isinstance(event, ev.ChargingNeedsReceived):
            self.trigger("charging_needs")
        elif isinstance(event, ev.OperatorChanged):
            self.trigger(f"operator_{event.what}")
        elif isinstance(event, ev.ChargerDisconnected):
            for key in [k for k in self._ev_kw if k[0] == event.charger_id]:
                self._ev_kw.pop(key, None)
            self.trigger("charger_offline")
        elif isinstance(event, ev.MeterSampleReceived) and event.power_kw is not None:
            self._ev_kw[(event.charger_id, event.connector_id)] = event.power_kw
            if (
                self.site_meter is None
                and self._computed_import_kw() > self._limit_now() + GUARD_TOLERANCE_KW
            ):
                self._over_limit()
            # no guard loop (demo): the battery follows the balance on meter samples
            follow = not self.guard_interval_s and self.balance.plan is not None
            if follow and self.balance.due(self.clock.now()):
                self._spawn(self.follow_balance())

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait (real time) until no cycle is running or pending: for tests and the demo."""
        for _ in range(3):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            if self._tasks:
                await asyncio.wait_for(
                    asyncio.gather(*list(self._tasks), return_exceptions=True), timeout_s
                )
            await asyncio.sleep(0)
            if self._idle.is_set() and not self._tasks:
                return

    # ----------------------------------------------------------------- running

    async def run(self) -> None:
        """Run until cancelled: start-up (resume from the store), then cycles."""
        await self.startup()
        guard = asyncio.create_task(self._guard_loop()) if self.guard_interval_s else None
        flow_task = None
        if self.record_flows:
            self.flow_recorder = FlowRecorder(
                self.store,
                step_s=self.station.site.dispatch_step_min * 60,
                base_load_kw=self.station.site.base_load_kw,
            )
            await self.sample_flows()
            flow_task = asyncio.create_task(self._flow_loop())
        try:
            await self._cycles()
        finally:
            self._idle.set()
            for task in (guard, flow_task):
                if task:
                    task.cancel()
            if self.flow_recorder is not None:
                try:  # what was measured of the step in progress
                    self.flow_recorder.flush(self.clock.now(), partial=True)
                except Exception as exc:
                    log.warning("energy flows: final step not recorded: %s", exc)
            for t in list(self._tasks):
                t.cancel()

    async def _cycles(self) -> None:
        """Cycle every interval, and at once when triggered."""
        next_at = self.clock.now()
        self.trigger("start")
        while True:
            wait_s = (next_at - self.clock.now()).total_seconds()
            if wait_s > 0 and not self._wake.is_set():
                await self._wait(wait_s)
            if self.clock.now() >= next_at:
                self._reasons.add("interval")
            reasons = self._reasons or {"interval"}
            self._reasons = set()
            self._wake.clear()
            try:
                await self.cycle(",".join(sorted(reasons)))
            except Exception as exc:  # shown by `status` until a cycle succeeds
                cr.record_cycle_error(self.store, f"{type(exc).__name__}: {exc}", self.clock.now())
                self._cycle_failing = True
                raise
            if self._cycle_failing is not False:
                cr.clear_cycle_error(self.store)
                self._cycle_failing = False
            if "interval" in reasons or self.clock.now() >= next_at:
                next_at = self.clock.now() + timedelta(seconds=self.interval_s)
            if not self._reasons:
                self._idle.set()

    async def _wait(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def startup(self) -> None:
        """Install (or confirm) fail-safe profiles on connected chargers."""
        for ch in self.station.chargers:
            if self._connected(ch.id):
                await self._install_failsafe(ch.id, rebooted=False)

    def _connected(self, charger_id: str) -> bool:
        row = records.get_charger(self.store, charger_id)
        return bool(row and row.get("connected"))

    async def _install_failsafe(self, charger_id: str, *, rebooted: bool) -> None:
        if self.station.charger(charger_id) is None:
            return
        if rebooted:
            cr.forget_active_profiles(self.store, charger_id)
        limit = self._limit_now()
        self._failsafe_limit_kw = limit
        try:
            outcomes = await self.gateway.install_failsafe(charger_id, grid_import_limit_kw=limit)
        except Exception as exc:  # a charger vanishing mid-call must not stop the loop
            log.warning("fail-safe for %s failed: %s", charger_id, exc)
            return
        cr.record_setpoints(
            self.store, None, [setpoint_record(o) for o in outcomes], self.clock.now()
        )

    async def _refresh_failsafe(self, limit_kw: float) -> None:
        """The site limit changed since the fail-safe was installed: new shares."""
        if (
            self._failsafe_limit_kw is None
            or abs(limit_kw - self._failsafe_limit_kw) <= LIMIT_CHANGE_KW
        ):
            return
        for ch in self.station.chargers:
            if self._connected(ch.id):
                await self._install_failsafe(ch.id, rebooted=False)

    async def _flow_loop(self) -> None:
        while True:
            await self.clock.sleep(self.flow_sample_s)
            try:
                await self.sample_flows()
            except Exception as exc:  # a device or store hiccup must not stop the loop
                log.warning("energy flows: sample failed: %s", exc)

    async def sample_flows(self) -> None:
        """Take one reading of the site for the energy-flow record (while running)."""
        if self.flow_recorder is None:
            return
        batt = await self.devices.read_battery()
        pv_kw = await self.devices.read_pv_kw()
        grid = await self.devices.read_grid()
        self.flow_recorder.observe(
            self.clock.now(),
            Reading(
                pv_kw=pv_kw or 0.0,
                battery_kw=batt.power_kw if batt else 0.0,
                soc_frac=batt.soc_frac if batt and not batt.fault else None,
                ev_kw=sum(self._ev_kw.values()),
                grid_limit_kw=self._limit_now(),
                import_kw=grid.import_kw if grid else None,
                export_kw=grid.export_kw if grid else None,
            ),
        )

    async def _guard_loop(self) -> None:
        while True:
            await self.clock.sleep(self.guard_interval_s)
            try:
                import_kw = await self.devices.measured_import_kw()
            except Exception as exc:  # a faulted meter is logged by its driver, once
                log.debug("guard: site meter read failed: %s", exc)
                continue
            if import_kw is not None and import_kw > self._limit_now() + GUARD_TOLERANCE_KW:
                self._over_limit()
            try:
                await self.follow_balance()
            except Exception as exc:  # a device hiccup must not stop the guard
                log.warning("guard: battery balance failed: %s", exc)

    def _over_limit(self) -> None:
        if "over_limit" not in self._reasons:
            self.guard_trips += 1
        self.trigger("over_limit")

    def _limit_now(self) -> float:
        """The grid import limit in force now [kW] (the operator's override counts)."""
        site = self.station.site
        return cr.grid_limit_kw(self.store, site.grid_import_limit_kw, self.clock.now())[0]

    def _computed_import_kw(self) -> float:
        return sum(self._ev_kw.values()) + self.station.site.base_load_kw

    # ----------------------------------------------------------------- between plans

    async def follow_balance(self) -> float | None:
        """Move the battery set point with the site balance around the plan in force
        (:meth:`balance_setpoint_kw`); returns the set point [kW, > 0 discharge] or None
        when there is no plan, battery or reading to follow."""
        if self.battery is None or self.balance.plan is None:
            return None
        batt = await self.devices.read_battery()
        if batt is None or batt.fault:
            return None
        grid_reading = await self.devices.read_grid()
        pv_kw = None
        if grid_reading is None:  # polled twice a second: a faulted driver logs it once
            pv_kw = await self.devices.read_pv_kw(quiet=True)
        kw = self.balance_setpoint_kw(
            self.clock.now(),
            soc_frac=batt.soc_frac,
            pv_kw=pv_kw,
            net_import_kw=None if grid_reading is None else grid_reading.net_import_kw,
            battery_kw=batt.power_kw,
        )
        if kw is None or not self.balance.changed(kw):
            return kw
        try:
            await self.battery.set_power_kw(kw)
        except Exception as exc:
            log.warning("battery set point failed: %s", exc)
            return None
        self.balance.set_kw = kw
        return kw

    def balance_setpoint_kw(
        self,
        now: datetime,
        *,
        soc_frac: float,
        pv_kw: float | None = None,
        ev_kw: float | None = None,
        net_import_kw: float | None = None,
        battery_kw: float = 0.0,
    ) -> float | None:
        """The battery set point [kW, > 0 discharge] that follows the site balance at
        ``now`` around the plan in force (:func:`megastation.control.balance.balance_setpoint_kw`);
        None without one. ``ev_kw`` defaults to the latest car samples."""
        if self.balance.plan is None:
            return None
        made, plan = self.balance.plan
        return balance_setpoint_kw(
            plan,
            made,
            now,
            self.station,
            soc_frac=soc_frac,
            limit_kw=self._limit_now(),
            pv_kw=pv_kw,
            ev_kw=sum(self._ev_kw.values()) if ev_kw is None else ev_kw,
            net_import_kw=net_import_kw,
            battery_kw=battery_kw,
        )

    # ----------------------------------------------------------------- one cycle

    async def cycle(self, reason: str = "manual") -> CycleResult:
        """One pass: gather -> problem -> solve -> set points -> apply -> record."""
        started_s = time.perf_counter()
        now = self.clock.now()
        self.warnings = []
        site, uncontrollable, txs = await self._gather(now)
        built, pv = self._problem(now, site, uncontrollable, txs)
        plan = await solve_plan(
            built.problem, self.clock, inline=self.solve_inline, solver=self.solver
        )
        self.renewable.last_plan = (now, plan)
        first = plan.first_step()
        powers, setpoints = self._setpoints(now, reason, site, built, plan, first)
        self.caps.forget_closed({r.tx.transaction_id for r in txs})
        applied = await self._apply(now, plan, first, built, setpoints)
        plan_id, cycle_s = record_cycle(
            self.store, now=now, reason=reason, site=site, pv=pv, built=built, plan=plan,
            first=first, powers=powers, applied=applied, uncontrollable=uncontrollable,
            warnings=self.warnings, started_s=started_s,
        )  # fmt: skip
        self.cycles += 1
        solve_s = plan.build_time_s + plan.solve_time_s
        n = len(built.cars.controlled)
        self.last = CycleResult(plan_id, reason, plan.status, cycle_s, solve_s, n, applied.outcomes)
        if applied.rejected:
            self.trigger("uncontrollable")  # re-plan with them as uncontrolled load
        return self.last

    async def _gather(self, now: datetime) -> tuple[SiteReadings, dict[str, str], list[TxReading]]:
        """Stage 1: the site (re-installing fail-safe shares if the limit moved), then the
        open sessions; a car with no power sample seen yet counts its stored one."""
        site = await read_site(self.devices, self.store, self.station, now)
        await self._refresh_failsafe(site.limit_kw)
        uncontrollable, txs = read_sessions(self.store, self.caps)
        self.warnings += [f"{v}: not finite, skipped" for r in txs for v in r.tx.bad_values]
        for r in txs:
            if r.tx.power_kw is not None:
                self._ev_kw.setdefault((r.tx.charger_id, r.tx.connector_id), r.tx.power_kw)
        return site, uncontrollable, txs

    def _problem(
        self,
        now: datetime,
        site: SiteReadings,
        uncontrollable: dict[str, str],
        txs: list[TxReading],
    ) -> tuple[BuiltProblem, PvForecast]:
        """Stage 2: the dispatch problem, and the PV forecast it was made with."""
        grid = plan_grid(now, self.station, self.coarse_after_h, self.coarse_step_s)
        pv = self._forecast(grid)
        if self.flow_recorder is not None:
            p10 = None if pv.p10_kw is None else float(pv.p10_kw[0])
            self.flow_recorder.note_forecast(now, float(pv.p50_kw[0]), p10, pv.p90_first_kw)
        cars = car_sessions(
            now, self.station, grid, txs, uncontrollable=uncontrollable, caps=self.caps,
            ev_kw=self._ev_kw, learned=self.demand.learned(now),
            overrides=cr.session_overrides(self.store),
            unsampled_kw=unsampled_kw(txs, self.caps, self._ev_kw, now),
        )  # fmt: skip
        usable_battery = site.battery is not None and not site.battery.fault
        built = build_problem(
            grid=grid, station=self.station, site=site, pv=pv, cars=cars,
            ev_kw_total=sum(self._ev_kw.values()), policy=controller_policy(site.policy),
            expected=self.demand.expected(now) if self.expect_arrivals else None,
            green_frac=self.renewable.frac(now) if usable_battery else None,
            peak_kw=self._peak_so_far(now), reserve=self.evening_reserve,
        )  # fmt: skip
        return built, pv

    def _forecast(self, grid: TimeGrid) -> PvForecast:
        """The PV forecast on ``grid``. A forecaster whose forecast is the same for every
        plan made within one dispatch step (``per_step``: the simulator's) is asked once
        per step and grid layout."""
        key = None
        if getattr(self.forecaster, "per_step", False):
            step_s = self.station.site.dispatch_step_min * 60
            key = (
                int(grid.start.timestamp() // step_s), grid.n_steps, grid.n_fine,
                grid.coarse_step_s, grid.first_step_s is None,
            )  # fmt: skip
            if key == self._pv_key and self._pv is not None:
                return self._pv
        pv = forecast_on_grid(
            self.forecaster, self.station, grid, weather=self.weather,
            history=self.devices.pv_history,
        )  # fmt: skip
        self._pv_key, self._pv = key, pv
        return pv

    def _setpoints(
        self,
        now: datetime,
        reason: str,
        site: SiteReadings,
        built: BuiltProblem,
        plan: Plan,
        first: SetPoints,
    ) -> tuple[TxPowers, list[ConnectorSetpoint]]:
        """Stage 4: each controlled car's powers and schedule (forced after an over-limit
        trip; the fail-safe share after the lease)."""
        powers = tx_powers(plan, first)
        fit_headroom(powers, plan, first, site.limit_kw)
        failsafe = self._failsafe_shares(site.limit_kw)
        setpoints = connector_setpoints(
            powers,
            plan,
            built.cars.controlled,
            self.station,
            failsafe,
            lease_end=now + timedelta(seconds=self.lease_s),
            force="over_limit" in reason,
        )
        return powers, setpoints

    def _failsafe_shares(self, limit_kw: float) -> dict[str, FailSafe]:
        """Each charger's fail-safe share under ``limit_kw`` (made again only when the
        limit moves: the same for every plan otherwise)."""
        key = (limit_kw, self.station.chargers, self.station.site.base_load_kw)
        if self._failsafe_shares_of is None or self._failsafe_shares_of[0] != key:
            shares = failsafe_limits_kw(self.station.chargers, limit_kw, key[2])
            self._failsafe_shares_of = (key, shares)
        return self._failsafe_shares_of[1]

    def _peak_so_far(self, now: datetime) -> float:
        """This month's demand peak [kW] (:func:`megastation.control.problem.peak_so_far_kw`)."""
        return peak_so_far_kw(self.store, self.station, now, self.warnings)

    async def _apply(
        self,
        now: datetime,
        plan: Plan,
        first: SetPoints,
        built: BuiltProblem,
        setpoints: list[ConnectorSetpoint],
    ) -> Applied:
        """Stage 5: set points to the chargers, the plan's set point to the battery (which
        then follows the balance around this plan)."""
        outcomes = await apply_setpoints(self.gateway, setpoints)
        battery_kw = first.battery_setpoint_kw  # device convention: + discharge
        battery = None
        if self.battery is not None and built.battery is not None:
            battery = await apply_battery(self.battery, battery_kw)
            if battery[0] == "accepted":
                self.balance.set_kw = battery_kw
                self.balance.plan = (now, plan)
        else:
            self.balance.plan = None
        note_sent(self.caps, outcomes, setpoints, now)
        return Applied(outcomes, battery_kw, battery)


def controller_from_station(
    station: Station,
    store: Store,
    clock: Clock,
    *,
    gateway: ChargerGateway,
    pv_kw: Callable[[datetime], float] | None = None,
    forecaster: Forecaster | None = None,
    weather: pd.DataFrame | None = None,
    **kwargs: Any,
) -> Controller:
    """A controller with the default simulated devices (battery, PV meter, no site meter).

    ``pv_kw(t)`` gives simulated PV actuals [kW]; without it PV is not metered.
    """

    battery = SimulatedBattery(station.battery, clock) if station.battery else None
    pv = SimulatedPVMeter(pv_kw, clock) if pv_kw else None
    return Controller(
        station, store, clock, gateway=gateway, battery=battery, pv_meter=pv,
        forecaster=forecaster, weather=weather, **kwargs,
    )  # fmt: skip


__all__ = [
    "Controller",
    "CycleResult",
    "Forecaster",
    "controller_from_station",
]
