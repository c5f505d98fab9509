"""Fit and check the nowcast blend and the P10/P90 bands by lead time, on past data.

Everything works on one regular step grid (numpy arrays of equal length, kW):
``measured`` PV, ``clear`` (clear-sky PV), ``raw`` (the forecast before the nowcast:
from a weather forecast, or clear sky x a recent clear-sky index). A forecast is
issued at the start of step ``i``; its step ``i + h`` has lead ``(h + 0.5) x step``
to the midpoint, as :func:`forecasts.forecast.forecast_pv` counts it.

- *Smart persistence* for that lead: the PV clear-sky index of the last step measured
  at the issue time, ``m[i-1] / c[i-1]``, times ``c[i+h]`` (what ``forecast score``
  compares with).
- *Nowcast*: ``w(lead) k c + (1 - w(lead)) raw`` with ``k`` the measured index over
  the last ``window`` steps (:mod:`forecasts.nowcast`); :func:`fit_blend` picks
  ``w`` per lead by least squares, clipped to [0, 1] (``w = 1`` is persistence, so
  on the fitting days the blend is never worse than it).
- *Bands*: :func:`fit_band_table` takes the 10th/90th percentiles of
  ``(m - p50) / c`` on daylight steps per lead and per regime of ``p50 / c``
  (:func:`forecasts.bands.regime`) where the nowcast applied, and of ``(m - raw) / c``
  per regime for the scalars used without one; :func:`band_limits` applies them as
  :func:`forecasts.forecast.forecast_pv` does.

Fit on some days, check on others (:func:`evaluate`); benchmarks/forecast.py does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasts import bands as _bands

#: Daylight: clear-sky PV at least this share of the capacity (as in scoring).
MIN_CLEAR_FRAC = 0.05
K_MAX = 1.3


@dataclass(frozen=True)
class Issues:
    """Forecast issues on a grid, as ``(n_issues, n_leads)`` matrices (see module)."""

    lead_h: np.ndarray  # (n_leads,) lead to the step midpoint [h]
    measured: np.ndarray  # m[i + h]
    clear: np.ndarray  # c[i + h]
    raw: np.ndarray  # raw[i + h]
    k_meas: np.ndarray  # (n_issues, 1) nowcast index, NaN when too little sun
    persistence: np.ndarray  # smart persistence, NaN where undefined
    daylight: np.ndarray  # bool, target step in daylight
    season: np.ndarray | None = None  # season measure of the target step (bands.season)


def window_index(m: np.ndarray, c: np.ndarray, window: int, capacity_kw: float) -> np.ndarray:
    """Nowcast index at the start of each step: energy ratio over the ``window`` steps
    before it (NaN where the window's clear sky averages under 5 % of capacity)."""
    cm = np.concatenate([[0.0], np.cumsum(np.nan_to_num(m))])
    cc = np.concatenate([[0.0], np.cumsum(c)])
    i = np.arange(len(m))
    lo = np.clip(i - window, 0, None)
    em, ec = cm[i] - cm[lo], cc[i] - cc[lo]
    ok = (i >= window) & (ec >= MIN_CLEAR_FRAC * capacity_kw * window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, np.clip(em / ec, 0.0, K_MAX), np.nan)


def recent_index(
    measured: np.ndarray, clear: np.ndarray, capacity_kw: float, n_back: int, min_steps: int = 16
) -> np.ndarray:
    """The PV clear-sky index known at the start of each step: measured over clear-sky
    energy on the daylight steps of the ``n_back`` steps before (as the station's
    weather feed computes it from recorded flows); 1 with fewer than ``min_steps``."""
    m, c = np.asarray(measured, float), np.asarray(clear, float)
    day = c >= MIN_CLEAR_FRAC * capacity_kw
    cm = np.concatenate([[0.0], np.cumsum(np.where(day, np.nan_to_num(m), 0.0))])
    cc = np.concatenate([[0.0], np.cumsum(np.where(day, c, 0.0))])
    cn = np.concatenate([[0], np.cumsum(day)])
    i = np.arange(len(m))
    lo = np.clip(i - n_back, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.clip((cm[i] - cm[lo]) / (cc[i] - cc[lo]), 0.0, K_MAX)
    return np.where(cn[i] - cn[lo] >= min_steps, k, 1.0)


def issues(
    measured: np.ndarray,
    clear: np.ndarray,
    raw: np.ndarray | None,
    capacity_kw: float,
    *,
    n_leads: int,
    step_h: float = 0.25,
    window: int = 4,
    issue_mask: np.ndarray | None = None,
    raw_index: np.ndarray | None = None,
    season: np.ndarray | None = None,
) -> Issues:
    """Every issue time ``i`` (where ``issue_mask``) with ``n_leads`` steps ahead.

    ``raw``: the raw forecast per step; or ``raw_index``: an index known at each issue
    time, the raw forecast being ``raw_index[i] x clear`` (clear sky x recent index).
    ``season``: the season measure of each step (:func:`forecasts.bands.season`).
    """
    m, c = np.asarray(measured, float), np.asarray(clear, float)
    r = c if raw is None else np.asarray(raw, float)
    n = len(m)
    i = np.arange(1, n - n_leads)
    if issue_mask is not None:
        i = i[np.asarray(issue_mask, bool)[i]]
    h = np.arange(n_leads)
    j = i[:, None] + h[None, :]
    k = window_index(m, c, window, capacity_kw)[i][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        k_last = np.where(
            c[i - 1] >= MIN_CLEAR_FRAC * capacity_kw, np.clip(m[i - 1] / c[i - 1], 0, 1.5), np.nan
        )
    return Issues(
        lead_h=(h + 0.5) * step_h,
        measured=m[j],
        clear=c[j],
        raw=r[j] if raw_index is None else np.asarray(raw_index, float)[i][:, None] * c[j],
        k_meas=k,
        persistence=k_last[:, None] * c[j],
        daylight=c[j] >= MIN_CLEAR_FRAC * capacity_kw,
        season=None if season is None else np.asarray(season, float)[j],
    )


def nowcast(x: Issues, w: np.ndarray) -> np.ndarray:
    """The blended forecast for weights ``w`` per lead (raw where no index)."""
    kc = x.k_meas * x.clear
    return np.where(np.isfinite(kc), w[None, :] * kc + (1 - w[None, :]) * x.raw, x.raw)


def fit_blend(x: Issues) -> np.ndarray:
    """Least-squares weight of the measured index per lead, in [0, 1]."""
    kc = x.k_meas * x.clear
    ok = x.daylight & np.isfinite(kc) & np.isfinite(x.measured)
    d, e = np.where(ok, kc - x.raw, 0.0), np.where(ok, x.measured - x.raw, 0.0)
    num, den = (d * e).sum(axis=0), (d * d).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(den > 0, num / den, 0.0), 0.0, 1.0)


def _quantile_rows(
    e: np.ndarray,
    on: np.ndarray,
    r: np.ndarray,
    n_regimes: int,
    min_n: int,
    fallback: np.ndarray | None = None,
):
    """Pooled and per-regime (10th, 90th) percentiles of ``e[on]``, one column at a time
    (``e``, ``on``, ``r`` 2-D): ``(q10, q90)`` pooled per column and ``(n_regimes, n_cols)``
    per regime, a regime with fewer than ``min_n`` samples taking the pooled values (or
    ``fallback[:, j % len(fallback[0])]``, e.g. its regime over all seasons)."""
    n_cols = e.shape[1]
    pooled = np.zeros((2, n_cols))
    by = np.zeros((2, n_regimes, n_cols))
    for h in range(n_cols):
        ok = on[:, h]
        if ok.sum() < min_n:  # too few: hold the previous lead's
            pooled[:, h], by[:, :, h] = pooled[:, h - 1], by[:, :, h - 1]
            continue
        pooled[:, h] = _bands._percentiles(e[ok, h])
        for j in range(n_regimes):
            sel = ok & (r[:, h] == j)
            if sel.sum() >= min_n:
                by[:, j, h] = _bands._percentiles(e[sel, h])
            else:
                by[:, j, h] = (
                    pooled[:, h] if fallback is None else fallback[:, j % fallback.shape[1], h]
                )
    return pooled, by


def _class_rows(e, on, p, clear, season, edges, season_edges, min_n):
    """:func:`_quantile_rows` by regime, then, with ``season_edges``, by season x regime
    (season-major) with a sparse cell taking its regime's values over all seasons."""
    n_reg = len(edges) + 1
    pooled, by = _quantile_rows(e, on, _bands.regime(p, clear, edges), n_reg, min_n)
    if not season_edges:
        return pooled, by
    r = _bands.band_class(p, clear, edges, season, tuple(season_edges))
    return _quantile_rows(e, on, r, n_reg * (len(season_edges) + 1), min_n, fallback=by)


def fit_band_table(
    x: Issues,
    p50: np.ndarray,
    *,
    edges: tuple[float, ...] = _bands.REGIME_EDGES,
    season_edges: tuple[float, ...] = (),
    min_n: int = 20,
    source: str = "fitted",
    nodes_h: tuple[float, ...] | None = None,
) -> _bands.Bands:
    """Bands by lead and regime on the issues where the nowcast applied (a measured
    index), scalars by regime from the raw forecast's errors (used without one); the
    rows by lead kept at ``nodes_h`` [h] (interpolated) or at every lead of ``x``. With
    ``season_edges`` each season bin of ``x.season`` has its own regimes (season-major)."""
    day = x.daylight & np.isfinite(x.measured)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = (x.measured - p50) / x.clear
        e_raw = (x.measured - x.raw) / x.clear
    has_k = np.broadcast_to(np.isfinite(x.k_meas), day.shape)
    lead, by_lead = _class_rows(e, day & has_k, p50, x.clear, x.season, edges, season_edges, min_n)
    leads = x.lead_h
    if nodes_h is not None:
        leads = np.asarray(nodes_h, float)
        lead = np.array([np.interp(leads, x.lead_h, v) for v in lead])
        by_lead = np.array([[np.interp(leads, x.lead_h, v) for v in q] for q in by_lead])

    def flat(v):
        return None if v is None else v.reshape(-1, 1)

    raw, by_raw = _class_rows(
        flat(e_raw),
        flat(day),
        flat(x.raw),
        flat(x.clear),
        flat(x.season),
        edges,
        season_edges,
        min_n,
    )

    def t(v):
        return tuple(round(float(q), 4) for q in v)

    return _bands.Bands(
        q10=float(raw[0, 0]), q90=float(raw[1, 0]), n_samples=int(day.sum()), source=source,
        leads_h=t(leads), q10_by_lead=t(lead[0]), q90_by_lead=t(lead[1]),
        regime_edges=tuple(edges),
        q10_by_regime=t(by_raw[0, :, 0]), q90_by_regime=t(by_raw[1, :, 0]),
        q10_by_regime_lead=tuple(t(row) for row in by_lead[0]),
        q90_by_regime_lead=tuple(t(row) for row in by_lead[1]),
        season_edges=tuple(season_edges),
    )  # fmt: skip


def band_limits(
    x: Issues, p50: np.ndarray, bands: _bands.Bands, limit_kw: float
) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 of each issue as :func:`forecasts.forecast.forecast_pv` makes them:
    by lead and regime where the nowcast applied, by regime without it."""
    has_k = np.isfinite(x.k_meas[:, 0])
    p10, p90 = np.empty_like(p50), np.empty_like(p50)
    for rows, lead in ((has_k, x.lead_h), (~has_k, None)):
        if rows.any():
            lead_rows = None if lead is None else np.broadcast_to(lead, p50[rows].shape)
            season = None if x.season is None else x.season[rows]
            p10[rows], p90[rows] = _bands.apply_bands(
                p50[rows], x.clear[rows], limit_kw, bands, lead_rows, season
            )
    return p10, p90


def evaluate(
    x: Issues, p50: np.ndarray, p10: np.ndarray, p90: np.ndarray, capacity_kw: float
) -> dict[str, np.ndarray]:
    """Per lead: nRMSE of the forecast and of smart persistence on the steps where
    both exist (daylight, an index measured), skill, and P10-P90 coverage (daylight)."""
    both = x.daylight & np.isfinite(x.persistence) & np.isfinite(x.k_meas)
    f_err = np.where(both, p50 - x.measured, 0.0)
    p_err = np.where(both, x.persistence - x.measured, 0.0)
    n = both.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rmse_f = np.sqrt((f_err**2).sum(axis=0) / n)
        rmse_p = np.sqrt((p_err**2).sum(axis=0) / n)
        inside = (x.measured >= p10 - 1e-9) & (x.measured <= p90 + 1e-9)
        cov = (inside & x.daylight).sum(axis=0) / x.daylight.sum(axis=0)
    return {
        "lead_h": x.lead_h,
        "n": n,
        "nrmse": rmse_f / capacity_kw,
        "nrmse_persistence": rmse_p / capacity_kw,
        "skill": 1.0 - rmse_f / rmse_p,
        "coverage": cov,
    }
