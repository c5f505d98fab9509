"""Nowcast correction: blend the panels' last measurements with the raw forecast, by lead.

The measured *PV clear-sky index* ``k_meas`` is the energy measured over the last
``window`` (one 15-min step) divided by the modelled clear-sky PV energy over the same
steps. Each forecast step ``t`` is then, per array,

    p(t) = w(lead) * k_meas * p_clear(t) + (1 - w(lead)) * p_raw(t)

with ``lead`` from the issue time to the step midpoint. ``w = 1`` is smart persistence
of the index; ``w = 0`` the raw forecast (from a weather forecast, or clear sky x the
recent index). ``w(lead)`` was fitted by least squares per lead on held-out-checked
data (:mod:`forecasts.calibration`, benchmarks/forecast.py ``--fit``; see
forecasts/README.md): one table with a weather forecast, one without (a weather
forecast earns weight sooner). Linear between the nodes, held after the last.
No correction is made when the window holds too little clear-sky energy (dawn,
night, no measurements): then the raw forecast stands.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Measurement window [h] (one 15-min step: it beat 30 and 60 min at every lead on
#: the fitting days, for both tables), and the bounds of the measured index.
WINDOW_H = 0.25
K_MIN, K_MAX = 0.0, 1.3
#: Minimum mean clear-sky PV in the window, as a fraction of the AC capacity.
MIN_CLEAR_FRAC = 0.05

#: Blend weight of the measured index by lead [h] to the step midpoint.
BLEND_LEADS_H = (0.125, 0.375, 0.625, 0.875, 1.125, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 24.0)
BLEND_WEATHER = (0.94, 0.82, 0.7, 0.61, 0.54, 0.48, 0.43, 0.36, 0.31, 0.27, 0.25, 0.21, 0.1, 0.0)
BLEND_CLEARSKY = (0.99, 0.97, 0.93, 0.9, 0.86, 0.82, 0.78, 0.7, 0.63, 0.56, 0.49, 0.35, 0.35, 0.0)


def step_means(measured_kw: pd.Series, index: pd.DatetimeIndex, step: pd.Timedelta) -> np.ndarray:
    """Mean of ``measured_kw`` [kW] over each interval ``[t, t + step)`` of ``index``.

    NaN where an interval has no measurement. ``measured_kw`` must be tz-aware.
    """
    if not isinstance(measured_kw.index, pd.DatetimeIndex) or measured_kw.index.tz is None:
        raise ValueError("measured_kw: index must be timezone-aware timestamps")
    n = len(index)
    if not n:
        return np.full(n, np.nan)
    return step_means_ns(
        epoch_ns(measured_kw.index), measured_kw.to_numpy(float), epoch_ns(index[:1])[0],
        pd.Timedelta(step).value, n,
    )  # fmt: skip


def epoch_ns(times: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) of tz-aware ``times``, whatever their unit."""
    return times.as_unit("ns").asi8


def step_means_ns(
    t_ns: np.ndarray, measured_kw: np.ndarray, t0_ns: int, step_ns: int, n: int
) -> np.ndarray:
    """:func:`step_means` on arrays: samples at ``t_ns`` (epoch ns) of ``measured_kw``
    [kW, NaN = none] over the ``n`` intervals of ``step_ns`` from ``t0_ns``."""
    keep = ~np.isnan(measured_kw)
    if not keep.any() or not n:
        return np.full(n, np.nan)
    bins = (t_ns[keep] - t0_ns) // step_ns
    ok = (bins >= 0) & (bins < n)
    counts = np.bincount(bins[ok], minlength=n)
    sums = np.bincount(bins[ok], measured_kw[keep][ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def measured_clear_sky_index(
    measured_kw: np.ndarray, clear_kw: np.ndarray, capacity_kw: float
) -> float | None:
    """Energy-weighted PV clear-sky index over the window, or None if too little sun."""
    ok = np.isfinite(measured_kw)
    if not ok.any():
        return None
    clear = clear_kw[ok].sum()
    if clear < MIN_CLEAR_FRAC * capacity_kw * ok.sum():
        return None
    return float(np.clip(measured_kw[ok].sum() / clear, K_MIN, K_MAX))


def blend_weights(lead_h: np.ndarray, *, with_weather: bool = True) -> np.ndarray:
    """Weight of the measured index at each lead [h] (to the step midpoint)."""
    table = BLEND_WEATHER if with_weather else BLEND_CLEARSKY
    return np.interp(np.clip(lead_h, 0.0, None), BLEND_LEADS_H, table)


def nowcast(
    raw_kw: np.ndarray,
    clear_kw: np.ndarray,
    limits_kw: np.ndarray,
    lead_h: np.ndarray,
    k_meas: float | None,
    *,
    with_weather: bool = True,
) -> np.ndarray:
    """Correct per-array forecasts ``raw_kw`` ``(n_steps, n_arrays)`` [kW] (see module).

    ``clear_kw`` is the clear-sky PV of the same shape, ``limits_kw`` the AC limit per
    array, ``lead_h`` the lead of each step. Returns ``raw_kw`` unchanged if
    ``k_meas`` is None.
    """
    if k_meas is None:
        return raw_kw
    w = blend_weights(lead_h, with_weather=with_weather)[:, None]
    out = w * k_meas * clear_kw + (1.0 - w) * raw_kw
    return np.clip(out, 0.0, limits_kw)
