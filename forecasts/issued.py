"""Issued forecasts in the store, so their accuracy can be scored later.

One row per issued forecast in ``pv_forecasts`` (migration ``0200_pv_forecasts``):
issue time, first step, step, and the series as JSON arrays [kW, 3 decimals].
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd

from forecasts.forecast import FORECAST_COLUMNS, forecast_pv
from megastation.core.config import Station
from megastation.store import Store, iso

_SERIES = {
    "pv_ac_kw": "p50_kw",
    "pv_ac_p10_kw": "p10_kw",
    "pv_ac_p90_kw": "p90_kw",
    "pv_clear_kw": "clear_kw",
    "pv_raw_kw": "raw_kw",
}


def save_forecast(
    store: Store, forecast: pd.DataFrame, *, issued_at: datetime, source: str = "clearsky"
) -> int:
    """Store one forecast frame (from :func:`forecast_pv`); return its row id."""
    step = forecast.index[1] - forecast.index[0] if len(forecast) > 1 else pd.Timedelta("15min")
    row = {
        "issued_at": iso(issued_at),
        "start": iso(forecast.index[0].to_pydatetime()),
        "step_min": int(step.total_seconds() // 60),
        "n_steps": len(forecast),
        "source": source,
        "k_meas": forecast.attrs.get("k_meas"),
    }
    for col, name in _SERIES.items():
        row[name] = json.dumps(np.round(forecast[col].to_numpy(float), 3).tolist())
    with store.conn:
        cur = store.conn.execute(
            f"INSERT INTO pv_forecasts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    return int(cur.lastrowid)


def issue_forecast(
    store: Store,
    station: Station,
    weather: pd.DataFrame | None = None,
    measured_kw: pd.Series | None = None,
    *,
    n_steps: int | None = None,
    source: str | None = None,
    **kwargs: object,
) -> pd.DataFrame:
    """Forecast from ``store.now()`` over the site horizon and store it; return the frame."""
    site = station.site
    now = store.now()
    n = n_steps or site.horizon_h * 60 // site.dispatch_step_min
    fc = forecast_pv(station, now, n, site.dispatch_step_min, weather, measured_kw, **kwargs)
    save_forecast(
        store, fc, issued_at=now, source=source or ("clearsky" if weather is None else "weather")
    )
    return fc


def load_issued(
    store: Store, start: datetime, end: datetime, *, lead_min: float = 0.0
) -> pd.DataFrame:
    """For each step starting in ``[start, end)``: the latest forecast issued at least
    ``lead_min`` minutes before the step started.

    Returns a frame indexed by step start (UTC) with :data:`FORECAST_COLUMNS` and
    ``issued_at``; empty when nothing was issued.
    """
    rows = store.conn.execute(
        "SELECT issued_at, start, step_min, n_steps, p50_kw, p10_kw, p90_kw, clear_kw, raw_kw "
        "FROM pv_forecasts WHERE issued_at < ? ORDER BY issued_at",
        [iso(end)],
    ).fetchall()
    parts = []
    for issued_at, first, step_min, n, *series in rows:
        idx = pd.date_range(pd.Timestamp(first), periods=n, freq=f"{step_min}min")
        part = pd.DataFrame(
            {col: json.loads(s) for col, s in zip(FORECAST_COLUMNS, series, strict=True)},
            index=idx,
        )
        part["issued_at"] = pd.Timestamp(issued_at)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[*FORECAST_COLUMNS, "issued_at"])
    allf = pd.concat(parts)
    allf.index = pd.DatetimeIndex(allf.index).tz_convert("UTC")
    allf.index.name = "time"
    t0, t1 = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    allf = allf[(allf.index >= t0) & (allf.index < t1)]
    allf = allf[allf["issued_at"] <= allf.index - pd.Timedelta(minutes=lead_min)]
    allf = allf.reset_index().sort_values(["time", "issued_at"])
    return allf.groupby("time").last()
