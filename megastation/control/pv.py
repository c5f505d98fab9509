"""The PV forecast on the plan's grid (with the nowcast from measured PV).

:func:`forecast_on_grid` asks the forecaster for the plan's fine steps and maps its
P50 / P10 / P90 [kW] onto the plan's grid (a coarse step gets the mean of its fine
steps). A forecaster that fails leaves the plan with zero PV rather than no plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd

from forecasts.weather import WeatherError
from megastation.control.pv_forecast import station_forecast
from megastation.core.config import Station
from megastation.dispatch import TimeGrid

log = logging.getLogger(__name__)

PV_HISTORY = timedelta(hours=6)  # measured PV kept for the nowcast

Forecaster = Callable[..., pd.DataFrame]
"""``forecaster(station, start, n_steps, step_min, weather=None, measured_kw=None)``
returning a DataFrame indexed by step start (UTC) with ``pv_ac_kw`` (P50) [kW] and
optionally ``pv_ac_p10_kw`` / ``pv_ac_p90_kw``;
:func:`megastation.control.pv_forecast.station_forecast` is the default. A forecaster
may also have ``arrays(station, start, n_steps, step_min, weather=None, history=())``
giving :class:`ForecastArrays` (``history``: measured ``(time, kW)``): the plan then
uses that (the simulator's does, #15)."""

P50_COLUMNS = ("pv_ac_kw", "p50", "p50_kw", "pv_kw")
P10_COLUMNS = ("pv_ac_p10_kw", "p10", "p10_kw")
P90_COLUMNS = ("pv_ac_p90_kw", "p90", "p90_kw")


def default_forecaster() -> Forecaster:
    """The station's PV forecast (:func:`megastation.control.pv_forecast.station_forecast`)."""
    return station_forecast


@dataclass(frozen=True)
class PvForecast:
    """The PV forecast of one plan, on its grid."""

    p50_kw: np.ndarray  # per plan step [kW]
    p10_kw: np.ndarray | None  # per plan step [kW], None: the forecaster gives no band
    p90_first_kw: float | None  # P90 of the first fine step [kW] (for the flow record)


def _column(df: pd.DataFrame, names: Sequence[str]) -> pd.Series | None:
    for n in names:
        if n in df.columns:
            return df[n]
    return None


def on_grid(series: pd.Series, times: pd.DatetimeIndex) -> np.ndarray:
    """Values of a step series at each grid step start (the step it falls in); NaN and
    negative values become 0, as do times before the series."""
    s = series if series.index.is_monotonic_increasing else series.sort_index()
    return _values_at(s.to_numpy(dtype=float), _positions(s.index, times))


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC nanoseconds of ``index`` (naive = UTC): indexes may be stored in ns, us or s."""
    if index.tz is None:
        index = index.tz_localize("UTC")
    return index.as_unit("ns").asi8


def _positions(index: pd.DatetimeIndex, times: pd.DatetimeIndex) -> np.ndarray:
    """For each of ``times``, the row of the sorted ``index`` whose step it falls in (-1: before)."""
    return np.searchsorted(_ns(index), _ns(times), side="right") - 1


def _values_at(vals: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _clean(np.where(pos >= 0, vals[np.clip(pos, 0, len(vals) - 1)], 0.0))


def _clean(kw: np.ndarray) -> np.ndarray:
    """``kw`` with NaN and negative values as 0."""
    return np.nan_to_num(np.maximum(kw, 0.0))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def measured_series(history: Sequence[tuple[datetime, float]]) -> pd.Series | None:
    """Measured PV samples ``(time, kW)`` (tz-aware times) as the forecaster's
    ``measured_kw``, indexed in UTC."""
    if not history:
        return None
    if any(t.tzinfo is None for t, _ in history):  # the forecaster names the error
        kw = np.fromiter((kw for _, kw in history), float, len(history))
        return pd.Series(kw, index=pd.DatetimeIndex([t for t, _ in history]), name="pv_kw")
    t_ns, kw = measured_arrays(history)
    index = pd.DatetimeIndex((t_ns // 1000).view("M8[us]"), dtype=_UTC_US)
    return pd.Series(kw, index=index, name="pv_kw")


def measured_arrays(history: Sequence[tuple[datetime, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Measured PV samples ``(time, kW)`` as arrays: times [epoch ns] and kW. A naive
    time raises ValueError (as the forecasters refuse a naive ``measured_kw``)."""
    if any(t.tzinfo is None for t, _ in history):
        raise ValueError("measured_kw: index must be timezone-aware timestamps")
    kw = np.fromiter((kw for _, kw in history), float, len(history))
    return _epoch_us(history) * 1000, kw


_UTC_US = pd.DatetimeTZDtype("us", "UTC")
_last_us: list[tuple[tuple, np.ndarray]] = []  # the last history and its times [epoch us]


def _epoch_us(history: Sequence[tuple[datetime, float]]) -> np.ndarray:
    """Times of the tz-aware ``history`` [microseconds since the epoch], exact. A history
    grows at its end and loses its oldest samples: the times of the samples the last
    call had are taken from it, only the new ones are converted (#15)."""
    items = tuple(history)
    done = np.zeros(0, dtype=np.int64)
    if _last_us:
        old, old_us = _last_us[0]
        k = old.index(items[0]) if items[0] in old else len(old)
        if items[: len(old) - k] == old[k:]:
            done = old_us[k:]
    new = items[len(done) :]
    us = np.fromiter(((t - _EPOCH) // _US for t, _ in new), np.int64, len(new))
    out = np.concatenate((done, us))
    _last_us[:] = [(items, out)]
    return out


@dataclass(frozen=True)
class ForecastArrays:
    """A forecast as arrays: step starts [epoch ns, sorted] and P50/P10/P90 [kW] (None:
    the forecaster gives none). A forecaster may offer them itself (``arrays``, see
    :data:`Forecaster`); else they are read from its frame."""

    index_ns: np.ndarray
    p50_kw: np.ndarray | None
    p10_kw: np.ndarray | None
    p90_kw: np.ndarray | None
    frame: pd.DataFrame | None = None  # read from (held: no other frame takes its id)

    @cached_property
    def clean(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """P50, P10, P90 with NaN and negative values as 0 (:func:`_values_at`'s cleaning,
        done once: a per-step forecaster serves one ForecastArrays to several plans)."""
        return tuple(
            None if c is None else _clean(c) for c in (self.p50_kw, self.p10_kw, self.p90_kw)
        )


_last_frame: list[ForecastArrays] = []  # the last frame read (a per-step forecaster repeats it)


def frame_arrays(df: pd.DataFrame, *, reuse: bool = False) -> ForecastArrays:
    """The arrays of a forecast frame; with ``reuse`` (a ``per_step`` forecaster, which
    serves one frame, never changed, to every plan within a step) the last frame's are
    kept (#15)."""
    last = _last_frame[0] if _last_frame else None
    if reuse and last is not None and last.frame is df:
        return last
    sorted_df = df if df.index.is_monotonic_increasing else df.sort_index()

    def col(names: Sequence[str]) -> np.ndarray | None:
        c = _column(sorted_df, names)
        return None if c is None else c.to_numpy(dtype=float)

    out = ForecastArrays(
        _ns(pd.DatetimeIndex(sorted_df.index)), col(P50_COLUMNS), col(P10_COLUMNS),
        col(P90_COLUMNS), df,
    )  # fmt: skip
    _last_frame[:] = [out]
    return out


def forecast_on_grid(
    forecaster: Forecaster,
    station: Station,
    grid: TimeGrid,
    *,
    weather: pd.DataFrame | None = None,
    history: Sequence[tuple[datetime, float]] = (),
) -> PvForecast:
    """The PV forecast [kW] for each step of ``grid`` (see the module docstring).

    ``weather`` goes to the forecaster (None: clear sky); ``history`` is measured PV
    ``(time, kW)`` for its nowcast.
    """
    start = pd.Timestamp(grid.start)  # the forecaster floors it to its step
    fine = grid.fine()  # a coarse step gets the mean of its fine steps' forecast
    n, step_min = fine.n_steps + 1, station.site.dispatch_step_min
    as_arrays = getattr(forecaster, "arrays", None)

    def issue(wx: pd.DataFrame | None) -> ForecastArrays:
        if as_arrays is not None:  # no frame, no Series of the history (#15)
            return as_arrays(station, start, n, step_min, weather=wx, history=history)
        df = forecaster(
            station, start, n, step_min, weather=wx, measured_kw=measured_series(history)
        )
        return frame_arrays(df, reuse=getattr(forecaster, "per_step", False))

    try:
        try:
            cols = issue(weather)
        except WeatherError as exc:
            if weather is None:
                raise
            # a weather forecast that ends inside the horizon (a feed's last run, a file's
            # last day): clear sky (with the nowcast) beats no PV at all
            log.warning("PV forecast: %s; planning this horizon on clear sky", exc)
            cols = issue(None)
    except Exception as exc:
        log.warning("PV forecast failed (%s): planning with zero PV", exc)
        return PvForecast(np.zeros(grid.n_steps), None, None)
    # once for every column; grid times in ns as the index's (fine.times_us, exact)
    pos = np.searchsorted(cols.index_ns, fine.times_us * 1000, side="right") - 1
    p50, p10, p90 = cols.clean  # as _values_at(column, pos): cleaned, then picked
    before = pos < 0  # times before the forecast: 0
    rows = np.maximum(pos, 0)

    def at(col: np.ndarray) -> np.ndarray:
        return np.where(before, 0.0, col[rows]) if before.any() else col[rows]

    return PvForecast(
        p50_kw=grid.mean_of_fine(at(p50)) if p50 is not None else np.zeros(grid.n_steps),
        p10_kw=grid.mean_of_fine(at(p10)) if p10 is not None else None,
        p90_first_kw=(0.0 if before[0] else float(p90[rows[0]])) if p90 is not None else None,
    )
