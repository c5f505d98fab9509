"""Where each kWh came from: PV direct, battery (and how green the battery was), grid.

Input is an *energy-flow frame*: one row per step (index: step start, tz-aware UTC)
with mean powers over the step in kW:

=====================  ====================================================
``pv_kw``              PV power used on site or exported (after curtailment)
``curtailed_kw``       PV power available but not taken (optional)
``ev_kw``              all charging power
``base_load_kw``       other site load (optional, 0)
``battery_charge_kw``  power into the battery (AC side)
``battery_discharge_kw`` power out of the battery (AC side)
``grid_import_kw``     power bought
``grid_export_kw``     power sold
``soc_frac``           battery state of charge at the step start (optional)
=====================  ====================================================

Each step obeys ``pv + discharge + import = ev + base + charge + export``.

Allocation rule, step by step (a documented convention, not physics — electrons do
not carry labels). A step's charge and discharge are netted first (their order within
the step is unknown). Then: PV serves the loads (EV and base load, pro rata) first, then
charges the battery, then is exported. The battery serves what load remains, then
the grid covers the rest, including any battery charging PV did not cover. The
battery keeps a *renewable content*: PV energy charged in adds to it, grid energy
does not, and energy discharged takes renewable and grid energy in the proportion
stored. EV energy is renewable when it came from PV directly or from the renewable
part of the battery.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FLOW_COLUMNS = (
    "pv_kw",
    "ev_kw",
    "battery_charge_kw",
    "battery_discharge_kw",
    "grid_import_kw",
    "grid_export_kw",
)


def frame_step_hours(frame: pd.DataFrame) -> np.ndarray:
    """Length of each row's step [h]: its ``step_s`` (or ``step_h``) column when present.

    A stored flow frame says how long each step was; only a frame without one falls
    back to the gaps between row starts (:func:`step_hours`), which would stretch a
    step over a gap in the record.
    """
    if "step_s" in frame.columns:
        return frame["step_s"].to_numpy(float) / 3600.0
    if "step_h" in frame.columns:
        return frame["step_h"].to_numpy(float)
    return step_hours(frame.index)


def step_hours(index: pd.DatetimeIndex, default_h: float = 0.25) -> np.ndarray:
    """Length of each step [h]: the gap to the next start; the last repeats the previous."""
    if len(index) == 0:
        return np.zeros(0)
    if len(index) == 1:
        return np.array([default_h])
    gaps = np.diff(index.tz_convert(None).to_numpy()) / np.timedelta64(1, "h")
    return np.append(gaps, gaps[-1])


def allocate(
    flows: pd.DataFrame,
    *,
    charge_efficiency: float = 1.0,
    discharge_efficiency: float = 1.0,
    initial_stored_kwh: float = 0.0,
    initial_renewable_frac: float = 0.0,
) -> pd.DataFrame:
    """Split every step's EV energy by source [kWh per step].

    Step lengths come from a ``step_s`` column when the frame has one (a stored flow
    record), else from the gaps between rows. Returns a frame on the same index with
    ``step_h``, ``ev_kwh``, ``ev_pv_kwh`` (PV direct),
    ``ev_battery_kwh`` (all battery energy into cars), ``ev_battery_renewable_kwh``
    (its renewable part), ``ev_grid_kwh`` (grid direct), ``ev_renewable_kwh`` and
    ``ev_nonrenewable_kwh`` (grid direct plus the battery's grid part; the two add up
    to ``ev_kwh``), and ``battery_renewable_frac`` at each step's end.
    """
    missing = [c for c in FLOW_COLUMNS if c not in flows.columns]
    if missing:
        raise ValueError(f"energy flows: missing column(s) {', '.join(missing)}")
    h = frame_step_hours(flows)
    pv = flows["pv_kw"].to_numpy(float) * h
    ev = flows["ev_kw"].to_numpy(float) * h
    base = (flows["base_load_kw"].to_numpy(float) if "base_load_kw" in flows else 0 * pv) * h
    charge = flows["battery_charge_kw"].to_numpy(float) * h
    discharge = flows["battery_discharge_kw"].to_numpy(float) * h
    # A step that both charged and discharged (a battery following cars minute by minute)
    # does not say in which order: net the two, so PV that passed through the battery
    # within the step counts as PV into the load instead of grey in, green out to nothing.
    through = np.minimum(charge, discharge)
    charge = charge - through
    discharge = discharge - through

    load = ev + base
    ev_share = np.divide(ev, load, out=np.zeros_like(ev), where=load > 1e-12)
    pv_to_load = np.minimum(pv, load)
    pv_to_batt = np.minimum(pv - pv_to_load, charge)
    batt_to_load = np.minimum(discharge, load - pv_to_load)
    ev_pv = pv_to_load * ev_share
    ev_batt = batt_to_load * ev_share

    # The battery's renewable content is a running state: a short loop over steps
    # (cheap: a year of 15-minute steps is 35,040 iterations of scalar arithmetic).
    n = len(h)
    renew_frac_end = np.empty(n)
    ev_batt_renew = np.empty(n)
    stored = max(initial_stored_kwh, 0.0)
    renewable = stored * initial_renewable_frac
    for i in range(n):
        frac = renewable / stored if stored > 1e-9 else initial_renewable_frac
        ev_batt_renew[i] = ev_batt[i] * frac
        out_kwh = discharge[i] / discharge_efficiency
        stored_in = charge[i] * charge_efficiency
        renewable += pv_to_batt[i] * charge_efficiency - out_kwh * frac
        stored += stored_in - out_kwh
        if stored <= 1e-9:
            stored, renewable = 0.0, 0.0
        renewable = min(max(renewable, 0.0), stored)
        renew_frac_end[i] = renewable / stored if stored > 1e-9 else frac

    ev_renew = ev_pv + ev_batt_renew
    return pd.DataFrame(
        {
            "step_h": h,
            "ev_kwh": ev,
            "ev_pv_kwh": ev_pv,
            "ev_battery_kwh": ev_batt,
            "ev_battery_renewable_kwh": ev_batt_renew,
            "ev_grid_kwh": ev - ev_pv - ev_batt,
            "ev_renewable_kwh": ev_renew,
            "ev_nonrenewable_kwh": ev - ev_renew,
            "battery_renewable_frac": renew_frac_end,
        },
        index=flows.index,
    )


def allocate_battery(
    flows: pd.DataFrame,
    battery: object | None,
    soc_frac: float,
    renewable_frac: float = 0.0,
) -> pd.DataFrame:
    """:func:`allocate` with a battery's efficiencies and its content at the first step:
    ``soc_frac`` of its ``capacity_kwh``, ``renewable_frac`` of that from PV. ``battery``
    is a station's battery config or a dispatch ``BatteryState``; None: no battery."""
    if battery is None:
        return allocate(flows, initial_renewable_frac=renewable_frac)
    return allocate(
        flows,
        charge_efficiency=battery.charge_efficiency,
        discharge_efficiency=battery.discharge_efficiency,
        initial_stored_kwh=soc_frac * battery.capacity_kwh,
        initial_renewable_frac=renewable_frac,
    )


