"""re100 against cost, scored by the reported (pro-rata) accounting on a hand-made day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from megastation.core import accounting
from megastation.dispatch import BatteryState, GridState, Problem, SessionNeed, TimeGrid, solve

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
N = 24
ETA = 0.95


def _car(sid: str, connector: int, arr_h: int, dep_h: int, kwh: float) -> SessionNeed:
    return SessionNeed(sid, "C1", connector, T0 + arr_h * H, T0 + dep_h * H, kwh, 50.0)


def _problem(policy: str) -> Problem:
    hours = np.arange(N)
    pv = np.clip(100.0 * np.sin(np.pi * (hours - 7) / 10), 0.0, None)  # 08:00-16:00
    price = np.where((hours < 7) | (hours >= 22), 80.0, 150.0)
    return Problem(
        grid=TimeGrid(T0, N, 3600),
        pv_kw=pv,
        site_load_kw=np.full(N, 5.0),
        grid_state=GridState(
            import_limit_kw=200.0,
            export_limit_kw=0.0,
            import_price_krw_per_kwh=price,
            demand_charge_krw_per_kw=200.0,
        ),
        sessions=(
            _car("night", 1, 0, 5, 80.0),  # the battery holds grid energy at midnight
            _car("noon", 2, 10, 14, 120.0),
            _car("evening", 3, 18, 22, 120.0),
        ),
        battery=BatteryState(
            capacity_kwh=200.0,
            soc_frac=0.5,
            soc_min_frac=0.1,
            soc_max_frac=0.95,
            max_charge_kw=80.0,
            max_discharge_kw=80.0,
            charge_efficiency=ETA,
            discharge_efficiency=ETA,
            renewable_frac=0.0,
        ),
        policy=policy,
    )


def _reported_share(plan) -> float:
    """Renewable share of the plan's car energy by accounting.allocate (as reported)."""
    p = plan.problem
    frame = pd.DataFrame(
        {
            "step_s": p.grid.durations_s,
            "pv_kw": plan.pv_used_kw,
            "ev_kw": plan.session_kw.sum(axis=0),
            "base_load_kw": p.site_load_kw - plan.load_shed_kw,
            "battery_charge_kw": plan.battery_charge_kw,
            "battery_discharge_kw": plan.battery_discharge_kw,
            "grid_import_kw": plan.grid_import_kw,
            "grid_export_kw": plan.grid_export_kw,
        },
        index=p.grid.times,
    )
    alloc = accounting.allocate(
        frame,
        charge_efficiency=ETA,
        discharge_efficiency=ETA,
        initial_stored_kwh=p.battery.soc_frac * p.battery.capacity_kwh,
        initial_renewable_frac=p.battery.renewable_frac,
    )
    return accounting.renewable_share(alloc)


def test_re100_reported_share_not_below_cost_with_grid_charged_battery():
    re100, cost = solve(_problem("re100")), solve(_problem("cost"))
    assert re100.unmet_kwh.sum() <= cost.unmet_kwh.sum() + 1e-6
    assert (re100.grid_import_kw <= 200.0 + 1e-6).all()
    share_re100, share_cost = _reported_share(re100), _reported_share(cost)
    assert share_re100 >= share_cost - 1e-6, (share_re100, share_cost)


@pytest.mark.xfail(
    strict=True,
    reason="open (dispatch.md, 'Reported share vs the LP's labels'): the LP's labelled "
    "pools leave the pre-horizon grey in the battery and count every stored PV kWh as "
    "green; pro rata, part of that green stays behind in what is left (measured 0.75 vs 0.71)",
)
def test_lp_renewable_figure_matches_reported_share():
    re100 = solve(_problem("re100"))
    share_re100 = _reported_share(re100)
    lp_share = re100.objective_parts["renewable_to_ev_kwh"] / re100.delivered_kwh.sum()
    assert lp_share <= share_re100 + 1e-6, (lp_share, share_re100)
