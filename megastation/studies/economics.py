"""Annual cost of a station size and the Pareto front of renewable share against cost."""

from __future__ import annotations

import numpy as np
import pandas as pd

from megastation.studies.spec import Capex

DAYS_PER_YEAR = 365.0


def annuity_factor(discount_rate: float, lifetime_years: float) -> float:
    """Capital recovery factor [1/year]: the yearly payment per KRW invested."""
    if discount_rate == 0:
        return 1.0 / lifetime_years
    r = discount_rate
    return r / (1.0 - (1.0 + r) ** -lifetime_years)


def annualise(results: pd.DataFrame, capex: Capex) -> pd.DataFrame:
    """``results`` with yearly figures added (KRW/year unless named otherwise):

    ``energy_cost_krw_per_year`` and ``demand_charge_krw_per_year`` (the period scaled to a
    year), ``capex_krw`` (PV, battery energy and power, grid connection), ``capex_krw_per_year``
    (its annuity) and ``annual_cost_krw`` (all three).
    """
    out = results.copy()
    scale = DAYS_PER_YEAR / out["days"].astype(float)
    out["energy_cost_krw_per_year"] = out["energy_cost_krw"] * scale
    out["demand_charge_krw_per_year"] = out["demand_charge_krw"] * scale
    out["capex_krw"] = (
        out["pv_kwp"] * capex.pv_krw_per_kwp
        + out["battery_kwh"] * capex.battery_krw_per_kwh
        + np.where(out["battery_kwh"] > 0, out["battery_kw"], 0.0) * capex.battery_krw_per_kw
        + out["grid_limit_kw"] * capex.grid_krw_per_kw
    )
    out["capex_krw_per_year"] = out["capex_krw"] * annuity_factor(
        capex.discount_rate, capex.lifetime_years
    )
    out["annual_cost_krw"] = (
        out["energy_cost_krw_per_year"]
        + out["demand_charge_krw_per_year"]
        + out["capex_krw_per_year"]
    )
    return out


def pareto_front(cost: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats: none with cost <= and share >=, one strictly."""
    cost = np.asarray(cost, float)
    share = np.asarray(share, float)
    front = np.ones(len(cost), bool)
    for i in range(len(cost)):
        better = (cost <= cost[i]) & (share >= share[i]) & ((cost < cost[i]) | (share > share[i]))
        front[i] = not better.any()
    return front
