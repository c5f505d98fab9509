"""The one call the control loop makes: :func:`forecast_pv`.

Pure apart from the solar-geometry cache in :mod:`forecasts.pvmodel`; a 48-hour,
15-minute forecast for the seed station takes a few milliseconds (see
benchmarks/forecast.py).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from forecasts import bands as _bands
from forecasts import nowcast as _nowcast
from forecasts.pvmodel import array_column, inverter_limits_kw, pv_power_array
from forecasts.site import PVSite
from forecasts.weather import WeatherError, clear_sky_weather, resample_weather, step_grid

#: Columns of a forecast frame, before the per-array ``pv_ac_kw[<name>]`` columns.
FORECAST_COLUMNS = ("pv_ac_kw", "pv_ac_p10_kw", "pv_ac_p90_kw", "pv_clear_kw", "pv_raw_kw")


def forecast_pv(
    site: PVSite,
    start: datetime | pd.Timestamp,
    n_steps: int,
    step_min: int | None = None,
    weather: pd.DataFrame | None = None,
    measured_kw: pd.Series | None = None,
    *,
    bands: _bands.Bands | None = None,
    window_h: float = _nowcast.WINDOW_H,
    clear_index: float | None = None,
) -> pd.DataFrame:
    """PV AC power forecast [kW] for the station's arrays, P10/P50/P90.

    Parameters
    ----------
    site : PVSite
        Latitude, longitude, altitude and the arrays (:mod:`forecasts.site`).
    start : datetime
        Issue time, tz-aware. The first step is the one containing it (start floored
        to the step); the nowcast uses only measurements before ``start``.
    n_steps : int
        Number of steps (192 = 48 h of 15 min).
    step_min : int, optional
        Step [min], must divide 60; default ``site.step_min``.
    weather : DataFrame, optional
        Canonical weather frame (:mod:`forecasts.weather`) covering the horizon, any
        regular step; None = clear sky with typical temperature.
    measured_kw : Series, optional
        Measured total PV AC power [kW], tz-aware index, any resolution; the last
        ``window_h`` hours before ``start`` drive the nowcast (:mod:`forecasts.nowcast`).
    bands : Bands, optional
        Error percentiles (:func:`forecasts.bands.fit_bands`); default by lead,
        :data:`forecasts.bands.DEFAULT_BANDS` with ``weather``,
        :data:`forecasts.bands.CLEARSKY_BANDS` without.
    clear_index : float, optional
        Without ``weather``: the raw forecast is clear sky times this PV clear-sky
        index (e.g. the mean measured over the last days); default 1.

    Returns
    -------
    DataFrame indexed by step start (UTC, named ``time``) with ``pv_ac_kw`` (P50,
    nowcast-corrected), ``pv_ac_p10_kw``, ``pv_ac_p90_kw``, ``pv_clear_kw`` (clear
    sky), ``pv_raw_kw`` (before the nowcast), then ``pv_ac_kw[<array>]`` (P50 per
    array). ``attrs`` holds ``k_meas`` (measured clear-sky index or None) and ``bands``.

    Raises
    ------
    WeatherError
        Naive ``start``, a step that does not divide the hour, weather not covering
        the horizon.
    """
    arrays = site.arrays
    if not arrays:
        raise WeatherError("site has no PV arrays")
    if n_steps < 1:
        raise WeatherError(f"n_steps: must be >= 1, got {n_steps}")
    step_min = step_min or site.step_min
    grid = step_grid(start, n_steps, step_min)
    step = pd.Timedelta(minutes=step_min)
    issued = pd.Timestamp(start).tz_convert("UTC")

    if weather is None:
        wx = clear_sky_weather(grid)
        clear, _ = pv_power_array(site, arrays, wx, step=step)
        raw = clear if clear_index is None else clear * float(np.clip(clear_index, 0.0, 1.3))
    else:
        wx = resample_weather(weather, grid)
        raw, _ = pv_power_array(site, arrays, wx, step=step)
        clear, _ = pv_power_array(site, arrays, wx, step=step, clear_sky=True)
    limits = inverter_limits_kw(arrays)

    k_meas = None
    if measured_kw is not None and len(measured_kw):
        n_win = max(1, round(window_h * 60 / step_min))
        past = grid[0] - step * np.arange(n_win, 0, -1)
        past = pd.DatetimeIndex(past, freq=step)
        clear_past, _ = pv_power_array(site, arrays, clear_sky_weather(past), step=step)
        before = measured_kw[measured_kw.index < issued]
        meas = _nowcast.step_means(before, past, step)
        k_meas = _nowcast.measured_clear_sky_index(meas, clear_past.sum(axis=1), limits.sum())
    return assemble(
        arrays, grid, issued, raw, clear, limits, k_meas, with_weather=weather is not None,
        bands=bands, latitude_deg=site.latitude,
    )  # fmt: skip


def lead_hours(t_ns: np.ndarray, issued_ns: int) -> np.ndarray:
    """Hours from ``issued_ns`` to each of ``t_ns`` (epoch ns), rounded as pandas'
    ``TimedeltaIndex.total_seconds() / 3600`` (whole seconds plus the rest's fraction)."""
    whole_s, rest_ns = np.divmod(np.asarray(t_ns, dtype=np.int64) - issued_ns, 10**9)
    return (whole_s + rest_ns / 1e9) / 3600.0


def assemble_columns(
    arrays: tuple,
    grid: pd.DatetimeIndex,
    issued: pd.Timestamp,
    raw: np.ndarray,
    clear: np.ndarray,
    limits: np.ndarray,
    k_meas: float | None,
    *,
    with_weather: bool,
    latitude_deg: float,
    bands: _bands.Bands | None = None,
) -> tuple[dict[str, np.ndarray], _bands.Bands]:
    """:func:`assemble`'s columns by name [kW] (one value per step of ``grid``) and the
    bands applied, without the frame."""
    grid_ns = _nowcast.epoch_ns(grid)
    step_ns = int(grid_ns[1] - grid_ns[0]) if len(grid) > 1 else pd.Timedelta(grid.freq).value
    mid_ns = grid_ns + step_ns // 2  # step midpoints (steps are whole seconds)
    lead_h = lead_hours(mid_ns, pd.Timestamp(issued).value)
    p50 = _nowcast.nowcast(raw, clear, limits, lead_h, k_meas, with_weather=with_weather)
    total = p50.sum(axis=1)
    clear_total = clear.sum(axis=1)
    b = bands or (_bands.DEFAULT_BANDS if with_weather else _bands.CLEARSKY_BANDS)
    if grid.tz is not None and str(grid.tz) != "UTC":  # the season of the grid's own day
        season = _bands.season(grid + pd.Timedelta(step_ns // 2, unit="ns"), latitude_deg)
    else:
        season = _bands.season_ns(mid_ns, latitude_deg)
    p10, p90 = _bands.apply_bands(
        total, clear_total, float(limits.sum()), b, None if k_meas is None else lead_h, season
    )
    data = {
        "pv_ac_kw": total,
        "pv_ac_p10_kw": p10,
        "pv_ac_p90_kw": p90,
        "pv_clear_kw": clear_total,
        "pv_raw_kw": raw.sum(axis=1),
    }
    for j, a in enumerate(arrays):
        data[array_column(a.name)] = p50[:, j]
    return data, b


def assemble(
    arrays: tuple,
    grid: pd.DatetimeIndex,
    issued: pd.Timestamp,
    raw: np.ndarray,
    clear: np.ndarray,
    limits: np.ndarray,
    k_meas: float | None,
    *,
    with_weather: bool,
    latitude_deg: float,
    bands: _bands.Bands | None = None,
) -> pd.DataFrame:
    """The nowcast and the bands on modelled PV ``(n_steps, n_arrays)`` [kW]: the
    forecast frame of :func:`forecast_pv` (the simulator calls it on precomputed PV).
    ``latitude_deg``: the site's, for the season of the bands (:func:`forecasts.bands.season`)."""
    data, b = assemble_columns(
        arrays, grid, issued, raw, clear, limits, k_meas, with_weather=with_weather,
        latitude_deg=latitude_deg, bands=bands,
    )  # fmt: skip
    # one float block: made and read several times faster than a frame of separate columns
    out = pd.DataFrame(np.column_stack(list(data.values())), index=grid, columns=list(data))
    out.index.name = "time"
    out.attrs["k_meas"] = k_meas
    out.attrs["bands"] = b
    return out
