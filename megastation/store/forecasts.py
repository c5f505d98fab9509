"""Issued forecasts in the store: PV forecasts (to score them later) and weather forecasts.

``pv_forecasts`` (migration ``0200_pv_forecasts``): one row per issued PV forecast:
issue time, first step, step and the series as JSON arrays [kW, 3 decimals].
``weather_forecasts`` (migration ``0201_weather_forecasts``): one row per weather
forecast fetched from a provider, the canonical weather frame (:mod:`forecasts.weather`)
as JSON columns, so a restarted station plans with the last good one.
The live feed's own status is in :mod:`megastation.store.weather_feed`.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd

from forecasts.forecast import FORECAST_COLUMNS
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
    """Store one PV forecast frame (:func:`forecasts.forecast.forecast_pv`); return its id."""
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


def load_issued(
    store: Store, start: datetime, end: datetime, *, lead_min: float = 0.0
) -> pd.DataFrame:
    """For each step starting in ``[start, end)``: the latest PV forecast issued at least
    ``lead_min`` minutes before the step started.

    Returns a frame indexed by step start (UTC) with
    :data:`forecasts.forecast.FORECAST_COLUMNS` and ``issued_at``; empty when nothing
    was issued.
    """
    rows = store.conn.execute(
        "SELECT issued_at, start, step_min, n_steps, p50_kw, p10_kw, p90_kw, clear_kw, raw_kw "
        "FROM pv_forecasts WHERE issued_at < ? "
        "AND julianday(start) + n_steps * step_min / 1440.0 > julianday(?) ORDER BY issued_at",
        [iso(end), iso(start)],  # only forecasts that reach into [start, end) are read
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


def save_weather(store: Store, weather: pd.DataFrame, *, fetched_at: datetime, source: str) -> int:
    """Store one weather forecast (canonical frame, start-labelled UTC index); return its id."""
    idx = pd.DatetimeIndex(weather.index).tz_convert("UTC")
    step = idx[1] - idx[0] if len(idx) > 1 else pd.Timedelta("1h")
    columns = {c: np.round(weather[c].to_numpy(float), 3).tolist() for c in weather.columns}
    with store.conn:
        cur = store.conn.execute(
            "INSERT INTO weather_forecasts (fetched_at, start, step_min, n_steps, source, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                iso(fetched_at),
                iso(idx[0].to_pydatetime()),
                int(step.total_seconds() // 60),
                len(idx),
                source,
                json.dumps(columns, allow_nan=False),
            ],
        )
    return int(cur.lastrowid)


def latest_weather(store: Store, *, before: datetime) -> tuple[datetime, pd.DataFrame] | None:
    """The weather forecast fetched last before ``before``: ``(fetched_at, frame)``, or None."""
    row = store.conn.execute(
        "SELECT fetched_at, start, step_min, n_steps, data FROM weather_forecasts"
        " WHERE fetched_at <= ? ORDER BY fetched_at DESC, id DESC LIMIT 1",
        [iso(before)],
    ).fetchone()
    if row is None:
        return None
    fetched_at, first, step_min, n, data = row
    idx = pd.date_range(pd.Timestamp(first), periods=n, freq=f"{step_min}min", unit="ns")
    frame = pd.DataFrame(json.loads(data), index=idx.tz_convert("UTC"))
    frame.index.name = "time"
    return pd.Timestamp(fetched_at).to_pydatetime(), frame
