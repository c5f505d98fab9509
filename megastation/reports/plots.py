"""PNG pictures of a day for people: energy flows, per-connector power, PV forecast vs actual.

Pure functions from DataFrames (see :mod:`megastation.core.accounting` for the energy-flow
frame) to files; matplotlib's Agg backend, so no screen is needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

_COLOURS = {
    "pv": "#f2b701",
    "battery": "#3a9d5d",
    "grid": "#8c8c8c",
    "ev": "#1f5fbf",
    "base": "#b07aa1",
    "export": "#e17c05",
    "curtailed": "#f7dc6f",
}


def _local(index: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    return index.tz_convert(tz)


def _finish(fig: plt.Figure, ax: plt.Axes, tz: str, path: Path) -> Path:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_energy_flows(
    flows: pd.DataFrame,
    path: str | Path,
    *,
    tz: str,
    grid_limit_kw: float | None = None,
    title: str = "Energy flows",
) -> Path:
    """Stacked supply (PV, battery, grid) against demand (cars, site, battery, export) with SoC."""
    t = _local(flows.index, tz)
    col = lambda name: flows[name] if name in flows else pd.Series(0.0, index=flows.index)  # noqa: E731
    fig, ax = plt.subplots(figsize=(11, 5.5))
    ax.stackplot(
        t,
        col("pv_kw"),
        col("battery_discharge_kw"),
        col("grid_import_kw"),
        labels=["PV", "battery discharge", "grid import"],
        colors=[_COLOURS["pv"], _COLOURS["battery"], _COLOURS["grid"]],
        alpha=0.85,
        step="post",
    )
    ax.stackplot(
        t,
        -col("ev_kw"),
        -col("base_load_kw"),
        -col("battery_charge_kw"),
        -col("grid_export_kw"),
        labels=["cars", "site load", "battery charge", "export"],
        colors=[_COLOURS["ev"], _COLOURS["base"], "#a6d8b5", _COLOURS["export"]],
        alpha=0.85,
        step="post",
    )
    if "curtailed_kw" in flows and flows["curtailed_kw"].abs().sum() > 0:
        ax.step(
            t,
            col("pv_kw") + col("curtailed_kw"),
            where="post",
            color="#c9a100",
            lw=1,
            ls=":",
            label="PV available",
        )
    if grid_limit_kw is not None:
        ax.axhline(
            grid_limit_kw, color="red", lw=1.2, ls="--", label=f"grid limit {grid_limit_kw:g} kW"
        )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("power [kW]  (supply +, demand −)")
    ax.set_title(title)
    if "soc_frac" in flows:
        ax2 = ax.twinx()
        ax2.plot(t, 100 * flows["soc_frac"], color="black", lw=1.3, label="battery SoC")
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("battery SoC [%]")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=8, frameon=False)
    return _finish(fig, ax, tz, Path(path))


def plot_connector_power(
    connector_kw: pd.DataFrame, path: str | Path, *, tz: str, title: str = "Power per connector"
) -> Path:
    """One line per connector (columns), mean kW per step."""
    t = _local(connector_kw.index, tz)
    fig, ax = plt.subplots(figsize=(11, 5))
    for name in connector_kw.columns:
        ax.step(t, connector_kw[name], where="post", lw=1.2, label=str(name))
    ax.set_ylabel("power [kW]")
    ax.set_title(title)
    if len(connector_kw.columns):
        ax.legend(loc="upper left", fontsize=8, ncol=3)
    return _finish(fig, ax, tz, Path(path))


def plot_pv_forecast(
    actual_kw: pd.Series,
    forecast: pd.DataFrame,
    path: str | Path,
    *,
    tz: str,
    title: str = "PV: forecast vs actual",
) -> Path:
    """Actual PV against the forecast's P50 line and P10-P90 band (columns p10_kw, p50_kw, p90_kw)."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    tf = _local(forecast.index, tz)
    if {"p10_kw", "p90_kw"} <= set(forecast.columns):
        ax.fill_between(
            tf,
            forecast["p10_kw"],
            forecast["p90_kw"],
            color=_COLOURS["pv"],
            alpha=0.25,
            label="forecast P10-P90",
        )
    if "p50_kw" in forecast:
        ax.plot(tf, forecast["p50_kw"], color="#c98a00", lw=1.5, ls="--", label="forecast P50")
    ax.plot(_local(actual_kw.index, tz), actual_kw, color="black", lw=1.3, label="actual")
    ax.set_ylabel("PV power [kW]")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _finish(fig, ax, tz, Path(path))
