"""One cell of a study: the station scaled to the cell's sizes, simulated over the period."""

from __future__ import annotations

import dataclasses
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from megastation.core import accounting
from megastation.core.config import BatteryConfig, Station
from megastation.core.tariff import Tariff
from megastation.sim.simulator import DAYS_PER_BILLING_MONTH, simulate
from megastation.studies.spec import Cell, StudySpec

# What a cell's result row holds besides the cell's own fields (units in the names).
RESULT_FIELDS = (
    "energy_delivered_kwh",
    "unmet_kwh",
    "renewable_frac",
    "grid_import_kwh",
    "grid_export_kwh",
    "peak_import_kw",
    "energy_cost_krw",
    "demand_charge_krw",
    "battery_throughput_kwh",
    "battery_cycles",
    "pv_used_kwh",
    "pv_curtailed_kwh",
    "optimum_renewable_frac",
    "days",
    "wall_s",
)


def scaled_station(station: Station, cell: Cell) -> Station:
    """``station`` with its PV arrays scaled to ``cell.pv_kwp`` (inverters with them), the
    battery resized (0 kWh: none) and the grid import limit set."""
    own_pv = sum(a.peak_power_kw for a in station.pv_arrays)
    if cell.pv_kwp > 0 and own_pv <= 0:
        raise ValueError("pv_kwp: the station has no PV arrays to scale")
    k = cell.pv_kwp / own_pv if own_pv > 0 else 0.0
    arrays = tuple(
        dataclasses.replace(
            a,
            peak_power_kw=a.peak_power_kw * k,
            inverter_ac_kw=None if a.inverter_ac_kw is None else a.inverter_ac_kw * k,
        )
        for a in station.pv_arrays
    )
    if k == 0:
        arrays = ()
    battery = None
    if cell.battery_kwh > 0:
        if cell.battery_kw <= 0:
            raise ValueError("battery_kw: must be > 0 with a battery")
        base = station.battery or BatteryConfig(cell.battery_kwh, cell.battery_kw, cell.battery_kw)
        battery = dataclasses.replace(
            base,
            capacity_kwh=cell.battery_kwh,
            max_charge_kw=cell.battery_kw,
            max_discharge_kw=cell.battery_kw,
        )
    site = dataclasses.replace(station.site, grid_import_limit_kw=cell.grid_limit_kw)
    return dataclasses.replace(station, site=site, pv_arrays=arrays, battery=battery)


def _step_hours(flows: pd.DataFrame) -> np.ndarray:
    if "step_s" in flows:
        return flows["step_s"].to_numpy(float) / 3600.0
    return accounting.step_hours(flows.index)


def monthly_demand_charge_krw(station: Station, flows: pd.DataFrame) -> float:
    """The demand charge as billed: each local calendar month's highest step-mean import
    [kW] times the monthly rate, pro rata for the days of the month covered."""
    if flows.empty:
        return 0.0
    tariff = Tariff(station.tariff, station.site.timezone)
    local = pd.DatetimeIndex(flows.index).tz_convert(station.site.timezone)
    frame = pd.DataFrame(
        {"imp": flows["grid_import_kw"].to_numpy(float), "h": _step_hours(flows)}, index=local
    )
    total = 0.0
    for _, month in frame.groupby([local.year, local.month]):
        days = float(month["h"].sum()) / 24.0
        total += float(month["imp"].max()) * days / DAYS_PER_BILLING_MONTH
    return total * tariff.demand_charge_krw_per_kw_month


def run_cell(station: Station, cell: Cell, spec: StudySpec) -> dict[str, Any]:
    """Simulate one cell (no database kept) and return its result row."""
    s = scaled_station(station, cell)
    start = None
    if spec.start is not None:
        tz = ZoneInfo(station.site.timezone)
        start = datetime.combine(spec.start, time(0), tzinfo=tz)
    r = simulate(
        s,
        start=start,
        days=spec.days,
        policy=cell.policy,
        weather=spec.weather,
        seed=cell.seed,
        with_perfect_foresight=spec.with_optimum,
    )
    f = r.flows
    h = _step_hours(f)
    throughput = float(
        (
            (f["battery_charge_kw"].to_numpy(float) + f["battery_discharge_kw"].to_numpy(float)) * h
        ).sum()
    )
    k = r.kpis
    demand = monthly_demand_charge_krw(s, f)
    return {
        **dataclasses.asdict(cell),
        "key": cell.key,
        "energy_delivered_kwh": k.energy_delivered_kwh,
        "unmet_kwh": k.unmet_kwh,
        "renewable_frac": k.renewable_frac,
        "grid_import_kwh": k.grid_import_kwh,
        "grid_export_kwh": k.grid_export_kwh,
        "peak_import_kw": k.peak_import_kw,
        "energy_cost_krw": k.energy_cost_krw,
        "demand_charge_krw": demand,
        "battery_throughput_kwh": throughput,
        "battery_cycles": throughput / 2.0 / cell.battery_kwh if cell.battery_kwh > 0 else 0.0,
        "pv_used_kwh": k.pv_kwh,
        "pv_curtailed_kwh": k.curtailed_kwh,
        "optimum_renewable_frac": (
            r.perfect_foresight.renewable_frac if r.perfect_foresight is not None else float("nan")
        ),
        "days": (r.end - r.start).total_seconds() / 86400.0,
        "wall_s": r.wall_s,
    }
