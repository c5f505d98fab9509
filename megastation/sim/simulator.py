"""Socket-free simulation of a whole station: site, cars, battery and a charging policy.

:func:`simulate` steps the station on simulated time (``step_s``, default 60 s) from
``start`` for ``days`` (or ``hours``) and records what happened into a fresh store:
energy flows per dispatch step (:mod:`megastation.store.flows`), connector power per step,
one stored transaction per car (so the session exports work on a simulated store as
on a live one) and the per-session outcome (``sim_sessions``).

What is simulated, and from where:

- **PV actuals**: a weather file (``seeds/weather/*.csv`` or any CSV
  :func:`forecasts.weather.read_csv` reads) through the pvlib PV model
  (:func:`forecasts.pvmodel.pv_power`). A period outside the file is covered by
  repeating its days, each day's clear-sky index moved onto the target date's sun.
- **The forecast the policy sees**: :func:`megastation.sim.site.degrade_weather` of
  the actual weather (bias and AR(1) noise), then :func:`forecasts.forecast.forecast_pv`
  with the nowcast from the PV measured so far, P10/P90 bands.
- **Other site load**: :func:`megastation.sim.site.site_load_kw` (known to the policy).
- **Cars**: :func:`megastation.core.fleet.generate_visits`; each car's charge is
  :class:`megastation.sim.car.ConnectorSim` (its own limit, taper near full, AC 6 A
  minimum, stops at the energy its driver wanted), the same physics the OCPP charge
  points of the demo use. Charger and cabinet limits always hold (hardware).
- **Battery**: :class:`megastation.core.devices.SimulatedBattery` on a :class:`SimClock`.

Policies (:data:`POLICIES`):

- ``re100`` / ``cost``: a receding-horizon controller: every ``plan_interval_s`` (and
  when a car arrives) the dispatch LP (:func:`megastation.dispatch.solve`) is solved
  over the site horizon with the forecast and each car's estimated need
  (:func:`megastation.control.needs.estimate_need`: ChargingNeeds for ISO 15118 cars on 2.0.1
  chargers, the SoC for DC cars, station defaults otherwise); the first step's car
  limits and battery set point are applied. Between plans the battery absorbs the PV
  forecast error (grid held at the plan), and an over-limit guard discharges the
  battery, then cuts car power, whenever import would exceed the limit.
- ``uncontrolled``: every car at full power on arrival, no guard; the battery in the
  self-consumption mode a hybrid inverter ships with: it stores the PV surplus and
  discharges to cover any import, down to its reserve (``soc_min_frac``).
- ``uncontrolled-idle``: the same cars, battery idle (the baseline before #11).
- ``greedy``: PV-surplus charging in the style of evcc's *Min+PV* mode, the rule of
  :func:`megastation.evaluation.baselines.greedy_power_kw`: every car is held at a
  minimum power (1.4 kW, DC 10 % of its connector), the PV surplus is shared equally, a
  car that can only just finish by its departure gets full power; the battery stores
  the surplus cars do not take and covers deficits, and the grid limit is guarded.

Results: :class:`SimulationResult` with :class:`Kpis` (energy delivered and unmet,
renewable share by :func:`megastation.core.accounting.allocate`, grid import, peak against
the limit, cost) and, from :func:`perfect_foresight`, the same KPIs of the
perfect-foresight optimum of the period (the LP over the whole period with actual PV
and every car's true arrival, departure and energy known).

Costs: energy at the time-of-use price plus the demand charge on the period's peak
import, pro rata (``demand_charge_krw_per_kw_month x peak_kw x days / 30``), so
periods of different length compare.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from forecasts import nowcast as _nowcast
from forecasts.forecast import assemble, assemble_columns, forecast_pv
from forecasts.pvmodel import (
    inverter_limits_kw,
    pv_power,
    pv_power_array,
    solar_geometry,
)
from forecasts.weather import clear_sky_weather, read_csv, resample_weather
from megastation import dispatch
from megastation.control.controller import (
    DEFAULT_LEASE_INTERVALS,
    GUARD_TOLERANCE_KW,
    Controller,
)
from megastation.control.pv import ForecastArrays, frame_arrays, measured_arrays, measured_series
from megastation.control.solve import Solver
from megastation.core import accounting
from megastation.core.clock import SimClock, utc
from megastation.core.config import Station
from megastation.core.devices import SimulatedBattery, SimulatedPVMeter
from megastation.core.fleet import CarVisit, generate_visits
from megastation.core.stepmean import StepMean
from megastation.core.tariff import Tariff
from megastation.evaluation.baselines import greedy_floor_kw, greedy_power_kw
from megastation.evaluation.baselines import perfect_foresight as pf_outcome
from megastation.evaluation.scenario import Scenario
from megastation.sim.car import ConnectorSim
from megastation.sim.gateway import DirectGateway
from megastation.sim.options import POLICIES, SimulationError, weather_path
from megastation.sim.site import degrade_weather, site_load_kw
from megastation.store import Store, flows, iso, records
from megastation.store import control as cr

DAYS_PER_BILLING_MONTH = 30.0
# Resolution of the site inputs (weather, PV actuals, base load) and of the PV forecast
# the simulated controller sees: the weather files' 15-minute grid, not a setting.
SITE_STEP_S = 900
SITE_STEP = pd.Timedelta(seconds=SITE_STEP_S)
SITE_STEPS_PER_DAY = 86400 // SITE_STEP_S
# A weather file's clear-sky index (GHI / clear-sky GHI), moved onto another date's sun,
# is taken where the clear-sky GHI exceeds this (not at dawn and dusk) and clipped at the
# maximum (cloud-edge enhancement).
MIN_CLEAR_GHI_W_M2 = 20.0
MAX_CLEAR_SKY_INDEX = 1.2
# Float slack [kW]: a step counts as over the grid limit beyond it; a power group over
# its cap beyond it is scaled down; a car's limit gets it so rounding never cuts it.
OVER_LIMIT_TOL_KW = 1e-6
LIMIT_SLACK_KW = 1e-9
# The simulated controller re-learns expected cars and session defaults from history
# daily, not hourly as live: a relearn reads up to 20,000 sessions (~0.1 s with 300 days
# of history before #15's one indexed read, ~0.06 s after), and 14 days with 200 days of
# history moved every KPI by < 0.01 % (re100, seed 1, mixed-week; README, "Simulate and
# analyse") while saving 1.9 s CPU per day.
SIM_RELEARN_INTERVAL = timedelta(days=1)
# Which departures trigger a plan: "drawing" (a car that leaves while it draws power:
# its share is free for the others now; one that draws nothing frees nothing a plan can
# use before the next 15-minute plan), "always" (before #15), "never".
DEPARTURE_REPLANS = ("drawing", "always", "never")


def departure_replans(value: bool | str) -> str:
    """``replan_on_departure`` as one of :data:`DEPARTURE_REPLANS` (True: "drawing",
    False: "never")."""
    if value is True or value is False:
        return "drawing" if value else "never"
    if value not in DEPARTURE_REPLANS:
        raise SimulationError(
            f"replan_on_departure: must be True, False or one of {', '.join(DEPARTURE_REPLANS)};"
            f" got {value!r}"
        )
    return value


# --------------------------------------------------------------------------- inputs


def read_weather(weather: str | Path) -> pd.DataFrame:
    """The canonical weather frame of a seed name or a weather CSV."""

    return read_csv(weather_path(weather))


def weather_start(weather: pd.DataFrame, tz: str) -> datetime:
    """Local midnight of the weather's first full day, as UTC."""
    first = weather.index[0].tz_convert(tz)
    day = first.normalize()
    if first != day:
        day = day + pd.Timedelta(days=1)
    return day.tz_convert("UTC").to_pydatetime()


