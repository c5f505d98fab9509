"""Analyst exports: energy flows, daily summaries and sessions by source, as frames and files.

Each ``*_frame`` function reads the store and returns a pandas DataFrame whose column
names carry their unit (``pv_kw``, ``grid_import_kwh``, ``renewable_frac``,
``cost_krw``); :func:`write_frame` writes one to CSV, or to Parquet when the file
name ends ``.parquet`` (needs pyarrow: ``pip install 'megastation[parquet]'``).
Times are UTC ISO 8601 in ``time_utc`` columns, with the station's local time beside
them in ``time_local``. The CLI (``megastation export ...``) is a thin layer over these.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from megastation.core import accounting
from megastation.core.config import Station
from megastation.reports import plots
from megastation.reports.frames import ExportError, write_frame
from megastation.sim.simulator import daily_kpis
from megastation.store import Store, flows, records


def _times(index: pd.DatetimeIndex, tz: str) -> dict[str, pd.Series]:
    idx = pd.DatetimeIndex(index)
    return {
        "time_utc": pd.Series(idx.tz_convert("UTC").map(lambda t: t.isoformat())),
        "time_local": pd.Series(idx.tz_convert(tz).map(lambda t: t.isoformat())),
    }


def energy_flows_frame(
    store: Store, station: Station, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """One row per step: mean powers [kW], battery SoC, grid limit, PV forecast."""
    f = flows.read_flows(store, start, end)
    out = pd.DataFrame(_times(f.index, station.site.timezone))
    out["step_s"] = f["step_s"].to_numpy()
    for col in flows.FLOW_FIELDS:
        out[col] = f[col].to_numpy()
    out["battery_kw"] = (f["battery_discharge_kw"] - f["battery_charge_kw"]).to_numpy()
    return out


def _allocation(station: Station, f: pd.DataFrame) -> pd.DataFrame:
    b = station.battery
    soc0 = float(f["soc_frac"].iloc[0]) if len(f) and np.isfinite(f["soc_frac"].iloc[0]) else None
    if soc0 is None:
        soc0 = b.initial_soc_frac if b else 0.0
    return accounting.allocate_battery(f, b, soc0)


def sessions_by_source_frame(
    store: Store, station: Station, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Each stored session (transaction) with its energy by source [kWh].

    Source split: the recorded connector power per step (``connector_flows``) shares
    each step's EV energy mix (:func:`megastation.core.accounting.allocate` on the energy
    flows) pro rata (:func:`megastation.core.accounting.attribute_sessions`). ``energy_kwh``
    is the transaction's metered energy; ``attributed_kwh`` the energy the flow record
    saw for it (they agree within the metering resolution).
    """
    txs = records.list_transactions(store, start=start, end=end)
    f = flows.read_flows(store)
    cols = [
        "transaction_id",
        "charger_id",
        "connector_id",
        "id_token",
        "start_time_utc",
        "stop_time_utc",
        "energy_kwh",
        "attributed_kwh",
        "pv_direct_kwh",
        "battery_kwh",
        "grid_kwh",
        "renewable_kwh",
        "renewable_frac",
    ]
    if not txs:
        return pd.DataFrame(columns=cols)
    if len(f):
        alloc = _allocation(station, f)
        wide = flows.session_power_wide(flows.read_connector_flows(store), f.index)
        wide = wide[[c for c in wide.columns if isinstance(c, int)]]
        by = accounting.attribute_sessions(wide, alloc) if wide.shape[1] else pd.DataFrame()
    else:
        by = pd.DataFrame()
    rows = []
    for t in txs:
        a = by.loc[t["id"]] if t["id"] in by.index else None
        rows.append(
            {
                "transaction_id": t["id"],
                "charger_id": t["charger_id"],
                "connector_id": t["connector_id"],
                "id_token": t["id_token"],
                "start_time_utc": t["start_time"],
                "stop_time_utc": t["stop_time"],
                "energy_kwh": t["energy_kwh"],
                "attributed_kwh": float(a["energy_kwh"]) if a is not None else 0.0,
                "pv_direct_kwh": float(a["pv_direct_kwh"]) if a is not None else 0.0,
                "battery_kwh": float(a["battery_kwh"]) if a is not None else 0.0,
                "grid_kwh": float(a["grid_kwh"]) if a is not None else 0.0,
                "renewable_kwh": float(a["renewable_kwh"]) if a is not None else 0.0,
                "renewable_frac": float(a["renewable_frac"]) if a is not None else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def daily_frame(
    store: Store, station: Station, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Per local day: energy, renewable share, grid kWh, peak kW, cost, forecast error, gap.

    ``pv_forecast_nmae_frac`` is the day's mean absolute error of the recorded day-ahead
    PV forecast over daylight steps, normalised by the PV peak power (capacity-normalised
    nMAE); ``pf_*`` columns are the perfect-foresight optimum of the same day when a
    simulation stored it, and ``pf_renewable_gap_frac`` the renewable share it reaches
    beyond the run's. The battery's renewable content is tracked from the first
    recorded step, whatever ``start`` is, so a day's share does not depend on the range.
    """

    f_all = flows.read_flows(store)
    f = flows.read_flows(store, start, end)
    cols = [
        "day",
        "energy_kwh",
        "renewable_frac",
        "grid_import_kwh",
        "peak_import_kw",
        "cost_krw",
        "pv_kwh",
        "pv_forecast_nmae_frac",
        "pf_energy_kwh",
        "pf_renewable_frac",
        "pf_grid_import_kwh",
        "pf_cost_krw",
        "pf_renewable_gap_frac",
    ]
    if f.empty:
        return pd.DataFrame(columns=cols)
    d = daily_kpis(station, f_all, start, end)
    tz = station.site.timezone
    days = f.index.tz_convert(tz).normalize().map(lambda t: t.date().isoformat())
    h = f["step_s"].to_numpy(float) / 3600.0
    pv_total = f["pv_kw"] + f["curtailed_kw"].fillna(0.0)
    g = pd.DataFrame(
        {
            "day": days,
            "pv_kwh": pv_total.to_numpy() * h,
            "abs_err": (f["pv_forecast_kw"] - pv_total).abs().to_numpy(),
            "daylight": (np.maximum(f["pv_forecast_kw"].fillna(0), pv_total) > 0.01).to_numpy(),
        }
    )
    pv_day = g.groupby("day")["pv_kwh"].sum()
    cap = max(station.pv_peak_kw, 1e-9)
    err = g[g["daylight"]].groupby("day")["abs_err"].mean() / cap
    d["pv_kwh"] = d["day"].map(pv_day)
    d["pv_forecast_nmae_frac"] = d["day"].map(err)
    ref = pd.DataFrame(
        store.conn.execute(
            "SELECT day, energy_kwh, renewable_frac, grid_import_kwh, cost_krw "
            "FROM sim_daily_reference WHERE reference = 'perfect_foresight'"
        ).fetchall(),
        columns=["day", "pf_energy_kwh", "pf_renewable_frac", "pf_grid_import_kwh", "pf_cost_krw"],
    )
    d = d.merge(ref, on="day", how="left")
    d["pf_renewable_gap_frac"] = d["pf_renewable_frac"] - d["renewable_frac"]
    return d[cols]


def export_energy_flows(store, station, path, start=None, end=None) -> int:
    """Write :func:`energy_flows_frame`; return the row count."""
    return write_frame(energy_flows_frame(store, station, start, end), path)


def export_sessions_by_source(store, station, path, start=None, end=None) -> int:
    """Write :func:`sessions_by_source_frame`; return the row count."""
    return write_frame(sessions_by_source_frame(store, station, start, end), path)


def export_daily(store, station, path, start=None, end=None) -> int:
    """Write :func:`daily_frame`; return the row count."""
    return write_frame(daily_frame(store, station, start, end), path)


def write_day_plots(
    store: Store, station: Station, day_start: datetime, day_end: datetime, out_dir: str | Path
) -> list[Path]:
    """The three PNGs of :mod:`megastation.reports.plots` for ``[day_start, day_end)``."""

    out = Path(out_dir)
    f = flows.read_flows(store, day_start, day_end)
    if f.empty:
        raise ExportError(f"no energy flows recorded between {day_start} and {day_end}")
    tz = station.site.timezone
    label = pd.Timestamp(day_start).tz_convert(tz).date().isoformat()
    paths = [
        plots.plot_energy_flows(
            f,
            out / "energy-flows.png",
            tz=tz,
            grid_limit_kw=station.site.grid_import_limit_kw,
            title=f"{station.site.name}: energy flows {label}",
        )
    ]
    wide = flows.connector_power_wide(
        flows.read_connector_flows(store, day_start, day_end), f.index
    )
    paths.append(
        plots.plot_connector_power(
            wide, out / "connector-power.png", tz=tz, title=f"Power per connector {label}"
        )
    )
    fc = (
        pd.DataFrame(
            {"p10_kw": f["pv_p10_kw"], "p50_kw": f["pv_forecast_kw"], "p90_kw": f["pv_p90_kw"]},
            index=f.index,
        )
        .astype(float)
        .dropna(how="all")
    )
    actual = f["pv_kw"] + f["curtailed_kw"].fillna(0.0)
    paths.append(
        plots.plot_pv_forecast(
            actual, fc, out / "pv-forecast.png", tz=tz, title=f"PV: forecast vs actual {label}"
        )
    )
    return paths
