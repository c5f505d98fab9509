"""How good were the forecasts: capacity-normalised errors and skill vs smart persistence.

All series are on one regular step grid (interval starts, UTC) in kW. Only *daylight*
steps count: clear-sky PV at least 5 % of the capacity. For each local day and
overall:

- ``nmae`` = mean |f - m| / capacity, ``nrmse`` = sqrt(mean (f - m)²) / capacity,
  ``nbias`` = mean (f - m) / capacity (positive = forecast too high);
- ``skill`` = 1 - RMSE(forecast) / RMSE(smart persistence), on the daylight steps
  where the persistence exists. Smart persistence for 24 h: the PV clear-sky index
  measured 24 h earlier times today's clear-sky PV,
  ``p(t) = m(t - 24 h) / c(t - 24 h) * c(t)``, where ``c(t - 24 h)`` is daylight.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from forecasts.weather import WeatherError, _parse_numbers, _parse_times

MIN_CLEAR_FRAC = 0.05
K_MAX = 1.5

SCORE_COLUMNS = (
    "day",
    "n_steps",
    "nmae",
    "nrmse",
    "nbias",
    "bias_kw",
    "n_persistence",
    "nrmse_persistence",
    "skill",
)


def smart_persistence(
    measured_kw: pd.Series,
    clear_kw: pd.Series,
    capacity_kw: float,
    lag: str | pd.Timedelta = "24h",
) -> pd.Series:
    """Smart-persistence forecast [kW] on ``clear_kw``'s index (NaN where undefined).

    ``p(t) = m(t - lag) / c(t - lag) * c(t)``: the PV clear-sky index measured ``lag``
    earlier, where the sun was up then (clear sky at least 5 % of capacity).
    """
    past = clear_kw.index - pd.Timedelta(lag)
    m_prev = measured_kw.reindex(past).to_numpy(float)
    c_prev = clear_kw.reindex(past).to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(c_prev >= MIN_CLEAR_FRAC * capacity_kw, m_prev / c_prev, np.nan)
    return pd.Series(np.clip(k, 0.0, K_MAX) * clear_kw.to_numpy(float), index=clear_kw.index)


def _metrics(m: np.ndarray, f: np.ndarray, p: np.ndarray, capacity_kw: float) -> dict:
    ok = np.isfinite(m) & np.isfinite(f)
    e = f[ok] - m[ok]
    both = ok & np.isfinite(p)
    row = {
        "n_steps": int(ok.sum()),
        "nmae": float(np.abs(e).mean() / capacity_kw) if e.size else np.nan,
        "nrmse": float(np.sqrt((e**2).mean()) / capacity_kw) if e.size else np.nan,
        "nbias": float(e.mean() / capacity_kw) if e.size else np.nan,
        "bias_kw": float(e.mean()) if e.size else np.nan,
        "n_persistence": int(both.sum()),
        "nrmse_persistence": np.nan,
        "skill": np.nan,
    }
    if both.any():
        rmse_f = np.sqrt(((f[both] - m[both]) ** 2).mean())
        rmse_p = np.sqrt(((p[both] - m[both]) ** 2).mean())
        row["nrmse_persistence"] = float(rmse_p / capacity_kw)
        row["skill"] = float(1.0 - rmse_f / rmse_p) if rmse_p > 0 else np.nan
    return row


def score(
    measured_kw: pd.Series,
    forecast_kw: pd.Series,
    clear_kw: pd.Series,
    capacity_kw: float,
    *,
    tz: str = "UTC",
    persistence_lag: str | pd.Timedelta = "24h",
) -> pd.DataFrame:
    """Scores by local day (``tz``) and ``overall``, one row each (:data:`SCORE_COLUMNS`).

    ``clear_kw`` is the clear-sky PV of the site on the grid; it defines the grid,
    daylight and the smart persistence. ``capacity_kw`` normalises (kWp).
    ``persistence_lag``: how long before each step the reference smart persistence
    read the measured clear-sky index: the forecast's lead plus one step for a
    nowcast (1 h 15 min for a 1 h forecast on 15-min steps), 24 h for day-ahead.
    """
    if capacity_kw <= 0:
        raise ValueError(f"capacity_kw: must be > 0, got {capacity_kw}")
    index = clear_kw.index
    m = measured_kw.reindex(index).to_numpy(float)
    f = forecast_kw.reindex(index).to_numpy(float)
    c = clear_kw.to_numpy(float)
    p = smart_persistence(measured_kw, clear_kw, capacity_kw, lag=persistence_lag).to_numpy(float)
    day = c >= MIN_CLEAR_FRAC * capacity_kw
    m = np.where(day, m, np.nan)
    local_day = index.tz_convert(tz).strftime("%Y-%m-%d")
    rows = []
    for d in pd.unique(np.asarray(local_day)[day]):
        sel = np.asarray(local_day) == d
        rows.append({"day": d, **_metrics(m[sel], f[sel], p[sel], capacity_kw)})
    rows.append({"day": "overall", **_metrics(m, f, p, capacity_kw)})
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


#: Negative power accepted and clipped to 0 (inverter standby draw at night, meter
#: offsets), as a share of the file's largest value; larger negatives are errors
#: (a sign convention the other way round, or another quantity).
NEGATIVE_CLIP_FRAC = 0.05


def read_power_csv(
    path: str | os.PathLike[str], column: str = "pv_ac_kw", *, label: str = "start"
) -> pd.Series:
    """Read a ``time, pv_ac_kw`` CSV (tz-aware ISO 8601 times) into a UTC series [kW].

    ``label``: ``"start"`` (default: each row is a sample, or the mean of the interval
    it starts, as most inverter logs write) or ``"end"`` (energy-meter style: the row
    is the mean of the interval it ends; times are moved back by the file's step).
    Negative values down to ``-NEGATIVE_CLIP_FRAC`` x the file's largest value are
    clipped to 0 (night standby draw); empty cells are skipped. Errors (missing
    column, naive or duplicated times, non-numbers, larger negatives) raise
    :class:`~forecasts.weather.WeatherError` naming the line.
    """
    if label not in ("start", "end"):
        raise WeatherError(f"label: must be start or end, got {label!r}")
    source = str(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise WeatherError(f"{source}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise WeatherError(f"{source}: not a readable CSV: {exc}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    for need in ("time", column):
        if need not in raw.columns:
            raise WeatherError(
                f"{source}: no {need!r} column (columns: {', '.join(raw.columns) or 'none'})"
            )
    times = _parse_times(raw["time"], source)
    values = _parse_numbers(raw[column], column, source)
    if times.has_duplicates:
        i = int(np.argmax(times.duplicated()))
        raise WeatherError(
            f"{source}: line {i + 2}: time {times[i].isoformat()} is duplicated "
            "(a daylight-saving change written without its UTC offset?)"
        )
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    floor = -NEGATIVE_CLIP_FRAC * max(top, 0.0)
    neg = np.flatnonzero(values < floor)
    if neg.size:
        i = int(neg[0])
        raise WeatherError(
            f"{source}: line {i + 2}: column {column!r}: {values[i]:g} is negative beyond "
            f"{floor:g} ({NEGATIVE_CLIP_FRAC:.0%} of the largest value): is the sign "
            "convention reversed?"
        )
    values = np.clip(values, 0.0, None)
    out = pd.Series(values, index=times, name=column).sort_index().dropna()
    if label == "end" and len(out) > 1:
        step = pd.Timedelta(np.median(np.diff(out.index.asi8)), unit="ns")
        out.index = out.index - step
    return out
