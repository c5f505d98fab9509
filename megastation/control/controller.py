"""The live control loop: gather -> forecast -> dispatch -> apply -> record.

:class:`Controller` re-plans every ``site.dispatch_interval_s`` seconds of its injected
clock and at once when something happens (:meth:`Controller.notify` is given the
central system's domain events): a car plugged in or left, ChargingNeeds arrived, a
charger went offline, the battery reports a fault, or the grid import is above the
limit. The over-limit guard polls the site meter every ``guard_interval_s`` (and checks
the import computed from the chargers' meter values on every sample), so a cut
reaches the chargers within about a second of clock time.

The controller talks only to protocols: :class:`ChargerGateway` (OCPP in
``ocpp_central.gateway``, or :class:`DirectGateway` for the socket-free simulator),
:class:`megastation.core.devices.Battery`, ``SiteMeter``, ``PVMeter`` and a forecaster
callable. It never imports ``ocpp``. Everything it needs after a restart is in the
store (open transactions, needs, overrides, profiles already sent), so
:class:`ControlSupervisor` can restart a crashed loop with backoff and it carries on.

Safety when the controller is *not* running rests on the fail-safe profiles installed
when a charger boots (see :mod:`ocpp_central.profiles`): a station maximum and a
TxDefaultProfile that share the grid limit among chargers. TxProfiles carry the plan's
whole horizon, but beyond ``lease_s`` after they are sent each connector is capped at
its fail-safe share: a charger that loses the controller keeps following the plan for
the lease, then falls back to a share that holds whatever the battery does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from megastation.control import history
from megastation.control.flows import FlowRecorder, Reading
from megastation.control.needs import (
    EXPECTED_PREFIX,
    ExpectedDemand,
    LearnedDefaults,
    estimate_need,
    expected_sessions,
    learn_defaults_from_store,
    profile_demand,
    read_overrides,
)
from megastation.control.pv_forecast import station_forecast
from megastation.core import events as ev
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.core.devices import (
    Battery,
    BatteryReading,
    GridReading,
    PVMeter,
    SimulatedBattery,
    SimulatedPVMeter,
    SiteMeter,
)
from megastation.core.gateway import ApplyOutcome, ChargerGateway, ConnectorSetpoint
from megastation.core.schedules import KwSchedule, failsafe_limits_kw
from megastation.dispatch import (
    Plan,
    Policy,
    PowerGroup,
    Problem,
    SessionNeed,
    TimeGrid,
    battery_may_export,
    solve,
    station_battery,
    station_grid_state,
    station_groups,
)
from megastation.store import Store, iso, parse_iso, records
from megastation.store import control as cr

log = logging.getLogger(__name__)

GUARD_TOLERANCE_KW = 0.5  # import above limit + this triggers the guard
DEMAND_WINDOW_S = 900  # the demand charge bills the highest 15-minute mean import
DEFAULT_LEASE_INTERVALS = 5  # TxProfile follows the plan this many intervals, then fail-safe
# Plan grid: dispatch steps (site.dispatch_step_min) for the next hours, then coarser steps
# to the horizon end (dispatch.md, "Time"); None plans the whole horizon at the fine step.
DEFAULT_COARSE_AFTER_H: float | None = 6.0
DEFAULT_COARSE_STEP_S = 3600
# Energy a car probably takes beyond its firm need (Need.extra_energy_kwh) is a second LP
# session on the same connector; its unmet kWh cost this share of a firm kWh: below
# tier 1 (others' firm energy comes first) but far above grid energy and money, so it is
# still delivered before the car leaves.
EXTRA_PRIORITY = 0.05
EXTRA_SUFFIX = "+extra"
# Chatter: a change of a car's first-step power against what it was last sent costs
# this much per kW (objective points, re100 tier 4 is 0.01 per kWh): ties and near-ties
# keep the previous plan instead of flipping between equivalent plans.
CHATTER_WEIGHT_PER_KW = 2e-3
# A car that draws less than it was allowed (by more than this) limits itself: it is
# planned with what it drew (car maximum, taper) until it draws more.
CAR_CAP_TOLERANCE_KW = 1.0
# Over OCPP a sample's power may reflect the limit before the last one (report and
# profile cross), so a cap is learned only from two samples in a row below the limit.
# False: caps are not learned (the highest limit a car followed is still tracked).
LEARN_CAR_LIMITS = True
CAR_CAP_TOLERANCE_FRAC = 0.1  # ... or by more than this share of the limit (ramps, rounding)
CAR_CAP_MIN_SENT_KW = 2.0  # ... learned only from limits at least this high
CAR_CAP_SETTLE_S = 5.0  # ... and from samples taken this long after the limit was sent
CAR_CAP_TTL_S = 300.0  # a cap of ~0 is probed again after this ...
# ... with this much power: a car that takes it gets its full power back at the next
# plan; a full car keeps drawing nothing, and a whole connector's worth of power is not
# held for it every few minutes (under a binding limit, that starved the others).
CAR_PROBE_KW = 5.0
# Until a DC car whose energy is guessed has shown what it takes, its firm energy is
# planned at no more than this (Korean DC cars take 50-260 kW; about a fifth take 100 kW
# or less): a plan that waits to charge must not count on power the car may not have.
# Its extra energy may use the connector's full power.
UNPROVEN_DC_KW = 100.0
# Tier 4 (charge early in the stay): objective points per kWh x (0.5 + progress). Above
# the dispatch default so that small price and terminal-value differences (re100 tier 3:
# 0.1 point per KRW) do not push charging towards departure; still far below a grid kWh.
EARLY_WEIGHT_PER_KWH = 0.5
BATTERY_GREEN_KEY = "control.battery_renewable_frac"
# Between plans the battery follows the site balance around the plan (follow_balance_kw):
# it changes its set point when the import (or export) would differ from the plan's by
# more than this, re-checked every guard tick (or meter sample) at most this often.
BALANCE_DEADBAND_KW = 1.0
BALANCE_INTERVAL_S = 0.5
# ... and it discharges beyond the plan only while its state of charge is no more than
# this below the plan's path (the plan's reserve for later stays).
BALANCE_SOC_SLACK_FRAC = 0.01
# While running, the loop samples battery, PV, site meter and car powers this often
# [s] for the energy-flow record (megastation.control.flows).
FLOW_SAMPLE_S = 10.0


def follow_balance_kw(
    *,
    planned_battery_kw: float,
    planned_import_kw: float,
    planned_export_kw: float,
    import_at_plan_kw: float,
    max_charge_kw: float,
    max_discharge_kw: float,
    may_discharge_more: bool = True,
    deadband_kw: float = BALANCE_DEADBAND_KW,
    may_export: bool = True,
) -> float:
    """The battery set point [kW, > 0 discharge] between plans (self-consumption).

    ``import_at_plan_kw`` is the site's net import [kW] (< 0 export) with the battery at
    the plan's power ``planned_battery_kw``. The plan's grid import and export for the
    current step bound what the battery does:

    - more surplus than planned (the site would export more than the plan): the battery
      takes it (charges more, or discharges less), so PV is stored rather than exported;
    - more import than planned (cars draw more, PV falls short): the battery discharges
      instead (or charges less); beyond the plan's discharge only if
      ``may_discharge_more`` (its state of charge is not below the plan's path);
    - within ``deadband_kw`` of the plan: the plan's set point.

    Clamped to the battery's power limits; the SoC limits are the battery's own. Unless
    ``may_export`` (:func:`megastation.dispatch.battery_may_export`), a discharge never
    exceeds the import the site would have with the battery idle: stored energy is not
    sent to the grid (#11).
    """
    p = planned_battery_kw
    x = import_at_plan_kw
    if x < -planned_export_kw - deadband_kw:
        p = planned_battery_kw + (x + planned_export_kw)
    elif x > planned_import_kw + deadband_kw:
        p = planned_battery_kw + (x - planned_import_kw)
        if not may_discharge_more:
            p = min(p, max(planned_battery_kw, 0.0))
    if not may_export and p > 0:
        p = min(p, max(0.0, x + planned_battery_kw))  # x + planned: import, battery idle
    return min(max(p, -max_charge_kw), max_discharge_kw)


# --------------------------------------------------------------------------- forecaster


Forecaster = Callable[..., pd.DataFrame]
"""``forecaster(station, start, n_steps, step_min, weather=None, measured_kw=None)``
returning a DataFrame indexed by step start (UTC) with ``pv_ac_kw`` (P50) [kW] and
optionally ``pv_ac_p10_kw``; :func:`megastation.control.pv_forecast.station_forecast` is the default."""


def default_forecaster() -> Forecaster:
    """The station's PV forecast (:func:`megastation.control.pv_forecast.station_forecast`)."""
    return station_forecast


def _column(df: pd.DataFrame, names: Sequence[str]) -> pd.Series | None:
    for n in names:
        if n in df.columns:
            return df[n]
    return None


def _on_grid(series: pd.Series, times: pd.DatetimeIndex) -> np.ndarray:
    """Values of a step series at each grid step start (the step it falls in)."""
    s = series.sort_index()
    idx = s.index
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    # compare in one unit: indexes may be stored in ns, us or s resolution
    pos = (
        np.searchsorted(
            idx.tz_convert("UTC").as_unit("ns").asi8,
            times.tz_convert("UTC").as_unit("ns").asi8,
            side="right",
        )
        - 1
    )
    vals = np.asarray(s.to_numpy(dtype=float))
    out = np.where(pos >= 0, vals[np.clip(pos, 0, len(vals) - 1)], 0.0)
    return np.nan_to_num(np.maximum(out, 0.0))


# --------------------------------------------------------------------------- controller


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
        guard_interval_s: float | None = 0.5,
        lease_s: float | None = None,
        deadband_kw: float = 1.0,
        expect_arrivals: bool = True,
        record_flows: bool = True,
        flow_sample_s: float = FLOW_SAMPLE_S,
        coarse_after_h: float | None = DEFAULT_COARSE_AFTER_H,
        coarse_step_s: int = DEFAULT_COARSE_STEP_S,
    ) -> None:
        self.station = station  # the station config
        self.store = store  # source of truth (transactions, needs, overrides, sent profiles)
        self.clock = clock  # injected time
        self.gateway = gateway  # reaches the chargers
        self.battery = battery  # None: no battery or not steerable
        self.site_meter = site_meter  # None: import computed from known flows
        self.pv_meter = pv_meter  # None: PV unmeasured (forecast only)
        self.forecaster = forecaster or default_forecaster()
        self.weather = weather  # weather DataFrame for the forecaster, or None = clear sky
        self.guard_interval_s = guard_interval_s  # None disables the polling guard
        site = station.site
        self.interval_s = float(site.dispatch_interval_s)
        self.lease_s = lease_s if lease_s is not None else DEFAULT_LEASE_INTERVALS * self.interval_s
        self.deadband_kw = deadband_kw  # profile changes smaller than this are not re-sent
        # plan grid: fine steps for coarse_after_h hours, then coarse_step_s steps (None: fine)
        self.coarse_after_h = coarse_after_h
        self.coarse_step_s = coarse_step_s
        # plan the cars still to come (history, else the fleet profile) as expected sessions
        self.expect_arrivals = expect_arrivals
        # record the measured energy flows per dispatch step while running (live_flows);
        # False where the caller records them itself (the simulators)
        self.record_flows = record_flows
        self.flow_sample_s = flow_sample_s
        self.flow_recorder: FlowRecorder | None = None
        self._pv_p90_first: float | None = None
        self._expected: ExpectedDemand | None = None
        self._profile_expected: tuple[ExpectedDemand | None] | None = None  # computed once
        self.solve_inline = False  # True: solve on the event loop (socket-free simulator)
        self.cycles = 0  # completed cycles
        self.last: CycleResult | None = None
        self.pv_history: list[tuple[datetime, float]] = []  # measured PV for the nowcast
        self._kind = {c.id: c.kind.lower() for c in station.chargers}
        self._reasons: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._cycle_done = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ev_kw: dict[tuple[str, int], float] = {}  # latest EV power per connector
        self._failsafe_limit_kw: float | None = None  # grid limit the fail-safe was built for
        self._learned: LearnedDefaults | None = None
        self._learned_at: datetime | None = None
        self._battery_fault: str | None = None
        self.guard_trips = 0
        # per transaction: the schedule last sent, and the car's own power limit learned
        self._sent: dict[int, tuple[datetime, KwSchedule]] = {}  # in force on the charger
        self._car_cap_kw: dict[int, tuple[float, datetime]] = {}  # kW, when learned
        self._cap_seen: dict[int, datetime] = {}  # a first sample below the limit
        self._probing: set[int] = set()  # cars offered CAR_PROBE_KW after drawing nothing
        self._car_proven_kw: dict[int, float] = {}  # highest limit the car was seen to follow
        # the last plan (to carry the battery's renewable content to the next one)
        self._last_plan: tuple[datetime, Plan] | None = None
        # the plan the battery follows between plans (follow_balance), its last set point
        self._follow: tuple[datetime, Plan] | None = None
        self._battery_set_kw: float | None = None
        self._balanced_at: datetime | None = None
        self._battery_green_frac: float | None = None
        self._battery_may_export = False  # dispatch.battery_may_export, set every cycle
        self._cycle_failing: bool | None = None  # None: not known (a failure may be stored)
        self.warnings: list[str] = []  # bad stored values the last cycle skipped

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
            self._ev_kw.pop((event.charger_id, event.connector_id or 0), None)
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
            if not self.guard_interval_s and self._follow is not None:
                # no guard loop (demo): the battery follows the balance on meter samples
                now = self.clock.now()
                if (
                    self._balanced_at is None
                    or (now - self._balanced_at).total_seconds() >= BALANCE_INTERVAL_S
                ):
                    self._balanced_at = now
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
                    cr.record_cycle_error(
                        self.store, f"{type(exc).__name__}: {exc}", self.clock.now()
                    )
                    self._cycle_failing = True
                    raise
                if self._cycle_failing is not False:
                    cr.clear_cycle_error(self.store)
                    self._cycle_failing = False
                if "interval" in reasons or self.clock.now() >= next_at:
                    next_at = self.clock.now() + timedelta(seconds=self.interval_s)
                if not self._reasons:
                    self._idle.set()
        finally:
            self._idle.set()
            if guard:
                guard.cancel()
            if flow_task:
                flow_task.cancel()
            if self.flow_recorder is not None:
                try:  # what was measured of the step in progress
                    self.flow_recorder.flush(self.clock.now(), partial=True)
                except Exception as exc:
                    log.warning("energy flows: final step not recorded: %s", exc)
            for t in list(self._tasks):
                t.cancel()

    async def _wait(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def startup(self) -> None:
        """Install (or confirm) fail-safe profiles on connected chargers; learn defaults."""
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
        limit, _ = cr.grid_limit_kw(
            self.store, self.station.site.grid_import_limit_kw, self.clock.now()
        )
        self._failsafe_limit_kw = limit
        try:
            outcomes = await self.gateway.install_failsafe(charger_id, grid_import_limit_kw=limit)
        except Exception as exc:  # a charger vanishing mid-call must not stop the loop
            log.warning("fail-safe for %s failed: %s", charger_id, exc)
            return
        cr.record_setpoints(self.store, None, [_record(o) for o in outcomes], self.clock.now())

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
        batt = await self._read_battery()
        pv_kw = 0.0
        if self.pv_meter is not None:
            try:
                pv_kw = float(await self.pv_meter.read_pv_kw())
            except Exception as exc:
                log.warning("PV meter read failed: %s", exc)
        grid = await self._read_grid()
        self.flow_recorder.observe(
            self.clock.now(),
            Reading(
                pv_kw=pv_kw,
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
                import_kw = await self._measured_import_kw()
            except Exception as exc:  # a faulted meter is logged by its driver, once
                log.debug("guard: site meter read failed: %s", exc)
                continue
            if import_kw is not None and import_kw > self._limit_now() + GUARD_TOLERANCE_KW:
                self._over_limit()
            try:
                await self.follow_balance()
            except Exception as exc:  # a device hiccup must not stop the guard
                log.warning("guard: battery balance failed: %s", exc)

    async def follow_balance(self) -> float | None:
        """Move the battery set point with the site balance around the plan in force
        (:meth:`balance_setpoint_kw`); returns the set point [kW, > 0 discharge] or None
        when there is no plan, battery or reading to follow."""
        if self.battery is None or self._follow is None:
            return None
        batt = await self._read_battery()
        if batt is None or batt.fault:
            return None
        grid_reading = await self._read_grid()
        pv_kw = None
        if grid_reading is None and self.pv_meter is not None:
            try:
                pv_kw = float(await self.pv_meter.read_pv_kw())
            except Exception as exc:  # polled twice a second: a faulted driver logs it once
                log.debug("PV meter read failed: %s", exc)
        kw = self.balance_setpoint_kw(
            self.clock.now(),
            soc_frac=batt.soc_frac,
            pv_kw=pv_kw,
            net_import_kw=None if grid_reading is None else grid_reading.net_import_kw,
            battery_kw=batt.power_kw,
        )
        if kw is None:
            return None
        if self._battery_set_kw is None or abs(kw - self._battery_set_kw) > BALANCE_DEADBAND_KW / 2:
            try:
                await self.battery.set_power_kw(kw)
            except Exception as exc:
                log.warning("battery set point failed: %s", exc)
                return None
            self._battery_set_kw = kw
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
        ``now`` around the plan in force (:func:`follow_balance_kw`); None without one.

        The balance is the metered net import ``net_import_kw`` with the battery at
        ``battery_kw``, or else computed: ``ev_kw`` (default: the latest car samples) +
        base load - ``pv_kw`` (default: the plan's forecast).
        """
        if self._follow is None or self.station.battery is None:
            return None
        made, plan = self._follow
        el = (now - made).total_seconds()
        edges = plan.problem.grid.edges_s
        if el < 0 or el >= edges[-1]:
            return None
        k = int(np.searchsorted(edges, el, side="right") - 1)
        planned = float(plan.battery_discharge_kw[k] - plan.battery_charge_kw[k])
        if net_import_kw is not None:
            import_at_plan = net_import_kw + battery_kw - planned
        else:
            pv = float(plan.problem.pv_kw[k]) if pv_kw is None else pv_kw
            ev_now = sum(self._ev_kw.values()) if ev_kw is None else ev_kw
            import_at_plan = ev_now + self.station.site.base_load_kw - pv - planned
        b = self.station.battery
        plan_soc = float(np.interp(el, edges, plan.soc_frac))
        reserve_ok = soc_frac >= plan_soc - BALANCE_SOC_SLACK_FRAC
        return follow_balance_kw(
            planned_battery_kw=planned,
            planned_import_kw=float(plan.grid_import_kw[k]),
            planned_export_kw=float(plan.grid_export_kw[k]),
            import_at_plan_kw=import_at_plan,
            max_charge_kw=b.max_charge_kw,
            max_discharge_kw=b.max_discharge_kw,
            may_discharge_more=reserve_ok or import_at_plan > self._limit_now(),
            may_export=self._battery_may_export,
        )

    def _over_limit(self) -> None:
        if "over_limit" not in self._reasons:
            self.guard_trips += 1
        self.trigger("over_limit")

    def _limit_now(self) -> float:
        return cr.grid_limit_kw(
            self.store, self.station.site.grid_import_limit_kw, self.clock.now()
        )[0]

    async def _measured_import_kw(self) -> float | None:
        if self.site_meter is None:
            return None
        return (await self.site_meter.read()).net_import_kw

    def _computed_import_kw(self, pv_kw: float = 0.0, battery_kw: float = 0.0) -> float:
        return sum(self._ev_kw.values()) + self.station.site.base_load_kw - pv_kw - battery_kw

    # ----------------------------------------------------------------- one cycle

    async def cycle(self, reason: str = "manual") -> CycleResult:
        """One gather -> forecast -> dispatch -> apply -> record pass."""
        t_wall = time.perf_counter()
        now = self.clock.now()
        site = self.station.site
        self.warnings = []

        # gather
        batt = await self._read_battery()
        pv_now = await self._read_pv()
        grid_reading = await self._read_grid()
        limit_kw, limit_source = cr.grid_limit_kw(self.store, site.grid_import_limit_kw, now)
        policy = cr.policy(self.store, site.policy)
        if self._failsafe_limit_kw is not None and abs(limit_kw - self._failsafe_limit_kw) > 1e-6:
            for ch in self.station.chargers:  # the site limit changed: new fail-safe shares
                if self._connected(ch.id):
                    await self._install_failsafe(ch.id, rebooted=False)
        fs = failsafe_limits_kw(self.station.chargers, limit_kw, site.base_load_kw)
        uncontrollable = cr.uncontrollable_chargers(self.store)
        txs = [t for t in records.open_transactions(self.store) if t.connector_id]
        self.warnings += [f"{v}: not finite, skipped" for t in txs for v in t.bad_values]
        for t in txs:
            if t.power_kw is not None:
                self._ev_kw.setdefault((t.charger_id, t.connector_id), t.power_kw)

        # grid of the plan
        step_s = site.dispatch_step_min * 60
        grid = TimeGrid.aligned(
            now,
            site.horizon_h,
            step_s,
            coarse_after_h=self.coarse_after_h,
            coarse_step_s=self.coarse_step_s,
        )
        times = grid.times
        n = grid.n_steps

        # forecast with nowcast
        pv_kw, pv_p10 = self._forecast(now, grid)
        if self.flow_recorder is not None:
            self.flow_recorder.note_forecast(
                now,
                float(pv_kw[0]),
                None if pv_p10 is None else float(pv_p10[0]),
                self._pv_p90_first,
            )

        # site load: base load, plus load the site meter sees that nothing explains
        batt_kw = batt.power_kw if batt else 0.0
        # a car without a power sample yet is assumed to draw what it was last sent (an
        # uncontrollable one: what it is planned with, below). So is a car whose latest
        # sample predates the limit in force, if that is more: the site meter sees the new
        # power before the car reports it, and the difference counted as unexplained site
        # load counted the car twice (the plan flipped 42 -> 0 -> 42 kW every cycle)
        unsampled_kw = 0.0
        for t in txs:
            sent_kw = self._sent_kw(t.transaction_id, now)
            drew = self._ev_kw.get((t.charger_id, t.connector_id))
            if drew is None:
                unsampled_kw += sent_kw or 0.0
            elif sent_kw is not None and sent_kw > drew and self._sample_predates_limit(t):
                unsampled_kw += sent_kw - drew

        # sessions
        learned = self._learned_defaults(now)
        overrides = read_overrides(self.store)
        sessions: list[SessionNeed] = []
        car_groups: list[PowerGroup] = []
        controlled: dict[str, records.OpenTransaction] = {}
        uncontrolled = np.zeros(n)
        needs_summary = []
        for t in txs:
            ch = self.station.charger(t.charger_id)
            if ch is None:
                continue
            kind = self._kind[t.charger_id]
            cn = records.latest_charging_needs(self.store, t.transaction_id)
            ov = overrides.get(t.transaction_id, (None, None))
            need = estimate_need(
                kind=kind,
                started_at=t.start_time,
                delivered_kwh=t.energy_kwh,
                now=now,
                timezone=site.timezone,
                defaults=self.station.defaults,
                learned=learned,
                needs_departure=cn.departure_time if cn else None,
                needs_energy_kwh=cn.requested_energy_kwh if cn else None,
                soc_frac=t.soc_frac,
                soc_start_frac=self._first_soc(t.transaction_id)
                if t.soc_frac is not None
                else None,
                override_departure=ov[0],
                override_energy_kwh=ov[1],
            )
            max_kw = ch.connector_power_kw
            if cn and cn.max_power_kw:
                max_kw = min(max_kw, cn.max_power_kw)
            max_kw = min(max_kw, self._car_cap(t, now))
            needs_summary.append(
                {
                    "transaction_id": t.transaction_id,
                    "charger_id": t.charger_id,
                    "connector_id": t.connector_id,
                    # the departure known or expected; firm energy is planned by firm_due
                    "departure": (need.extra_departure or need.departure).isoformat(),
                    "firm_due": need.departure.isoformat(),
                    "energy_kwh": round(need.energy_kwh, 3),
                    "extra_energy_kwh": round(need.extra_energy_kwh, 3),
                    "extra_departure": need.extra_departure.isoformat()
                    if need.extra_departure
                    else None,
                    "max_power_kw": round(max_kw, 3),
                    "source": need.source,
                    "controllable": t.charger_id not in uncontrollable,
                }
            )
            if t.charger_id in uncontrollable:
                kw = t.power_kw if t.power_kw is not None else max_kw
                until = (need.extra_departure or need.departure) - grid.start
                # a fine step it is in at all counts whole (conservative for the limit);
                # a coarse step by the share of it before the car leaves
                edges = grid.edges_s
                share = np.clip((until.total_seconds() - edges[:-1]) / np.diff(edges), 0.0, 1.0)
                uncontrolled += kw * np.where(np.diff(edges) > step_s, share, share > 0)
                if (t.charger_id, t.connector_id) not in self._ev_kw:
                    unsampled_kw += kw - (self._sent_kw(t.transaction_id, now) or 0.0)
                continue
            sid = str(t.transaction_id)
            controlled[sid] = t
            # chatter is measured against what the car was last sent (not what it drew:
            # a car below its limit would pull the next plan down, then up again)
            anchor = self._sent_kw(t.transaction_id, now)
            if anchor is None:
                anchor = max(0.0, t.power_kw or 0.0)
            anchor = min(anchor, max_kw)
            arrival = min(t.start_time, grid.start)
            firm_kw = max_kw
            if kind == "dc" and need.extra_energy_kwh > 1e-3 and not (cn and cn.max_power_kw):
                proven = max(UNPROVEN_DC_KW, self._car_proven_kw.get(t.transaction_id, 0.0))
                firm_kw = min(max_kw, proven)
            sessions.append(
                SessionNeed(
                    session_id=sid,
                    charger_id=t.charger_id,
                    connector_id=int(t.connector_id),
                    arrival=arrival,
                    departure=need.departure,
                    energy_kwh=need.energy_kwh,
                    max_power_kw=firm_kw,
                    current_power_kw=min(anchor, firm_kw),
                )
            )
            extra_kwh = need.extra_energy_kwh
            if extra_kwh > 1e-3 and need.extra_departure is not None:
                sessions.append(
                    SessionNeed(
                        session_id=sid + EXTRA_SUFFIX,
                        charger_id=t.charger_id,
                        connector_id=int(t.connector_id),
                        arrival=arrival,
                        departure=need.extra_departure,
                        energy_kwh=extra_kwh,
                        max_power_kw=max_kw,
                        priority=EXTRA_PRIORITY,
                        stay_median_s=need.stay_median_s,
                        stay_sigma=need.stay_sigma,
                    )
                )
                # firm and extra share the connector
                car_groups.append(
                    PowerGroup(f"car:{sid}", ((t.charger_id, int(t.connector_id)),), max_kw)
                )

        computed = self._computed_import_kw(pv_now or 0.0, batt_kw) + unsampled_kw
        unexplained_kw = 0.0
        if grid_reading is not None:
            unexplained_kw = max(0.0, grid_reading.net_import_kw - computed)
        load = np.full(n, site.base_load_kw)
        hour = grid.edges_s[:-1] < 3600
        load[hour] += unexplained_kw

        pol = Policy.of(policy)
        pol = dataclasses.replace(
            pol,
            chatter_weight_per_kw=max(pol.chatter_weight_per_kw, CHATTER_WEIGHT_PER_KW),
            early_weight_per_kwh=max(pol.early_weight_per_kwh, EARLY_WEIGHT_PER_KWH),
        )
        # cars still to come, as aggregate expected sessions (never in the first step)
        expected_kwh = 0.0
        demand = self._expected_demand(now) if self.expect_arrivals else None
        if demand is not None:
            edges_utc = [grid.start + timedelta(seconds=float(x)) for x in grid.edges_s]
            for sid, _k, arr, dep, kwh, kw, prio in expected_sessions(
                demand, edges_utc, site.timezone, share=pol.expected_share
            ):
                sessions.append(SessionNeed(sid, sid, 0, arr, dep, kwh, kw, priority=prio))
                expected_kwh += kwh

        # problem
        soc = None
        if batt is not None and self.station.battery is not None:
            b = self.station.battery
            soc = min(max(batt.soc_frac, b.soc_min_frac), b.soc_max_frac)
        battery_state = (
            station_battery(self.station, soc, self._battery_renewable_frac(now))
            if (batt is not None and not batt.fault)
            else None
        )
        gs = station_grid_state(self.station, grid, peak_so_far_kw=self._peak_so_far(now))
        self._battery_may_export = battery_may_export(pol, gs)
        gs = type(gs)(**{**gs.__dict__, "import_limit_kw": limit_kw})
        problem = Problem(
            grid=grid,
            pv_kw=pv_kw,
            site_load_kw=load,
            grid_state=gs,
            sessions=tuple(sessions),
            battery=battery_state,
            groups=station_groups(self.station) + tuple(car_groups),
            pv_p10_kw=pv_p10,
            uncontrolled_kw=uncontrolled if uncontrolled.any() else None,
            policy=pol,
        )
        # a worker thread keeps a live event loop responsive; the simulator solves inline
        if self.solve_inline:
            plan = solve(problem)
        else:
            # an accelerated clock (the demo) stands still while the plan is solved, as a
            # solve of tens of milliseconds takes no station time worth counting at 1x
            hold = getattr(self.clock, "hold", None)
            with hold() if hold is not None else contextlib.nullcontext():
                plan = await asyncio.to_thread(solve, problem)
        self._last_plan = (now, plan)
        first = plan.first_step()
        # per transaction: firm + extra
        tx_kw: dict[str, np.ndarray] = {}
        tx_avg: dict[str, np.ndarray] = {}  # the plan's step averages
        tx_first: dict[str, float] = {}
        tx_delivered: dict[str, float] = {}
        tx_unmet: dict[str, float] = {}
        edges = grid.edges_s
        for i, pid in enumerate(plan.session_ids):
            if pid.startswith(EXPECTED_PREFIX):
                continue
            sid = pid.removesuffix(EXTRA_SUFFIX)
            # the plan's powers are step averages; a car that leaves within a step gets
            # the power while it is there (average / share of the step plugged in)
            dep_s = (problem.sessions[i].departure - grid.start).total_seconds()
            share = np.clip((dep_s - edges[:-1]) / np.diff(edges), 0.0, 1.0)
            kw = np.divide(plan.session_kw[i], share, out=np.zeros(n), where=share > 1e-6)
            kw = np.minimum(kw, problem.sessions[i].max_power_kw)
            tx_kw[sid] = tx_kw.get(sid, 0.0) + kw
            tx_avg[sid] = tx_avg.get(sid, 0.0) + plan.session_kw[i]
            tx_first[sid] = tx_first.get(sid, 0.0) + float(
                min(first.session_kw[pid] / share[0], problem.sessions[i].max_power_kw)
                if share[0] > 1e-6
                else 0.0
            )
            tx_delivered[sid] = tx_delivered.get(sid, 0.0) + float(plan.delivered_kwh[i])
            if not pid.endswith(EXTRA_SUFFIX):
                tx_unmet[sid] = float(plan.unmet_kwh[i])  # firm energy the plan misses

        # a car that stays longer than planned would draw the raised power for the whole
        # step: raise only as far as the grid headroom of the step allows
        if tx_kw:
            raise_kw = sum(np.maximum(tx_kw[k] - tx_avg[k], 0.0) for k in tx_kw)
            first_raise = sum(
                max(tx_first[k] - float(first.session_kw.get(k, 0.0) + first.session_kw.get(
                    k + EXTRA_SUFFIX, 0.0)), 0.0)
                for k in tx_first
            )  # fmt: skip
            room = np.maximum(np.asarray(limit_kw, dtype=float) - plan.grid_import_kw, 0.0)
            f = np.divide(room, raise_kw, out=np.ones(n), where=raise_kw > room)
            f0 = min(1.0, float(room[0]) / first_raise) if first_raise > room[0] else 1.0
            for k in tx_kw:
                tx_kw[k] = tx_avg[k] + np.maximum(tx_kw[k] - tx_avg[k], 0.0) * f
                base0 = float(tx_avg[k][0])
                tx_first[k] = base0 + max(tx_first[k] - base0, 0.0) * f0

        # apply
        lease_end = now + timedelta(seconds=self.lease_s)
        force = "over_limit" in reason
        setpoints = []
        starts = tuple(times.to_pydatetime())  # once per cycle, not per car
        for sid, t in controlled.items():
            cap_kw = self.station.charger(t.charger_id).connector_power_kw
            limits = np.minimum(np.array(tx_kw[sid], dtype=float), cap_kw)
            limits[0] = tx_first[sid] = min(tx_first[sid], cap_kw)
            sched = KwSchedule(starts, tuple(limits.tolist()), grid.end)
            sched = sched.capped_after(lease_end, fs[t.charger_id].connector_kw)
            setpoints.append(
                ConnectorSetpoint(
                    charger_id=t.charger_id,
                    connector_id=int(t.connector_id),
                    transaction_id=t.transaction_id,
                    ocpp_tx_id=self._ocpp_tx_id(t.transaction_id),
                    schedule=sched,
                    power_kw=tx_first[sid],
                    force=force,
                    lease_end=lease_end,
                )
            )
        open_ids = {t.transaction_id for t in txs}
        for d in (self._sent, self._car_cap_kw, self._car_proven_kw, self._cap_seen):
            for k in [k for k in d if k not in open_ids]:
                del d[k]
        try:
            outcomes = await self.gateway.apply(setpoints)
        except Exception as exc:
            log.exception("applying set points failed")
            outcomes = [
                ApplyOutcome(s.charger_id, s.connector_id, "tx", "error", s.power_kw,
                             s.transaction_id, detail=str(exc))
                for s in setpoints
            ]  # fmt: skip
        battery_kw = first.battery_setpoint_kw  # device convention: + discharge
        battery_outcome: tuple[str, str | None] | None = None  # (status, detail)
        if self.battery is not None and battery_state is not None:
            try:
                await self.battery.set_power_kw(battery_kw)
                self._battery_set_kw = battery_kw
                self._follow = (now, plan)
                battery_outcome = ("accepted", None)
            except Exception as exc:
                log.warning("battery set point failed: %s", exc)
                battery_outcome = ("error", f"{type(exc).__name__}: {exc}")
        else:
            self._follow = None
        rejected = {o.charger_id for o in outcomes if o.status == "uncontrollable"}
        by_tx = {sp.transaction_id: sp for sp in setpoints}
        for o in outcomes:  # what each charger follows now (deadband: the older profile)
            if o.transaction_id is None or o.target != "tx":
                continue
            if o.status == "accepted" and o.transaction_id in by_tx:
                self._sent[o.transaction_id] = (now, by_tx[o.transaction_id].schedule)
            elif o.status != "deadband":
                self._sent.pop(o.transaction_id, None)

        # record
        solve_s = plan.build_time_s + plan.solve_time_s
        first_step = {
            "session_kw": tx_first,
            "battery_kw": battery_kw,  # > 0 discharge (device convention)
            "grid_import_kw": first.grid_import_kw,
            "grid_export_kw": first.grid_export_kw,
            "pv_kw": float(pv_kw[0]),
            "ev_kw": float(sum(tx_first.values())),
            "uncontrolled_kw": float(uncontrolled[0]),
            "curtailed_kw": first.curtailed_kw,
        }
        horizon = {
            "times": [ts.isoformat() for ts in times],
            "pv_kw": _r(pv_kw),
            "grid_import_kw": _r(plan.grid_import_kw),
            "battery_kw": _r(plan.battery_discharge_kw - plan.battery_charge_kw),
            "soc_frac": _r(plan.soc_frac, 4),
            "ev_kw": _r(plan.ev_kw),
            "session_kw": {sid: _r(v) for sid, v in tx_kw.items()},
            "delivered_kwh": {sid: round(v, 3) for sid, v in tx_delivered.items()},
            "unmet_kwh": {sid: round(v, 3) for sid, v in tx_unmet.items()},
        }
        inputs = {
            "grid_limit_source": limit_source,
            "sessions": needs_summary,
            "battery": None
            if batt is None
            else {"soc_frac": batt.soc_frac, "power_kw": batt.power_kw, "fault": batt.fault},
            "pv_now_kw": pv_now,
            "grid_import_measured_kw": None if grid_reading is None else grid_reading.net_import_kw,
            "unexplained_load_kw": unexplained_kw,
            "uncontrollable": sorted(set(uncontrollable) | rejected),
            "expected_kwh": round(expected_kwh, 3),
            "n_steps": n,
            "warnings": self.warnings,  # bad stored values skipped
        }
        cycle_s = time.perf_counter() - t_wall
        plan_id = cr.record_plan(
            self.store,
            created_at=now,
            reason=reason,
            policy=policy,
            grid_limit_kw=limit_kw,
            status=plan.status,
            solve_ms=solve_s * 1000,
            cycle_ms=cycle_s * 1000,
            grid_import_kw=grid_reading.net_import_kw if grid_reading else computed,
            pv_kw=pv_now,
            battery_soc_frac=batt.soc_frac if batt and not batt.fault else None,
            battery_kw=batt.power_kw if batt else None,
            inputs=inputs,
            first_step=first_step,
            horizon=horizon,
        )
        cr.record_setpoints(self.store, plan_id, [_record(o) for o in outcomes], now)
        if battery_outcome is not None:
            status, detail = battery_outcome
            cr.record_setpoints(
                self.store,
                plan_id,
                [cr.SetpointRecord(None, None, None, "battery", battery_kw, None, status, detail)],
                now,
            )
        self.cycles += 1
        self.last = CycleResult(
            plan_id, reason, plan.status, cycle_s, solve_s, len(controlled), outcomes
        )
        if rejected:
            self.trigger("uncontrollable")  # re-plan with them as uncontrolled load
        return self.last

    # ----------------------------------------------------------------- helpers

    async def _read_battery(self) -> BatteryReading | None:
        if self.battery is None:
            return None
        try:
            r = await self.battery.read()
        except Exception as exc:
            log.warning("battery read failed: %s", exc)
            return None
        if r.fault and r.fault != self._battery_fault:
            self.trigger("battery_fault")
        self._battery_fault = r.fault
        return r

    async def _read_pv(self) -> float | None:
        if self.pv_meter is None:
            return None
        try:
            kw = float(await self.pv_meter.read_pv_kw())
        except Exception as exc:
            log.warning("PV meter read failed: %s", exc)
            return None
        self.pv_history.append((self.clock.now(), kw))
        cutoff = self.clock.now() - timedelta(hours=6)
        while self.pv_history and self.pv_history[0][0] < cutoff:
            self.pv_history.pop(0)
        return kw

    async def _read_grid(self) -> GridReading | None:
        if self.site_meter is None:
            return None
        try:
            return await self.site_meter.read()
        except Exception as exc:  # polled twice a second: a faulted meter's driver logs it once
            log.debug("site meter read failed: %s", exc)
            return None

    def _forecast(self, now: datetime, grid: TimeGrid) -> tuple[np.ndarray, np.ndarray | None]:
        step_min = self.station.site.dispatch_step_min
        self._pv_p90_first = None
        start = pd.Timestamp(grid.start)  # the forecaster floors it to its step
        fine = grid.fine()  # a coarse step gets the mean of its fine steps' forecast
        n_steps = fine.n_steps + 1
        measured = None
        if self.pv_history:
            measured = pd.Series(
                [kw for _, kw in self.pv_history],
                index=pd.DatetimeIndex([t for t, _ in self.pv_history]),
                name="pv_kw",
            )
        try:
            df = self.forecaster(
                self.station, start, n_steps, step_min, weather=self.weather, measured_kw=measured
            )
        except Exception as exc:
            log.warning("PV forecast failed (%s): planning with zero PV", exc)
            return np.zeros(grid.n_steps), None
        p50 = _column(df, ("pv_ac_kw", "p50", "p50_kw", "pv_kw"))
        p10 = _column(df, ("pv_ac_p10_kw", "p10", "p10_kw"))
        p90 = _column(df, ("pv_ac_p90_kw", "p90", "p90_kw"))
        times = fine.times
        self._pv_p90_first = float(_on_grid(p90, times)[0]) if p90 is not None else None
        pv = grid.mean_of_fine(_on_grid(p50, times)) if p50 is not None else np.zeros(grid.n_steps)
        return pv, (grid.mean_of_fine(_on_grid(p10, times)) if p10 is not None else None)

    def _learned_defaults(self, now: datetime) -> LearnedDefaults | None:
        if self._learned_at is None or now - self._learned_at > timedelta(hours=1):
            self._learned = learn_defaults_from_store(
                self.store, self._kind, self.station.site.timezone
            )
            self._expected = None
            self._learned_at = now
        return self._learned

    def _expected_demand(self, now: datetime) -> ExpectedDemand | None:
        """Cars still to come (re-learned with the defaults, hourly)."""
        if self._expected is None:
            self._expected = history.expected_demand_for_station(
                self.store, self.station, now, fallback=self._profile_demand
            )
        return self._expected

    def _profile_demand(self) -> ExpectedDemand | None:
        """The fleet profile's expected cars (simulated once: ~0.1 s), until history replaces it."""
        if self._profile_expected is None:
            self._profile_expected = (profile_demand(self.station),)
        return self._profile_expected[0]

    def _sent_kw(self, transaction_id: int, now: datetime) -> float | None:
        """The limit [kW] last sent to a session, in force just before ``now``."""
        got = self._sent.get(transaction_id)
        if got is None:
            return None
        sched = got[1]
        kw = sched.value_at(now - timedelta(microseconds=1))
        return kw if kw is not None else sched.value_at(now)

    def _sample_predates_limit(self, t: records.OpenTransaction) -> bool:
        """True if the car's latest power sample may predate the limit in force."""
        sent = self._sent.get(t.transaction_id)
        if sent is None:
            return False
        row = self.store.conn.execute(
            "SELECT MAX(ts) FROM meter_samples WHERE transaction_id = ? AND measurand = ?",
            (t.transaction_id, records.POWER_IMPORT),
        ).fetchone()
        if row is None or row[0] is None:
            return True
        return (parse_iso(row[0]) - sent[0]).total_seconds() < CAR_CAP_SETTLE_S

    def _car_cap(self, t: records.OpenTransaction, now: datetime) -> float:
        """The car's own power limit [kW] as far as it is known (inf: not known).

        A car that drew clearly less than the limit in force limits itself (its maximum,
        or the taper near full): it is planned with what it drew, so the plan does not
        count on power the car will not take. The cap is dropped when the car draws
        more than it; a cap of about nothing (a full car, or one that had not yet followed
        its limit) is dropped after :data:`CAR_CAP_TTL_S`, so no car is locked out.
        """
        tid = t.transaction_id
        cap, learned_at = self._car_cap_kw.get(tid, (math.inf, now))
        if cap < CAR_CAP_MIN_SENT_KW and (now - learned_at).total_seconds() > CAR_CAP_TTL_S:
            cap, learned_at = CAR_PROBE_KW, now  # drew nothing: offer a little power again
            self._probing.add(tid)
        sent = self._sent.get(tid)
        drew = t.power_kw
        if sent is None or drew is None:
            return cap
        row = self.store.conn.execute(
            "SELECT MAX(ts) FROM meter_samples WHERE transaction_id = ? AND measurand = ?",
            (tid, records.POWER_IMPORT),
        ).fetchone()
        if row is None or row[0] is None:
            return cap
        sample_at = parse_iso(row[0])
        if (sample_at - sent[0]).total_seconds() < CAR_CAP_SETTLE_S:
            return cap  # the sample may predate the limit
        limit = self._sent_kw(tid, sample_at)
        if limit is None:
            return cap
        tol = max(CAR_CAP_TOLERANCE_KW, CAR_CAP_TOLERANCE_FRAC * limit)
        took_probe = tid in self._probing and limit >= CAR_CAP_MIN_SENT_KW and drew >= limit - tol
        if drew > cap or took_probe:
            cap = math.inf  # it takes more than it did (or took the probe): no cap
            self._probing.discard(tid)
        if limit >= CAR_CAP_MIN_SENT_KW and drew < limit - tol:
            # only from a second such sample in a row (a single one may predate the limit)
            prev = self._cap_seen.get(tid)
            self._cap_seen[tid] = sample_at
            if prev is not None and prev < sample_at:
                if drew < cap:
                    learned_at = sample_at
                cap = drew
                self._probing.discard(tid)  # did not take the probe either
        else:
            self._cap_seen.pop(tid, None)
        if drew >= limit - tol:
            self._car_proven_kw[tid] = max(self._car_proven_kw.get(tid, 0.0), drew)
        if not LEARN_CAR_LIMITS:
            return math.inf
        if math.isfinite(cap):
            self._car_cap_kw[tid] = (cap, learned_at)
        else:
            self._car_cap_kw.pop(tid, None)
        return cap

    def _battery_renewable_frac(self, now: datetime) -> float:
        """Share of the stored energy that came from PV, carried from plan to plan.

        The last plan's renewable content at the time elapsed since it was made (linear
        within its steps), divided by its stored energy then; kept in the store so a
        restarted loop resumes it. 0 when nothing is known.
        """
        frac = self._battery_green_frac
        if frac is None:
            got = self.store.get_setting(BATTERY_GREEN_KEY)
            frac = float(got) if got is not None else 0.0
        if self._last_plan is not None and self.station.battery is not None:
            made, plan = self._last_plan
            el = (now - made).total_seconds()
            edges = plan.problem.grid.edges_s
            if el > 0 and plan.battery_renewable_kwh.size == edges.size:
                green = float(np.interp(el, edges, plan.battery_renewable_kwh))
                stored = float(np.interp(el, edges, plan.soc_frac)) * (
                    self.station.battery.capacity_kwh
                )
                frac = min(1.0, max(0.0, green / stored)) if stored > 1e-6 else 0.0
        if frac != self._battery_green_frac:
            self._battery_green_frac = frac
            self.store.set_setting(BATTERY_GREEN_KEY, round(frac, 6))
        return frac

    def _first_soc(self, transaction_id: int) -> float | None:
        row = self.store.conn.execute(
            "SELECT value FROM meter_samples WHERE transaction_id = ? AND measurand = 'SoC' "
            f"AND {records.FINITE_VALUE} ORDER BY ts LIMIT 1",
            (transaction_id,),
        ).fetchone()
        return row[0] / 100.0 if row else None

    def _ocpp_tx_id(self, transaction_id: int) -> str:
        tx = records.get_transaction(self.store, transaction_id)
        return str(tx["ocpp_tx_id"]) if tx else str(transaction_id)

    def _peak_so_far(self, now: datetime) -> float:
        """This billing month's demand peak [kW]: the highest 15-minute mean import
        metered in a window that has ended (recorded energy flows), else the highest
        first-step import planned. (The window in progress is not counted: its mean so
        far over the whole window would understate it.)"""
        month = now.astimezone(self.station.site.tz).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        w = DEMAND_WINDOW_S
        current = int(now.timestamp()) // w * w  # start of the window in progress
        span = (iso(month), iso(datetime.fromtimestamp(current, UTC)))
        finite = "grid_import_kw BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"
        # a store written before values were checked at the edge may hold Inf: skip it
        bad = self.store.conn.execute(
            f"SELECT COUNT(*) FROM energy_flows WHERE ts >= ? AND ts < ? AND NOT ({finite})",
            span,
        ).fetchone()[0]
        if bad:
            self.warnings.append(
                f"energy_flows: {bad} step(s) this month with a non-finite grid_import_kw "
                "skipped in the demand peak"
            )
        metered = self.store.conn.execute(
            "SELECT MAX(kw) FROM (SELECT SUM(grid_import_kw * step_s) / ? AS kw "
            f"FROM energy_flows WHERE ts >= ? AND ts < ? AND {finite} "
            "GROUP BY CAST(strftime('%s', ts) AS INTEGER) / ?)",
            (w, *span, w),
        ).fetchone()[0]
        if metered is not None and math.isfinite(metered):
            return max(0.0, float(metered))
        row = self.store.conn.execute(
            f"SELECT MAX(grid_import_kw) FROM control_plans WHERE created_at >= ? AND {finite}",
            (iso(month),),
        ).fetchone()
        return float(row[0]) if row and row[0] is not None and row[0] > 0 else 0.0


def _r(a: Any, nd: int = 3) -> list[float]:
    return np.round(np.asarray(a, dtype=float).ravel(), nd).tolist()


def _record(o: ApplyOutcome) -> cr.SetpointRecord:
    return cr.SetpointRecord(
        o.charger_id, o.connector_id, o.transaction_id, o.target, o.power_kw, o.payload, o.status,
        o.detail,
    )  # fmt: skip


# --------------------------------------------------------------------------- supervisor


class ControlSupervisor:
    """Runs a controller and restarts it with backoff when it crashes.

    ``make`` builds a fresh :class:`Controller` (which resumes from the store). Events
    go to whichever controller is running; the OCPP server is never affected.
    """

    def __init__(
        self,
        make: Callable[[], Controller],
        clock: Clock,
        *,
        backoff_s: Sequence[float] = (1, 2, 5, 10, 30),
    ) -> None:
        self.make = make
        self.clock = clock
        self.backoff_s = tuple(backoff_s)
        self.controller: Controller | None = None
        self.restarts = 0
        self.errors: list[str] = []

    def notify(self, event: ev.Event) -> None:
        if self.controller is not None:
            self.controller.notify(event)

    async def run(self) -> None:
        failures = 0
        while True:
            self.controller = self.make()
            started = self.clock.now()
            try:
                await self.controller.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("control loop crashed; restarting")
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if (self.clock.now() - started).total_seconds() > 600:
                    failures = 0
                delay = self.backoff_s[min(failures, len(self.backoff_s) - 1)]
                failures += 1
                self.restarts += 1
                await self.clock.sleep(delay)


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
    "ControlSupervisor",
    "Controller",
    "CycleResult",
    "Forecaster",
    "controller_from_station",
    "default_forecaster",
]