def renewable_share(allocation: pd.DataFrame) -> float:
    """Share of EV energy that was renewable [0..1]; NaN when no EV energy flowed."""
    ev = float(allocation["ev_kwh"].sum())
    return float(allocation["ev_renewable_kwh"].sum()) / ev if ev > 1e-9 else float("nan")


def attribute_sessions(session_kw: pd.DataFrame, allocation: pd.DataFrame) -> pd.DataFrame:
    """Each session's energy by source [kWh].

    ``session_kw`` has one column per session (mean kW per step, same index as the
    allocation). Every step's EV energy mix is shared pro rata among the sessions
    charging in it. Returns one row per session: ``energy_kwh``, ``pv_direct_kwh``,
    ``battery_kwh``, ``grid_kwh``, ``renewable_kwh``, ``renewable_frac``.
    """
    h = frame_step_hours(allocation)
    kwh = session_kw.reindex(allocation.index).fillna(0.0).to_numpy(float) * h[:, None]
    total = kwh.sum(axis=1)
    weight = np.divide(kwh, total[:, None], out=np.zeros_like(kwh), where=total[:, None] > 1e-12)
    parts = {
        "pv_direct_kwh": allocation["ev_pv_kwh"],
        "battery_kwh": allocation["ev_battery_kwh"],
        "grid_kwh": allocation["ev_grid_kwh"],
        "renewable_kwh": allocation["ev_renewable_kwh"],
    }
    out = pd.DataFrame(index=session_kw.columns)
    out["energy_kwh"] = kwh.sum(axis=0)
    for name, col in parts.items():
        out[name] = (weight * col.to_numpy(float)[:, None]).sum(axis=0)
    out["renewable_frac"] = np.divide(
        out["renewable_kwh"].to_numpy(),
        out["energy_kwh"].to_numpy(),
        out=np.full(len(out), np.nan),
        where=out["energy_kwh"].to_numpy() > 1e-9,
    )
    out.index.name = "session_id"
    return out