def cover_weather(station: Station, weather: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Weather on ``index`` (15-min UTC starts); days outside the file are repeated.

    Inside the file's span the rows are taken as they are. Outside, target day ``d``
    takes source day ``d mod n_days`` (days counted from the file's first local
    midnight); GHI is moved by its clear-sky index (``ghi = k x ghi_clear(target)``) so
    the sun's path is the target date's; cloud cover, temperature and wind are copied.
    """

    tz = station.site.timezone
    step = SITE_STEP
    w0 = pd.Timestamp(weather_start(weather, tz))
    n_days = max(1, int((weather.index[-1] + step - w0) // pd.Timedelta(days=1)))
    src_index = pd.date_range(w0, periods=n_days * SITE_STEPS_PER_DAY, freq=step)
    src = resample_weather(weather, src_index)
    if index[0] >= src_index[0] and index[-1] <= src_index[-1]:
        return src.loc[index[0] : index[-1]].copy()
    day_no = ((index - w0) // pd.Timedelta(days=1)).to_numpy()
    pos = ((index - w0) % pd.Timedelta(days=1)) // step
    rows = (np.mod(day_no, n_days) * SITE_STEPS_PER_DAY + np.asarray(pos)).astype(int)
    out = pd.DataFrame(src.to_numpy(float)[rows], index=index, columns=src.columns)
    if "ghi" in src:
        geo_src = solar_geometry(station.pv_site(), src_index, step)
        geo_dst = solar_geometry(station.pv_site(), index, step)
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.where(
                geo_src.ghi_clear > MIN_CLEAR_GHI_W_M2,
                src["ghi"].to_numpy(float) / geo_src.ghi_clear,
                np.nan,
            )
        k = pd.Series(k).ffill().bfill().fillna(1.0).clip(0.0, MAX_CLEAR_SKY_INDEX).to_numpy()
        out["ghi"] = np.where(geo_dst.day, k[rows] * geo_dst.ghi_clear, 0.0)
    return out


@dataclass(frozen=True)
class SiteInputs:
    """Everything about the site the simulation needs, per 15-minute step (UTC)."""

    index: pd.DatetimeIndex  # steps covering the period plus one horizon
    weather: pd.DataFrame  # actual weather on ``index``
    forecast_weather: pd.DataFrame  # degraded copy the policy forecasts from
    pv_actual_kw: np.ndarray  # AC, per step
    base_load_kw: np.ndarray  # other site load, per step


def prepare_site(
    station: Station,
    start: datetime,
    end: datetime,
    weather: pd.DataFrame | str | Path,
    seed: int,
) -> SiteInputs:
    """PV actuals, forecast weather and site load for ``[start, end)`` plus one horizon."""

    if not isinstance(weather, pd.DataFrame):
        weather = read_weather(weather)
    step = SITE_STEP
    t0 = pd.Timestamp(start).floor(step)
    t1 = pd.Timestamp(end) + pd.Timedelta(hours=station.site.horizon_h + 1)
    index = pd.date_range(t0, t1, freq=step, inclusive="left")
    actual = cover_weather(station, weather, index)
    fc_weather = degrade_weather(actual, seed + 1)
    pvs = station.pv_site()
    pv = pv_power(pvs, pvs.arrays, actual, step=step)["pv_ac_kw"].to_numpy()
    load = site_load_kw(
        index,
        station.site.base_load_kw,
        seed + 2,
        temp_air=actual["temp_air"].to_numpy() if "temp_air" in actual else None,
        tz=station.site.timezone,
    ).to_numpy()
    return SiteInputs(index, actual, fc_weather, pv, load)


# --------------------------------------------------------------------------- cars


@dataclass
class _Car:
    sim: ConnectorSim  # the car's physics (megastation.sim.car)
    key: str  # stable session key
    kind: str  # AC / DC
    sends_needs: bool  # ChargingNeeds reach the controller (2.0.1 charger and ISO 15118 car)
    transaction_id: int | None = None
    limit_kw: float = math.inf  # the policy's limit

    @property
    def visit(self) -> CarVisit:
        return self.sim.visit

    @property
    def connector_kw(self) -> float:
        return self.sim.connector_max_kw

    @property
    def delivered_kwh(self) -> float:
        return self.sim.energy_kwh

    @property
    def soc_frac(self) -> float:
        return self.sim.soc_frac

    @property
    def power_kw(self) -> float:
        return self.sim.power_kw

    @property
    def wanted_left_kwh(self) -> float:
        return self.sim.energy_remaining_kwh

    def accept_kw(self) -> float:
        return self.sim.max_power_kw()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Kpis:
    """Summary of a run (or of the perfect-foresight optimum) over one period."""

    energy_delivered_kwh: float
    energy_wanted_kwh: float
    unmet_kwh: float
    renewable_frac: float  # share of EV energy that was renewable (accounting.allocate)
    pv_kwh: float  # PV used (after curtailment)
    curtailed_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    peak_import_kw: float
    grid_limit_kw: float
    steps_over_limit: int  # dispatch steps whose mean import exceeded the limit
    energy_cost_krw: float
    demand_charge_krw: float  # pro rata for the period
    cost_krw: float
    sessions: int
    # renewable energy left in the battery at the end [kWh stored, pro rata]: a run that
    # ends with more of it has not lost it (a fixed-length period cuts it off)
    battery_renewable_end_kwh: float = 0.0
    # stored energy at the end minus at the start [kWh stored]: what a run's cost leaves in
    # (or took from) the battery, to value when comparing the costs of runs
    battery_stored_change_kwh: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class SimulationResult:
    """What :func:`simulate` returns."""

    policy: str
    start: datetime
    end: datetime
    kpis: Kpis
    flows: pd.DataFrame  # energy-flow frame (megastation.store.flows.read_flows)
    sessions: pd.DataFrame  # one row per car visit
    db_path: str | None
    wall_s: float
    plans: int = 0  # LP solves
    solve_s: float = 0.0  # total LP solve time
    perfect_foresight: Kpis | None = None
    # stored energy sent to the grid, per substep min(discharge, export) [kWh]: all of it,
    # and the part while the PV gave nothing (night)
    battery_export_kwh: float = 0.0
    battery_export_night_kwh: float = 0.0


def flow_kpis(
    station: Station,
    frame: pd.DataFrame,
    *,
    energy_wanted_kwh: float,
    sessions: int,
    initial_soc_frac: float | None = None,
) -> Kpis:
    """KPIs of an energy-flow frame (15-minute steps, kW) for the station's tariff."""
    if frame.empty:
        raise SimulationError("no energy flows to summarise")
    h = accounting.step_hours(frame.index)
    if "step_s" in frame:
        h = frame["step_s"].to_numpy(float) / 3600.0
    b = station.battery
    soc0 = initial_soc_frac
    if soc0 is None:
        soc0 = float(frame["soc_frac"].iloc[0]) if "soc_frac" in frame else 0.0
        if not math.isfinite(soc0):
            soc0 = b.initial_soc_frac if b else 0.0
    alloc = accounting.allocate_battery(frame, b, soc0)
    tariff = Tariff(station.tariff, station.site.timezone)
    price = tariff.price_krw_per_kwh(pd.DatetimeIndex(frame.index))
    imp = frame["grid_import_kw"].to_numpy(float)
    exp_ = frame["grid_export_kw"].to_numpy(float)
    limit = station.site.grid_import_limit_kw
    if "grid_limit_kw" in frame and frame["grid_limit_kw"].notna().any():
        lim = frame["grid_limit_kw"].fillna(limit).to_numpy(float)
    else:
        lim = np.full(len(frame), limit)
    days = float(h.sum()) / 24.0
    peak = float(imp.max()) if len(imp) else 0.0
    energy_cost = float(
        (imp * h * price).sum() - (exp_ * h).sum() * tariff.export_price_krw_per_kwh
    )
    demand = tariff.demand_charge_krw_per_kw_month * peak * days / DAYS_PER_BILLING_MONTH
    delivered = float((frame["ev_kw"].to_numpy(float) * h).sum())
    green_end_kwh = stored_change_kwh = 0.0
    if b is not None and len(alloc):
        stored_kwh = soc0 * b.capacity_kwh + float(
            (
                frame["battery_charge_kw"].to_numpy(float) * b.charge_efficiency
                - frame["battery_discharge_kw"].to_numpy(float) / b.discharge_efficiency
            )
            @ h
        )
        green_end_kwh = max(0.0, stored_kwh) * float(alloc["battery_renewable_frac"].iloc[-1])
        stored_change_kwh = stored_kwh - soc0 * b.capacity_kwh
    return Kpis(
        energy_delivered_kwh=delivered,
        energy_wanted_kwh=float(energy_wanted_kwh),
        unmet_kwh=max(0.0, float(energy_wanted_kwh) - delivered),
        renewable_frac=accounting.renewable_share(alloc),
        pv_kwh=float((frame["pv_kw"].to_numpy(float) * h).sum()),
        curtailed_kwh=float(
            (frame.get("curtailed_kw", 0.0 * frame["pv_kw"]).fillna(0.0) * h).sum()
        ),
        grid_import_kwh=float((imp * h).sum()),
        grid_export_kwh=float((exp_ * h).sum()),
        peak_import_kw=peak,
        grid_limit_kw=float(np.nanmin(lim)),
        steps_over_limit=int((imp > lim + OVER_LIMIT_TOL_KW).sum()),
        energy_cost_krw=energy_cost,
        demand_charge_krw=float(demand),
        cost_krw=float(energy_cost + demand),
        sessions=int(sessions),
        battery_renewable_end_kwh=green_end_kwh,
        battery_stored_change_kwh=stored_change_kwh,
    )


# --------------------------------------------------------------------------- the engine


class _StepForecastCache:
    """:func:`forecasts.forecast.forecast_pv` for a simulated period, computed cheaply.

    The controller asks for a forecast on every plan (about 230 a day: every interval
    and every arrival or departure). Two savings, the second one exact:

    - within one 15-minute forecast step the forecast grid, the weather and the
      nowcast's measured clear-sky index (from the hour before the step) are the same;
      only the lead times of the nowcast blend are a few minutes shorter. So the first
      forecast issued in a step serves every plan in that step.
    - the PV model (raw and clear-sky power per array) is pointwise in time: it is run
      once over the whole forecast weather of the period (``weather``, on the site's
      15-minute index) and sliced per forecast; the nowcast and the bands are then
      applied as :func:`forecast_pv` does. A call outside that index, with another
      step or another weather falls back to :func:`forecast_pv` itself.
    """

    # the same forecast serves every plan made within one forecast step (Controller._forecast)
    per_step = True

    def __init__(self, station: Station, weather: pd.DataFrame) -> None:

        self._key: tuple | None = None
        self._frame: pd.DataFrame | None = None
        self._arrays_key: tuple | None = None
        self._arrays: ForecastArrays | None = None
        self._weather = weather
        pvs = station.pv_site()
        arrays = pvs.arrays
        self._step = SITE_STEP
        self._index = pd.DatetimeIndex(weather.index).tz_convert("UTC").as_unit("ns")
        self._index_ns = self._index.asi8
        self._ok = bool(arrays) and len(self._index) > 1
        if not self._ok:
            return
        self._raw, _ = pv_power_array(pvs, arrays, weather, step=self._step)
        self._clear, _ = pv_power_array(pvs, arrays, weather, step=self._step, clear_sky=True)
        # the nowcast's clear-sky reference (clear sky, typical temperature), from
        # n_win steps before the first step on
        n_win = 8
        ext = pd.date_range(
            self._index[0] - n_win * self._step,
            periods=n_win + len(self._index),
            freq=self._step,
            unit="ns",
        )
        ref, _ = pv_power_array(pvs, arrays, clear_sky_weather(ext), step=self._step)
        self._clear_ext = ref.sum(axis=1)
        self._n_past = n_win
        self._limits = inverter_limits_kw(arrays)
        self._arrays_of_site = tuple(arrays)
        self._assemble_kw = dict(with_weather=True, latitude_deg=pvs.latitude)
        self._t0_s = self._index[0].timestamp()

    def __call__(
        self,
        station: Station,
        start: datetime | pd.Timestamp,
        n_steps: int,
        step_min: int | None = None,
        weather: pd.DataFrame | None = None,
        measured_kw: pd.Series | None = None,
    ) -> pd.DataFrame:
        """The forecast frame (the ``Forecaster`` signature)."""
        step_s = 60 * (step_min or station.site.dispatch_step_min)
        key = (int(pd.Timestamp(start).timestamp()) // step_s, step_s, id(weather))
        if key == self._key and self._frame is not None and len(self._frame) >= n_steps:
            return self._frame
        # one step more: a plan made on a step boundary has one step less than the plans
        # made within the step (its first step is not a short one)
        frame = None
        if self._covers(weather, step_s):
            measured = None
            if measured_kw is not None and len(measured_kw):
                if measured_kw.index.tz is None:
                    raise ValueError("measured_kw: index must be timezone-aware timestamps")
                measured = (_nowcast.epoch_ns(measured_kw.index), measured_kw.to_numpy(float))
            parts = self._sliced(start, n_steps + 1, measured)
            frame = None if parts is None else assemble(*parts, **self._assemble_kw)
        if frame is None:
            frame = forecast_pv(
                station.pv_site(), start, n_steps + 1, step_min, weather=weather,
                measured_kw=measured_kw,
            )  # fmt: skip
        self._frame, self._key = frame, key
        return frame

    def arrays(
        self,
        station: Station,
        start: datetime | pd.Timestamp,
        n_steps: int,
        step_min: int | None = None,
        weather: pd.DataFrame | None = None,
        history: Sequence[tuple[datetime, float]] = (),
    ) -> ForecastArrays:
        """The same forecast as arrays, from the measured ``history`` (what the plan
        reads: no frame, no Series, :func:`megastation.control.pv.forecast_on_grid`)."""
        step_s = 60 * (step_min or station.site.dispatch_step_min)
        key = (int(pd.Timestamp(start).timestamp()) // step_s, step_s, id(weather))
        got = self._arrays
        if key == self._arrays_key and got is not None and len(got.index_ns) >= n_steps:
            return got
        parts = None
        if self._covers(weather, step_s):
            measured = measured_arrays(history) if history else None
            parts = self._sliced(start, n_steps + 1, measured)
        if parts is not None:
            cols, _ = assemble_columns(*parts, **self._assemble_kw)
            got = ForecastArrays(
                _nowcast.epoch_ns(parts[1]), cols["pv_ac_kw"], cols["pv_ac_p10_kw"],
                cols["pv_ac_p90_kw"],
            )  # fmt: skip
        else:
            got = frame_arrays(
                forecast_pv(
                    station.pv_site(), start, n_steps + 1, step_min, weather=weather,
                    measured_kw=measured_series(history),
                )
            )  # fmt: skip
        self._arrays, self._arrays_key = got, key
        return got

    def _covers(self, weather: pd.DataFrame | None, step_s: int) -> bool:
        return self._ok and weather is self._weather and step_s == SITE_STEP_S

    def _sliced(
        self, start: datetime | pd.Timestamp, n: int, measured: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple | None:
        """forecast_pv's nowcast on the precomputed PV model: :func:`assemble`'s inputs
        (None: not covered). ``measured``: the measured PV's times [epoch ns] and kW."""
        issued = pd.Timestamp(start).tz_convert("UTC")
        row = int((issued.timestamp() - self._t0_s) // SITE_STEP_S)
        if row < 0 or row + n > len(self._index):
            return None
        grid = self._index[row : row + n]
        raw, clear = self._raw[row : row + n], self._clear[row : row + n]
        k_meas = None
        if measured is not None and len(measured[0]):
            n_win = max(1, round(_nowcast.WINDOW_H * 3600 / SITE_STEP_S))
            if n_win > self._n_past:
                return None
            lo = row + self._n_past - n_win
            # forecast_pv's step means over the window before the grid, on arrays (#15)
            t_ns, kw = measured
            before = t_ns < issued.value
            step_ns = SITE_STEP_S * 10**9
            meas = _nowcast.step_means_ns(
                t_ns[before], kw[before], int(self._index_ns[row]) - n_win * step_ns, step_ns,
                n_win,
            )  # fmt: skip
            k_meas = _nowcast.measured_clear_sky_index(
                meas, self._clear_ext[lo : lo + n_win], self._limits.sum()
            )
        return (self._arrays_of_site, grid, issued, raw, clear, self._limits, k_meas)


@dataclass
class FlowBucket(StepMean):
    """One dispatch step of a simulated site's flows: the step means, each connector's
    (kW x s, transaction id, session key) and the battery's SoC at the step start."""

    connector: dict[tuple[str, int], tuple[float, int | None, str | None]] = field(
        default_factory=dict
    )
    soc_frac: float | None = None

    def record(
        self,
        store: Store,
        *,
        grid_limit_kw: float,
        forecast: tuple[float | None, float | None, float | None],
    ) -> dict[str, float]:
        """Write the step (a :class:`flows.FlowStep` and one :class:`flows.ConnectorStep`
        per connector) with the day-ahead ``forecast`` (P50, P10, P90 [kW]); returns the
        means. Nothing is written for a step that covered no time."""
        if self.seconds <= 0:
            return {}
        mean = self.means()
        flows.record_flows(
            store,
            flows.FlowStep(
                ts=self.ts,
                step_s=self.seconds,
                soc_frac=self.soc_frac,
                grid_limit_kw=grid_limit_kw,
                pv_forecast_kw=forecast[0],
                pv_p10_kw=forecast[1],
                pv_p90_kw=forecast[2],
                **mean,
            ),
        )
        flows.record_connector_flows(
            store,
            [
                flows.ConnectorStep(self.ts, c, n, e / self.seconds, tx, key)
                for (c, n), (e, tx, key) in self.connector.items()
            ],
        )
        return mean


class _Simulator:
    def __init__(
        self,
        station: Station,
        store: Store,
        clock: SimClock,
        site: SiteInputs,
        visits: Sequence[CarVisit],
        policy: str,
        *,
        start: datetime,
        end: datetime,
        step_s: float,
        plan_interval_s: float,
        run: str,
        keep_plan_horizons: bool = False,
        replan_on_departure: bool | str = True,
        follow_balance: bool = True,
        solver: Solver | None = None,
        relearn_interval: timedelta = SIM_RELEARN_INTERVAL,
        count_from: datetime | None = None,
    ) -> None:
        self.station = station
        self.store = store
        self.clock = clock
        self.site = site
        self.policy = policy
        self.start, self.end = start, end
        self.count_from = count_from or start  # plans and battery export counted from here
        self.step_s = step_s
        self.plan_interval_s = plan_interval_s
        self.run_name = run
        self.departure_replans = departure_replans(replan_on_departure)
        self.follow_balance = follow_balance  # battery follows the site balance between plans
        self.flow_step_s = station.site.dispatch_step_min * 60
        self.tz = station.site.timezone
        self.battery = SimulatedBattery(station.battery, clock) if station.battery else None
        self.gateway: DirectGateway | None = None
        self.controller: Controller | None = None
        if policy in ("re100", "cost"):
            cr.set_policy(store, policy)
            cr.keep_plan_horizons(store, keep_plan_horizons)
            self.gateway = DirectGateway(station, store, clock)
            self.controller = Controller(
                station,
                store,
                clock,
                gateway=self.gateway,
                battery=self.battery,
                pv_meter=SimulatedPVMeter(self._pv_at, clock),
                weather=site.forecast_weather,
                forecaster=_StepForecastCache(station, site.forecast_weather),
                record_flows=False,  # the simulator records the site's flows itself
                guard_interval_s=None,
                # the TxProfile lease must outlast this simulation's plan interval, not
                # the station's dispatch_interval_s: else cars fall back to the
                # fail-safe share between plans
                lease_s=DEFAULT_LEASE_INTERVALS * plan_interval_s,
                solver=solver,
                relearn_interval=relearn_interval,
            )
            self.controller.solve_inline = True  # nothing else runs on this loop
        self.groups = dispatch.station_groups(station)
        self.group_caps_kw = [float(np.min(g.max_power_kw)) for g in self.groups]
        self.kind = {c.id: c.kind for c in station.chargers}
        self.version = {c.id: c.ocpp_version for c in station.chargers}
        self.pending = sorted(visits, key=lambda v: v.arrival)
        self.cars: dict[str, _Car] = {}
        self.finished: list[dict] = []
        self.meter_wh: dict[tuple[str, int], float] = {}
        self.next_plan = start
        self.plans = 0
        self.solve_s = 0.0
        self.peak_kw = 0.0
        self.battery_export_kwh = 0.0  # min(discharge, export) per substep [kWh]
        self.battery_export_night_kwh = 0.0  # ... while PV is 0
        self._site_t0_s = self.site.index[0].timestamp()  # epoch seconds of site row 0
        self.bucket: FlowBucket | None = None
        self.fc_days: set[pd.Timestamp] = set()  # days whose day-ahead forecast was made
        self.fc_steps: dict[int, tuple[float, float, float]] = {}  # their steps (_day_ahead)
        records.register_station_chargers(store, station)

    # ---------------------------------------------------------------- helpers

    def _pv_at(self, t: datetime) -> float:
        return float(self.site.pv_actual_kw[min(self._site_row(t), len(self.site.index) - 1)])

    def _site_row(self, now: datetime) -> int:
        return int((now.timestamp() - self._site_t0_s) // SITE_STEP_S)

    def _flow_step_start(self, now: datetime) -> datetime:
        """Start of the flow step containing ``now`` (steps on multiples of the step, UTC)."""
        fs = self.flow_step_s
        return datetime.fromtimestamp(math.floor(now.timestamp() / fs) * fs, UTC)

    def _plug_in(self, v: CarVisit, now: datetime) -> None:
        ch = self.station.charger(v.charger_id)
        key = f"{v.charger_id}/{v.connector_id}/{iso(v.arrival)}"
        car = _Car(
            sim=ConnectorSim(
                visit=v,
                connector_max_kw=ch.connector_power_kw,
                kind=ch.kind,
                phases=ch.phases,
                voltage_v=ch.voltage_v,
            ),
            key=key,
            kind=ch.kind,
            sends_needs=v.sends_charging_needs and ch.ocpp_version == "2.0.1",
        )
        conn = (v.charger_id, v.connector_id)
        meter = self.meter_wh.get(conn, 0.0)
        tx = records.start_transaction(
            self.store,
            v.charger_id,
            connector_id=v.connector_id,
            id_token=v.id_token,
            auth_status="Accepted",
            meter_start_wh=round(meter, 1),
            ts=v.arrival,
        )
        car.transaction_id = tx.transaction_id
        self.cars[key] = car
        if self.controller is not None:
            if car.sends_needs:
                records.record_charging_needs(
                    self.store,
                    v.charger_id,
                    v.connector_id,
                    requested_energy_kwh=v.energy_wanted_kwh,
                    departure_time=v.departure,
                    max_power_kw=None,
                    energy_transfer_mode="DC" if ch.kind == "DC" else "AC_single_phase_core",
                    payload={"simulated": True},
                )
            elif v.stated_departure is not None or v.stated_energy_kwh is not None:
                self._driver_input(car, ch)
            self._meter_sample(car, now)

    def _driver_input(self, car: _Car, ch) -> None:
        """What an imported car's driver said (not the truth): ChargingNeeds on a 2.0.1
        charger, an app/operator override on a 1.6 one."""
        v = car.visit
        if ch.ocpp_version == "2.0.1":
            records.record_charging_needs(
                self.store,
                v.charger_id,
                v.connector_id,
                requested_energy_kwh=v.stated_energy_kwh,
                departure_time=v.stated_departure,
                max_power_kw=None,
                energy_transfer_mode="DC" if ch.kind == "DC" else "AC_single_phase_core",
                payload={"simulated": True, "stated": True},
            )
        else:
            cr.set_session_override(
                self.store,
                car.transaction_id,
                departure=v.stated_departure,
                energy_kwh=v.stated_energy_kwh,
            )

    def _meter_sample(self, car: _Car, now: datetime) -> None:
        """What the charger would report: register, power and (DC) the car's SoC."""
        v = car.visit
        reg_kwh = self.meter_wh.get((v.charger_id, v.connector_id), 0.0) / 1000.0
        samples = [
            records.Sample(now, records.ENERGY_REGISTER, round(reg_kwh, 4), "kWh"),
            records.Sample(now, records.POWER_IMPORT, round(car.power_kw, 3), "kW"),
        ]
        if car.kind == "DC":
            samples.append(
                records.Sample(now, records.SOC, round(100 * car.soc_frac, 1), "Percent")
            )
        records.record_meter_values(
            self.store, v.charger_id, v.connector_id, samples, transaction_id=car.transaction_id
        )

    def _unplug(self, car: _Car, ts: datetime) -> None:
        v = car.visit
        conn = (v.charger_id, v.connector_id)
        records.stop_transaction(
            self.store,
            v.charger_id,
            car.transaction_id,
            meter_stop_wh=round(self.meter_wh.get(conn, 0.0), 1),
            ts=ts,
            reason="EVDisconnected" if ts >= v.departure else "Other",
        )
        self.finished.append(
            {
                "run": self.run_name,
                "session_key": car.key,
                "transaction_id": car.transaction_id,
                "charger_id": v.charger_id,
                "connector_id": v.connector_id,
                "car_model": v.car_model,
                "arrival": iso(v.arrival),
                "departure": iso(min(v.departure, self.end)),
                "energy_wanted_kwh": v.energy_wanted_kwh,
                "energy_kwh": car.delivered_kwh,
                "unmet_kwh": car.wanted_left_kwh,
            }
        )
        del self.cars[car.key]

    # ---------------------------------------------------------------- policies

    async def _plan(self, now: datetime, reason: str) -> None:
        """One control cycle of the real controller; limits come from its gateway."""
        for car in self.cars.values():
            self._meter_sample(car, now)
        result = await self.controller.cycle(reason)
        if now >= self.count_from:
            self.solve_s += result.solve_s
            self.plans += 1

    def _limits(self, now: datetime) -> None:
        for car in self.cars.values():
            v = car.visit
            car.limit_kw = self.gateway.limit_kw(
                v.charger_id, v.connector_id, car.transaction_id, now
            )

    # ---------------------------------------------------------------- physics

    def _hardware(self, want: dict[str, float]) -> dict[str, float]:
        """Scale requests down pro rata inside every shared power group."""
        by_conn = {(c.visit.charger_id, c.visit.connector_id): k for k, c in self.cars.items()}
        out = dict(want)
        for g, cap in zip(self.groups, self.group_caps_kw, strict=True):
            keys = [by_conn[m] for m in g.members if m in by_conn]
            total = sum(out[k] for k in keys)
            if total > cap + LIMIT_SLACK_KW:
                f = cap / total
                for k in keys:
                    out[k] *= f
        return out

    def _battery_bounds(self, dt_h: float) -> tuple[float, float]:
        """(max charge, max discharge) [kW] this substep, SoC limits included."""
        if self.battery is None:
            return 0.0, 0.0
        b = self.station.battery
        soc = self.battery.soc_frac
        room = max(0.0, (b.soc_max_frac - soc) * b.capacity_kwh)
        avail = max(0.0, (soc - b.soc_min_frac) * b.capacity_kwh)
        ch = min(b.max_charge_kw, room / b.charge_efficiency / dt_h)
        dis = min(b.max_discharge_kw, avail * b.discharge_efficiency / dt_h)
        return ch, dis

    def _flows(self, now: datetime, dt_s: float) -> dict:
        """The site's flows this substep for the cars' current limits (no state change)."""
        dt_h = dt_s / 3600.0
        row = min(self._site_row(now), len(self.site.index) - 1)
        pv_avail = float(self.site.pv_actual_kw[row])
        base = float(self.site.base_load_kw[row])
        ch_max, dis_max = self._battery_bounds(dt_h)
        accept = {k: c.accept_kw() for k, c in self.cars.items()}
        if self.policy in ("uncontrolled", "uncontrolled-idle"):
            # full power, but no more than the car still takes this substep (so the
            # self-consumption battery covers what the cars really draw)
            want = {k: min(a, self.cars[k].wanted_left_kwh / dt_h) for k, a in accept.items()}
            batt = 0.0
        elif self.policy == "greedy":
            want, batt = self._greedy(now, dt_h, accept, pv_avail, base, ch_max, dis_max)
        else:
            # what each car will draw under its limit (AC 6 A minimum, energy left): the
            # battery follows the site balance the cars really make
            want = {}
            for k, a in accept.items():
                car = self.cars[k]
                p = min(a, car.limit_kw)
                p = 0.0 if p < car.sim.min_power_kw - 1e-9 else p
                want[k] = min(p, car.wanted_left_kwh / dt_h)
            batt = self.battery.setpoint_kw if self.battery is not None else 0.0
        ev = self._hardware(want)
        ev_kw = sum(ev.values())
        if self.policy == "uncontrolled":
            # a hybrid inverter's self-consumption mode: store the PV surplus, cover the
            # import, down to the battery's reserve (soc_min_frac: _battery_bounds)
            batt = ev_kw + base - pv_avail
        if self.controller is not None and self.battery is not None and self.follow_balance:
            # What the live guard loop does every tick: the battery follows the metered
            # site balance around the plan (Controller.balance_setpoint_kw).
            follow = self.controller.balance_setpoint_kw(
                now,
                soc_frac=self.battery.soc_frac,
                net_import_kw=ev_kw + base - pv_avail - batt,
                battery_kw=batt,
            )
            if follow is not None:
                batt = follow
        batt = min(max(batt, -ch_max), dis_max)
        if self.policy == "greedy":
            # guard: battery first, then cut cars pro rata
            limit = self._limit_kw(now)
            net = ev_kw + base - pv_avail - batt
            if net > limit:
                batt = min(dis_max, batt + net - limit)
                net = ev_kw + base - pv_avail - batt
            if net > limit and ev_kw > 0:
                f = max(0.0, (ev_kw - (net - limit)) / ev_kw)
                ev = {k: p * f for k, p in ev.items()}
                ev_kw = sum(ev.values())
        net = ev_kw + base - pv_avail - batt
        export_limit = self.station.site.grid_export_limit_kw
        curtailed = 0.0
        if -net > export_limit:
            if batt > 0:  # never discharge into export
                drop = min(batt, -net - export_limit)
                batt -= drop
                net += drop
            curtailed = max(0.0, -net - export_limit)
            net += curtailed
        return {
            "ev": ev,
            "ev_kw": ev_kw,
            "batt": batt,
            "pv_avail": pv_avail,
            "pv": pv_avail - curtailed,
            "curtailed": curtailed,
            "base": base,
            "net": net,
        }

    def _commit(self, now: datetime, dt_s: float, f: dict) -> None:
        dt_h = dt_s / 3600.0
        batt = f["batt"]
        soc_start = self.battery.soc_frac if self.battery else None
        if self.battery is not None:
            self.battery.setpoint_kw = batt
        ev = {}
        for k, p in f["ev"].items():
            car = self.cars[k]
            got = car.sim.step(now, dt_s, _step_limit_kw(car, p, dt_h) + LIMIT_SLACK_KW)
            ev[k] = got
            conn = (car.visit.charger_id, car.visit.connector_id)
            self.meter_wh[conn] = self.meter_wh.get(conn, 0.0) + got * dt_h * 1000.0
        ev_kw = sum(ev.values())
        net = ev_kw + f["base"] - f["pv"] - batt
        stored_out = min(max(batt, 0.0), max(-net, 0.0)) * dt_h
        if now >= self.count_from:
            self.battery_export_kwh += stored_out
            if f["pv_avail"] <= 0.0:
                self.battery_export_night_kwh += stored_out
        b = self._bucket_for(now)
        if b.soc_frac is None:
            b.soc_frac = soc_start
        b.add(
            dt_s,
            {
                "pv_kw": f["pv"],
                "curtailed_kw": f["curtailed"],
                "ev_kw": ev_kw,
                "base_load_kw": f["base"],
                "battery_charge_kw": max(-batt, 0.0),
                "battery_discharge_kw": max(batt, 0.0),
                "grid_import_kw": max(net, 0.0),
                "grid_export_kw": max(-net, 0.0),
            },
        )
        for k, p in ev.items():
            car = self.cars[k]
            conn = (car.visit.charger_id, car.visit.connector_id)
            old = b.connector.get(conn, (0.0, car.transaction_id, car.key))
            b.connector[conn] = (old[0] + p * dt_s, car.transaction_id, car.key)

    def _greedy(
        self,
        now: datetime,
        dt_h: float,
        accept: dict[str, float],
        pv: float,
        base: float,
        ch_max: float,
        dis_max: float,
    ) -> tuple[dict[str, float], float]:
        """The PV-surplus greedy rule (:func:`greedy_power_kw`) on this minute's PV and
        site load; the battery stores the surplus the cars leave and covers deficits."""
        keys = list(accept)
        power = greedy_power_kw(
            np.array([accept[k] for k in keys]),
            greedy_floor_kw(np.array([self.cars[k].connector_kw for k in keys])),
            pv_kw=pv,
            site_load_kw=base,
            remaining_kwh=np.array([self.cars[k].wanted_left_kwh for k in keys]),
            hours_left_h=np.array(
                [(self.cars[k].visit.departure - now).total_seconds() / 3600 for k in keys]
            ),
            step_h=dt_h,
        )
        want = {k: float(p) for k, p in zip(keys, power, strict=True)}
        ev = sum(self._hardware(want).values())
        batt = ev + base - pv  # > 0: the battery covers the shortfall; < 0: stores surplus
        return want, min(max(batt, -ch_max), dis_max)

    def _limit_kw(self, at: datetime) -> float:
        """The grid import limit in force at ``at`` [kW] (the operator's override counts)."""
        return cr.grid_limit_kw(self.store, self.station.site.grid_import_limit_kw, at)[0]

    # ---------------------------------------------------------------- recording

    def _bucket_for(self, now: datetime) -> FlowBucket:
        ts = self._flow_step_start(now)
        if self.bucket is None or self.bucket.ts != ts:
            self._flush()
            self.bucket = FlowBucket(ts)
        return self.bucket

    def _flush(self) -> None:
        b = self.bucket
        if b is None or b.seconds <= 0:
            return
        mean = b.record(
            self.store,
            grid_limit_kw=self._limit_kw(b.ts),
            forecast=self._flow_forecast(b.ts),
        )
        self.peak_kw = max(self.peak_kw, mean.get("grid_import_kw", 0.0))
        self.bucket = None

    def _flow_forecast(self, ts: datetime) -> tuple[float | None, ...]:
        """The day-ahead forecast of a step (issued at local midnight, or at the start of
        a run that starts later in the day), for the plots and the daily scores."""
        step = math.floor(ts.timestamp() / SITE_STEP_S)  # the forecast step of ts
        if step not in self.fc_steps:
            day = pd.Timestamp(ts).tz_convert(self.tz).normalize().tz_convert("UTC")
            if day in self.fc_days:
                return (None, None, None)  # not in the day's forecast
            self.fc_days.add(day)
            self.fc_steps.update(self._day_ahead(day))
        return self.fc_steps.get(step, (None, None, None))

    def _day_ahead(self, day: pd.Timestamp) -> dict[int, tuple[float, float, float]]:
        """The forecast issued for ``day`` (local midnight, UTC): (P50, P10, P90) [kW] by
        forecast step (epoch seconds // SITE_STEP_S); none if it cannot be made."""
        issue = max(day, self.site.index[0])
        n = max(1, int((day + pd.Timedelta(days=1) - issue) // SITE_STEP))
        try:
            fc = forecast_pv(
                self.station.pv_site(),
                issue.to_pydatetime(),
                n,
                SITE_STEP_S // 60,
                self.site.forecast_weather,
            )
        except ValueError:
            return {}
        steps = fc.index.as_unit("ns").asi8 // (SITE_STEP_S * 10**9)
        cols = (
            fc[c].to_numpy(float).tolist() for c in ("pv_ac_kw", "pv_ac_p10_kw", "pv_ac_p90_kw")
        )
        return dict(zip(steps.tolist(), zip(*cols, strict=True), strict=True))

    # ---------------------------------------------------------------- loop

    async def run(self, progress: Callable[[float], None] | None = None) -> None:
        now = self.start
        total_s = (self.end - self.start).total_seconds()
        last_report = -1
        if self.controller is not None:
            limit = self._limit_kw(now)
            for ch in self.station.chargers:  # boot: fail-safe profiles
                await self.gateway.install_failsafe(ch.id, grid_import_limit_kw=limit)
        while now < self.end:
            # one SQLite transaction per substep (samples, plan, set points, flows)
            with records.group_commit(self.store):
                now = await self._substep(now, self._limit_kw(now))
            if progress is not None:
                done = int(200 * (now - self.start).total_seconds() / total_s)
                if done != last_report:
                    progress((now - self.start).total_seconds() / total_s)
                    last_report = done
        with records.group_commit(self.store):
            for car in list(self.cars.values()):
                self._unplug(car, self.end)
            self._flush()
            if self.finished:
                self.store.db["sim_sessions"].insert_all(self.finished)
            cr.write_latest_horizon(self.store)

    async def _substep(self, now: datetime, limit: float) -> datetime:
        """Events, a plan if due, then the flows up to the next boundary; returns it."""
        reasons = []
        for car in [c for c in self.cars.values() if c.visit.departure <= now]:
            self._unplug(car, car.visit.departure)
            if self.departure_replans == "always" or (
                self.departure_replans == "drawing" and car.power_kw > 0.0
            ):
                reasons.append("car_left")
        while self.pending and self.pending[0].arrival <= now:
            v = self.pending.pop(0)
            if v.departure > now:
                self._plug_in(v, now)
                reasons.append("car_plugged_in")
        if self.controller is not None:
            if now >= self.next_plan:
                reasons.append("interval")
            if reasons:
                await self._plan(now, ",".join(sorted(set(reasons))))
                if "interval" in reasons:
                    self.next_plan = now + timedelta(seconds=self.plan_interval_s)
            self._limits(now)
        # the substep ends at the next event boundary (step, flow step or end)
        nxt = now + timedelta(seconds=self.step_s)
        flow_end = self._flow_step_start(now) + timedelta(seconds=self.flow_step_s)
        nxt = min(nxt, flow_end, self.end)
        if self.pending and now < self.pending[0].arrival < nxt:
            nxt = self.pending[0].arrival
        # ... or a departure: a car's power is its mean over the whole substep
        for car in self.cars.values():
            if now < car.visit.departure < nxt:
                nxt = car.visit.departure
        dt_s = (nxt - now).total_seconds()
        f = self._flows(now, dt_s)
        if self.controller is not None and f["net"] > limit + GUARD_TOLERANCE_KW:
            # the controller's over-limit guard answers within a second
            await self._plan(now, "over_limit")
            self._limits(now)
            f = self._flows(now, dt_s)
        self._commit(now, dt_s, f)
        self.clock.set(nxt)
        if self.battery is not None:
            _ = self.battery.power_kw  # integrate SoC to the new time
        return nxt


def _step_limit_kw(car: _Car, power_kw: float, dt_h: float) -> float:
    """The limit a car is stepped with [kW]: ``power_kw``, its mean power this substep.
    An AC car whose last energy is less than a substep at its 6 A minimum (so its mean
    power is below the minimum, which the car refuses) charges at the minimum until it
    is full, as it does under any limit at or above the minimum."""
    low = car.sim.min_power_kw
    if 0.0 < power_kw < low <= car.limit_kw and power_kw >= car.wanted_left_kwh / dt_h - 1e-9:
        return low
    return power_kw


def simulate(
    station: Station,
    *,
    start: datetime | None = None,
    days: float = 1.0,
    hours: float | None = None,
    policy: str = "re100",
    weather: str | Path | pd.DataFrame = "clear-day",
    seed: int = 1,
    db_path: str | Path | None = None,
    step_s: float = 60.0,
    plan_interval_s: float | None = None,
    visits: Sequence[CarVisit] | None = None,
    site: SiteInputs | None = None,
    with_perfect_foresight: bool = True,
    progress: Callable[[float], None] | None = None,
    keep_plan_horizons: bool = False,
    replan_on_departure: bool | str = True,
    follow_balance: bool = True,
    history: Sequence[CarVisit] | None = None,
    solver: Solver | None = None,
    relearn_interval: timedelta = SIM_RELEARN_INTERVAL,
    count_from: datetime | None = None,
) -> SimulationResult:
    """Simulate the station under ``policy`` and record it into a fresh store.

    ``start`` defaults to the weather file's first local midnight; the period is
    ``hours`` if given, else ``days``. ``db_path`` None keeps the store in memory.
    ``plan_interval_s`` (None: the station's dispatch step) is the controller's re-plan
    interval; it also re-plans on every arrival and when a car that draws power leaves.
    ``keep_plan_horizons`` keeps every plan's per-step horizon in ``control_plans``
    (several kB each, ~230 plans a day); by default only the latest plan keeps it.
    ``replan_on_departure``: True (``"drawing"``) re-plans when a car that draws power
    leaves, as the live loop does; ``"always"`` on every departure (as before #15: ~20 %
    more plans, README "A year in parts"); False (``"never"``) on none.
    ``follow_balance`` (default, as the live guard loop): between plans the battery
    follows the metered site balance around the plan; False holds the plan's set point.
    ``history``: visits stored as closed transactions before ``start`` (the controller
    learns from them; :func:`_preload`). ``solver``: the controller's dispatch solver
    (None: HiGHS warm-started from the last plan; :func:`megastation.dispatch.solve_reference`
    is the solve as it was before, for comparisons). ``relearn_interval``: how often the
    controller re-learns expected cars from history (:data:`SIM_RELEARN_INTERVAL`; the live
    loop's hourly :data:`megastation.control.demand.RELEARN_INTERVAL` as before #15).
    ``count_from``: the plans, solve time and battery export of the result are counted
    from this time (a warm-up before it; :mod:`megastation.sim.parts`); the store and
    KPIs still cover the whole run. Same inputs and seed give the same result.
    """
    if policy not in POLICIES:
        raise SimulationError(f"policy: must be one of {', '.join(POLICIES)}; got {policy!r}")
    wx = weather if isinstance(weather, pd.DataFrame) else read_weather(weather)
    start = utc(start) if start is not None else weather_start(wx, station.site.timezone)
    span = timedelta(hours=hours) if hours is not None else timedelta(days=days)
    if span <= timedelta(0):
        raise SimulationError("days/hours: must be > 0")
    end = start + span
    t_wall = time.perf_counter()
    if site is None:
        site = prepare_site(station, start, end, wx, seed)
    if visits is None:
        visits = generate_visits(station, start, end, seed)
    visits = [truncate_visit(v, end) for v in visits if start <= v.arrival < end]
    if plan_interval_s is None:
        plan_interval_s = station.site.dispatch_step_min * 60.0
    clock = SimClock(start)
    store = fresh_store(db_path, clock)
    _preload(store, station, history, start)
    try:
        sim = _Simulator(
            station,
            store,
            clock,
            site,
            visits,
            policy,
            start=start,
            end=end,
            step_s=step_s,
            plan_interval_s=plan_interval_s,
            run=policy,
            keep_plan_horizons=keep_plan_horizons,
            replan_on_departure=replan_on_departure,
            follow_balance=follow_balance,
            solver=solver,
            relearn_interval=relearn_interval,
            count_from=utc(count_from) if count_from is not None else None,
        )
        asyncio.run(sim.run(progress))
        frame, kpis, pf = summarise_run(
            store, station, visits, site, (start, end), with_perfect_foresight
        )
    finally:
        store.close()
    sessions = pd.DataFrame(sim.finished)
    return _result(sim, kpis, frame, sessions, db_path, time.perf_counter() - t_wall, pf)


def summarise_run(
    store: Store,
    station: Station,
    visits: Sequence[CarVisit],
    site: SiteInputs,
    span: tuple[datetime, datetime],
    with_perfect_foresight: bool,
) -> tuple[pd.DataFrame, Kpis, Kpis | None]:
    """A finished run's flows and KPIs from its ``store``, and the optimum's KPIs over
    ``span`` (stored as the daily reference) when asked (also :mod:`megastation.sim.parts`)."""
    frame = flows.read_flows(store)
    kpis = flow_kpis(
        station,
        frame,
        energy_wanted_kwh=sum(v.energy_wanted_kwh for v in visits),
        sessions=len(visits),
    )
    pf = None
    if with_perfect_foresight:
        pf_kpis, pf_frame = perfect_foresight(station, *span, site, visits)
        store_reference(store, station, "perfect_foresight", pf_frame=pf_frame, kpis=pf_kpis)
        pf = pf_kpis
    return frame, kpis, pf


def _preload(
    store: Store, station: Station, history: Sequence[CarVisit] | None, start: datetime
) -> None:
    """History into a fresh store: the visits that left by ``start``, as closed
    transactions (:func:`megastation.sim.sessions.preload_history`)."""
    if history:
        from megastation.sim.sessions import preload_history

        records.register_station_chargers(store, station)
        preload_history(store, station, [v for v in history if v.departure <= start])


def _result(
    sim: _Simulator,
    kpis: Kpis,
    frame: pd.DataFrame,
    sessions: pd.DataFrame,
    db_path: str | Path | None,
    wall_s: float,
    pf: Kpis | None,
) -> SimulationResult:
    return SimulationResult(
        policy=sim.policy,
        start=sim.start,
        end=sim.end,
        kpis=kpis,
        flows=frame,
        sessions=sessions,
        db_path=str(db_path) if db_path is not None else None,
        wall_s=wall_s,
        plans=sim.plans,
        solve_s=sim.solve_s,
        perfect_foresight=pf,
        battery_export_kwh=sim.battery_export_kwh,
        battery_export_night_kwh=sim.battery_export_night_kwh,
    )


def fresh_store(db_path: str | Path | None, clock: SimClock | None = None) -> Store:
    """A new, empty store at ``db_path`` (an old one and its WAL files are deleted first;
    None: in memory)."""
    if db_path is None:
        return Store(":memory:", clock)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    return Store(db_path, clock)


def truncate_visit(v: CarVisit, end: datetime) -> CarVisit:
    """``v``, leaving at ``end`` at the latest (a run's end cuts the stay)."""
    return v if v.departure <= end else replace(v, departure=end)


# --------------------------------------------------------------------------- perfect foresight


def perfect_foresight(
    station: Station,
    start: datetime,
    end: datetime,
    site: SiteInputs,
    visits: Sequence[CarVisit],
    *,
    chunk_days: int = 7,
    policy: str = "re100",
) -> tuple[Kpis, pd.DataFrame]:
    """The perfect-foresight optimum of ``[start, end)`` under ``policy`` (default re100).

    :func:`megastation.evaluation.baselines.perfect_foresight` (the dispatch LP with the actual
    PV and site load and every car's true arrival, departure and energy, played out
    against the actuals) on one :class:`~megastation.evaluation.scenario.Scenario` per
    chunk of ``chunk_days``, so a month or a year stays a series of week-long LPs, on the
    ``visits`` that arrive in ``[start, end)`` (any others are left out). A
    car's power is bounded by ``min(car, connector)`` without the taper near full (so
    the optimum is, if anything, slightly optimistic). Cars still plugged in at a
    chunk's end are cut there; the battery's SoC and renewable content carry over.
    Each chunk's LP values the energy left stored at its end at the chunk's mean import
    price x discharge efficiency (``Scenario.resolved_battery``), so it may end with more
    stored than it started with: compare its cost with :func:`bill_krw`.
    Returns the KPIs (same accounting as the online runs) and the energy-flow frame.
    """

    b = station.battery
    soc = b.initial_soc_frac if b else None
    renew = 0.0
    parts = []
    wanted = 0.0
    cars = 0  # arriving in the span
    t = start
    step = station.site.dispatch_step_min * 60
    limits = {
        (ch.id, n): ch.connector_power_kw
        for ch in station.chargers
        for n in range(1, ch.connectors + 1)
    }
    groups = dispatch.station_groups(station)
    while t < end:
        t1 = min(end, t + timedelta(days=chunk_days))
        n = max(1, math.ceil((t1 - t).total_seconds() / step))
        grid = dispatch.TimeGrid(t, n, step)
        rows = np.minimum(
            ((grid.times - site.index[0]) // pd.Timedelta(seconds=step)).to_numpy(),
            len(site.index) - 1,
        )
        chunk = [truncate_visit(v, t1) for v in visits if t <= v.arrival < t1]
        wanted += sum(v.energy_wanted_kwh for v in chunk)
        cars += len(chunk)
        battery = dispatch.station_battery(station, soc, renew) if b else None
        out = pf_outcome(
            Scenario(
                grid=grid,
                pv_actual_kw=site.pv_actual_kw[rows],
                site_load_kw=site.base_load_kw[rows],
                grid_state=dispatch.station_grid_state(station, grid),
                visits=[v for v in chunk if v.departure > v.arrival],
                battery=battery,
                groups=groups,
                connector_limit_kw=limits,
                policy=policy,
            )
        )
        frame = pd.DataFrame(
            {
                "step_s": grid.durations_s,
                "pv_kw": site.pv_actual_kw[rows] - out.curtailed_kw,
                "curtailed_kw": out.curtailed_kw,
                "ev_kw": out.session_kw.sum(axis=0),
                "base_load_kw": site.base_load_kw[rows] - out.load_shed_kw,
                "battery_charge_kw": out.battery_charge_kw,
                "battery_discharge_kw": out.battery_discharge_kw,
                "grid_import_kw": out.grid_import_kw,
                "grid_export_kw": out.grid_export_kw,
                "soc_frac": out.soc_frac[:-1],
                "grid_limit_kw": station.site.grid_import_limit_kw,
            },
            index=grid.times,
        )
        parts.append(frame)
        if b:
            alloc = accounting.allocate_battery(frame, b, soc, renew)
            soc = float(np.clip(out.soc_frac[-1], b.soc_min_frac, b.soc_max_frac))
            renew = float(np.clip(alloc["battery_renewable_frac"].iloc[-1], 0.0, 1.0))
        t = t1
    frame = pd.concat(parts)
    kpis = flow_kpis(
        station,
        frame,
        energy_wanted_kwh=wanted,
        sessions=cars,
        initial_soc_frac=b.initial_soc_frac if b else None,
    )
    return kpis, frame


def stored_energy_value_krw_per_kwh(station: Station, start: datetime, end: datetime) -> float:
    """What a stored kWh left at the end of ``[start, end)`` is worth [KRW]: the mean import
    price over its dispatch steps x the battery's discharge efficiency, as the optimum's
    LP values it (``Scenario.resolved_battery``)."""
    step = pd.Timedelta(minutes=station.site.dispatch_step_min)
    times = pd.date_range(utc(start), utc(end), freq=step, inclusive="left")
    price = Tariff(station.tariff, station.site.timezone).price_krw_per_kwh(times)
    eff = station.battery.discharge_efficiency if station.battery else 1.0
    return float(np.mean(price)) * eff if len(times) else 0.0


def energy_net_krw(k: Kpis, stored_value_krw_per_kwh: float) -> float:
    """A run's energy cost [KRW] less the stored energy it gained
    (``battery_stored_change_kwh``) at ``stored_value_krw_per_kwh``: :func:`bill_krw`
    without the demand charge."""
    return k.energy_cost_krw - k.battery_stored_change_kwh * stored_value_krw_per_kwh


def bill_krw(k: Kpis, station: Station, stored_value_krw_per_kwh: float) -> float:
    """The cost of a run as the dispatch LP prices it [KRW], to compare a run with the
    optimum of the same policy: its energy cost, a whole month's demand charge on its peak
    (a new peak is billed for the month, where ``cost_krw`` counts the run's days pro rata),
    less the stored energy it gained (``battery_stored_change_kwh``) at
    ``stored_value_krw_per_kwh`` (:func:`stored_energy_value_krw_per_kwh`): a run that
    empties the battery pays for refilling it."""
    demand = station.tariff.demand_charge_krw_per_kw_month * k.peak_import_kw
    return energy_net_krw(k, stored_value_krw_per_kwh) + demand


def daily_kpis(
    station: Station,
    frame: pd.DataFrame,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Per local day of a flow frame: energy, renewable share, grid kWh, peak, cost.

    The battery's renewable content is tracked over the whole ``frame`` (so energy
    stored from PV one day stays renewable when it is used the next), then the steps
    in ``[start, end)`` are summed per day. Costs carry each day's demand charge pro
    rata (one day of its own peak).
    """
    if frame.empty:
        return pd.DataFrame()
    tz = station.site.timezone
    b = station.battery
    soc0 = float(frame["soc_frac"].iloc[0]) if "soc_frac" in frame else math.nan
    if not math.isfinite(soc0):
        soc0 = b.initial_soc_frac if b else 0.0
    alloc = accounting.allocate_battery(frame, b, soc0)
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= frame.index >= pd.Timestamp(start)
    if end is not None:
        keep &= frame.index < pd.Timestamp(end)
    frame, alloc = frame[keep], alloc[keep]
    if frame.empty:
        return pd.DataFrame()
    days = frame.index.tz_convert(tz).normalize()
    green = alloc["ev_renewable_kwh"].groupby(days).sum()
    ev = alloc["ev_kwh"].groupby(days).sum()
    out = []
    for day, part in frame.groupby(days):
        k = flow_kpis(station, part, energy_wanted_kwh=0.0, sessions=0)
        out.append(
            {
                "day": day.date().isoformat(),
                "energy_kwh": k.energy_delivered_kwh,
                "renewable_frac": float(green[day] / ev[day]) if ev[day] > 1e-9 else math.nan,
                "grid_import_kwh": k.grid_import_kwh,
                "peak_import_kw": k.peak_import_kw,
                "cost_krw": k.cost_krw,
            }
        )
    return pd.DataFrame(out)


def store_reference(
    store: Store, station: Station, reference: str, *, pf_frame: pd.DataFrame, kpis: Kpis
) -> None:
    """Per-day KPIs of a reference run (perfect foresight) for the daily export."""
    daily = daily_kpis(station, pf_frame)
    rows = [
        {
            "day": r["day"],
            "reference": reference,
            "energy_kwh": r["energy_kwh"],
            "unmet_kwh": None,
            "renewable_frac": r["renewable_frac"],
            "grid_import_kwh": r["grid_import_kwh"],
            "peak_import_kw": r["peak_import_kw"],
            "cost_krw": r["cost_krw"],
        }
        for _, r in daily.iterrows()
    ]
    if rows:
        store.db["sim_daily_reference"].insert_all(rows, replace=True)
    del kpis


__all__ = [
    "POLICIES",
    "Kpis",
    "SimulationResult",
    "cover_weather",
    "daily_kpis",
    "flow_kpis",
    "perfect_foresight",
    "prepare_site",
    "read_weather",
    "simulate",
    "summarise_run",
    "truncate_visit",
]
