"""The study's picture: renewable share into cars against annual cost, Pareto front marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd


def plot_study(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Write a PNG: one point per cell (colour = policy), the Pareto front as a line."""
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    cost_m = table["annual_cost_krw"] / 1e6
    share = 100.0 * table["renewable_frac"]
    for policy, part in table.groupby("policy"):
        ax.scatter(cost_m[part.index], share[part.index], label=policy, s=36, alpha=0.8)
    front = table[table["pareto"]].sort_values("annual_cost_krw")
    ax.plot(
        front["annual_cost_krw"] / 1e6,
        100.0 * front["renewable_frac"],
        color="black",
        lw=1.2,
        ls="--",
        marker="o",
        mfc="none",
        ms=10,
        label="Pareto front",
    )
    mid_m = (cost_m.min() + cost_m.max()) / 2.0
    for _, r in front.iterrows():
        battery = (
            f"{r.battery_kwh:g} kWh/{r.battery_kw:g} kW" if r.battery_kwh > 0 else "no battery"
        )
        right_half = r.annual_cost_krw / 1e6 > mid_m
        ax.annotate(
            f"PV {r.pv_kwp:g} kWp, {battery}, grid {r.grid_limit_kw:g} kW",
            (r.annual_cost_krw / 1e6, 100.0 * r.renewable_frac),
            textcoords="offset points",
            xytext=(-8, -12) if right_half else (8, -12),
            ha="right" if right_half else "left",
            fontsize=7,
        )
    ax.set_xlabel("annual cost [million KRW/year] (energy + demand charge + capital annuity)")
    ax.set_ylabel("renewable share of energy into cars [%]")
    ax.set_title(title or "Station sizing study")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p
