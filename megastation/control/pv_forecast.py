"""The station's PV forecast: the station configuration adapted to :mod:`forecasts`.

:func:`station_forecast` is the controller's default forecaster (the ``Forecaster``
signature of :mod:`megastation.control.controller`); :func:`issue_forecast` forecasts from the
store's clock and stores the result (:mod:`megastation.store.forecasts`).
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from forecasts.forecast import forecast_pv
from megastation.core.config import Station
from megastation.store import Store
from megastation.store.forecasts import save_forecast


def station_forecast(
    station: Station,
    start: datetime | pd.Timestamp,
    n_steps: int,
    step_min: int | None = None,
    weather: pd.DataFrame | None = None,
    measured_kw: pd.Series | None = None,
    **kwargs: object,
) -> pd.DataFrame:
    """:func:`forecasts.forecast.forecast_pv` for the station's site and arrays."""
    return forecast_pv(station.pv_site(), start, n_steps, step_min, weather, measured_kw, **kwargs)


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
    fc = station_forecast(station, now, n, site.dispatch_step_min, weather, measured_kw, **kwargs)
    save_forecast(
        store, fc, issued_at=now, source=source or ("clearsky" if weather is None else "weather")
    )
    return fc
