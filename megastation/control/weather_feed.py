"""The live weather forecast: fetched on a schedule, stored, and the forecaster built on it.

:class:`WeatherFeed` fetches an Open-Meteo-compatible forecast (``[weather]`` in the
station TOML; :func:`forecasts.openmeteo.get_open_meteo` in a thread) every
``refresh_min`` on the injected clock, ``retry_min`` after a failure. Each good
forecast is stored (``weather_forecasts``) and a PV forecast issued from it is stored
too (``pv_forecasts``, source ``open-meteo``), so ``forecast score`` can judge what
the station planned with.

:meth:`WeatherFeed.forecaster` is a controller ``Forecaster``. In order of preference
it forecasts from

1. the latest good forecast fetched at most ``max_age_h`` ago that covers the
   horizon (also the one stored before a restart);
2. clear sky times the recent PV clear-sky index: measured PV energy over the last
   ``history_days`` days (the recorded ``energy_flows``) over the modelled clear-sky
   energy of the same daylight steps; plain clear sky without such history.

The nowcast from measured PV applies in both. A provider that is down, slow or
answers garbage is logged and counted; it never stops the loop. After every fetch, and
whenever the forecast's source changes, the feed's status is stored
(``weather_feed_status``, :func:`megastation.store.weather_feed.record_feed_status`) for
`megastation status`, `control-status` and the console's overview.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from forecasts.openmeteo import get_open_meteo
from forecasts.pvmodel import pv_power
from forecasts.weather import WeatherError, clear_sky_weather
from megastation.control.pv_forecast import station_forecast
from megastation.core.clock import Clock
from megastation.core.config import Station, WeatherFeedConfig
from megastation.store import Store
from megastation.store.flows import read_flows
from megastation.store.forecasts import latest_weather, save_forecast, save_weather
from megastation.store.weather_feed import record_feed_status

log = logging.getLogger(__name__)

#: Daylight steps (clear-sky PV >= 5 % of kWp) the recent clear-sky index needs.
MIN_HISTORY_STEPS = 16
MIN_CLEAR_FRAC = 0.05
#: The recent clear-sky index is recomputed at most this often.
INDEX_TTL = timedelta(hours=1)
#: ... and clipped to [0, this].
MAX_CLEAR_INDEX = 1.3
#: A fetch is abandoned this long after the fetcher's own timeout.
FETCH_GRACE_S = 1.0

Fetch = Callable[..., pd.DataFrame]


@dataclass
class FeedStatus:
    """What the feed last did, for logs and status displays."""

    fetches: int = 0
    failures: int = 0
    last_ok_at: datetime | None = None
    last_error: str | None = None
    source: str = "none"  # what the last forecast used: weather | clearsky-index | clearsky


class WeatherFeed:
    """Fetch, store and serve the weather forecast of one station (see module)."""

    def __init__(
        self,
        station: Station,
        store: Store,
        clock: Clock,
        config: WeatherFeedConfig | None = None,
        *,
        fetch: Fetch = get_open_meteo,
    ) -> None:
        cfg = config or station.weather
        if cfg is None:
            raise ValueError("station has no [weather] section")
        self.station = station
        self.store = store
        self.clock = clock
        self.config = cfg
        self.fetch = fetch  # fetch(url, site, *, resolution, forecast_days, timeout_s)
        self.status = FeedStatus()
        self._last = latest_weather(store, before=clock.now())  # survives a restart
        if self._last is not None:
            self.status.last_ok_at = self._last[0]
        self._attempted_at: datetime | None = None
        self._index: tuple[datetime, float | None] | None = None

    # ------------------------------------------------------------------ fetching

    async def refresh(self) -> bool:
        """Fetch once; store and keep a good forecast. Never raises; True on success."""
        cfg = self.config
        now = self.clock.now()
        self.status.fetches += 1
        self._attempted_at = now
        try:
            wx = await asyncio.wait_for(
                asyncio.to_thread(
                    self.fetch,
                    cfg.url,
                    self.station.pv_site(),
                    resolution=cfg.resolution,
                    forecast_days=cfg.forecast_days,
                    timeout_s=cfg.timeout_s,
                ),
                timeout=cfg.timeout_s + FETCH_GRACE_S,
            )
            save_weather(self.store, wx, fetched_at=now, source=cfg.url)
        except Exception as exc:  # down, slow, malformed, or a bug: the loop goes on
            self.status.failures += 1
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self.status.last_error = reason
            log.warning("weather forecast fetch failed (%s): %s", cfg.url, reason)
            self._record()
            return False
        self._last = (now, wx)
        self.status.last_ok_at, self.status.last_error = now, None
        self._issue(now)
        self._record()
        return True

    def _record(self) -> None:
        """Store the feed's status (after a fetch; when the forecast's source changes)."""
        if self._attempted_at is None:
            return  # nothing fetched yet in this process: the stored row stays
        st = self.status
        try:
            record_feed_status(
                self.store, provider=self.config.url, attempted_at=self._attempted_at,
                ok=st.last_error is None, error=st.last_error, last_ok_at=st.last_ok_at,
                fetches=st.fetches, failures=st.failures, source=st.source,
            )  # fmt: skip
        except Exception as exc:  # a status row never stops the feed
            log.warning("weather feed status not stored: %s", exc)

    def _issue(self, now: datetime) -> None:
        """Store the PV forecast made from what the feed now holds (for scoring)."""
        site = self.station.site
        n = site.horizon_h * 60 // site.dispatch_step_min
        try:
            fc = self.forecaster(self.station, now, n, site.dispatch_step_min)
            save_forecast(self.store, fc, issued_at=now, source=f"open-meteo:{self.status.source}")
        except (WeatherError, ValueError) as exc:
            log.warning("PV forecast from the weather feed not stored: %s", exc)

    async def run(self, *_: Any) -> None:
        """Refresh forever on the clock (``run_server``'s extra-task signature)."""
        while True:
            ok = await self.refresh()
            minutes = self.config.refresh_min if ok else self.config.retry_min
            await self.clock.sleep(60.0 * minutes)

    # ------------------------------------------------------------------ serving

    def weather(self, now: datetime) -> pd.DataFrame | None:
        """The last good weather forecast if fetched at most ``max_age_h`` ago."""
        if self._last is None:
            return None
        fetched_at, frame = self._last
        if now - fetched_at > timedelta(hours=self.config.max_age_h):
            return None
        return frame

    def recent_clear_index(self, now: datetime) -> float | None:
        """Measured PV energy / clear-sky PV energy over the last ``history_days``."""
        if self._index is not None and now - self._index[0] < INDEX_TTL:
            return self._index[1]
        k = None
        try:
            flows = read_flows(
                self.store, now - timedelta(days=self.config.history_days), now
            ).dropna(subset=["pv_kw"])
            if len(flows) >= MIN_HISTORY_STEPS:
                k = _clear_index(self.station, flows)
        except (WeatherError, ValueError, KeyError) as exc:
            log.warning("recent PV clear-sky index: %s", exc)
        self._index = (now, k)
        return k

    def forecaster(
        self,
        station: Station,
        start: datetime | pd.Timestamp,
        n_steps: int,
        step_min: int | None = None,
        weather: pd.DataFrame | None = None,
        measured_kw: pd.Series | None = None,
    ) -> pd.DataFrame:
        """A controller ``Forecaster``: the feed's weather, else clear sky x recent index."""
        now = pd.Timestamp(start).to_pydatetime()
        wx = self.weather(now)
        if wx is not None:
            try:
                fc = station_forecast(station, start, n_steps, step_min, wx, measured_kw)
            except WeatherError as exc:  # e.g. the forecast ends before the horizon
                log.warning("weather forecast not usable (%s): clear-sky fallback", exc)
            else:
                self._set_source(fc, "weather")
                return fc
        k = self.recent_clear_index(now)
        fc = station_forecast(station, start, n_steps, step_min, None, measured_kw, clear_index=k)
        self._set_source(fc, "clearsky" if k is None else "clearsky-index")
        fc.attrs["clear_index"] = k
        return fc

    def _set_source(self, fc: pd.DataFrame, source: str) -> None:
        changed = source != self.status.source
        self.status.source = fc.attrs["source"] = source
        if changed:
            self._record()


def _clear_index(station: Station, flows: pd.DataFrame) -> float | None:
    """Energy-weighted PV clear-sky index of recorded flow steps (None: too little sun)."""
    site = station.pv_site()
    idx = pd.DatetimeIndex(flows.index).tz_convert("UTC")
    step_s = float(np.median(flows["step_s"].to_numpy(float)))
    step = pd.Timedelta(seconds=step_s)
    clear = pv_power(site, site.arrays, clear_sky_weather(idx), step=step)["pv_ac_kw"].to_numpy()
    pv = flows["pv_kw"].to_numpy(float)
    day = clear >= MIN_CLEAR_FRAC * site.peak_power_kw
    if day.sum() < MIN_HISTORY_STEPS or clear[day].sum() <= 0:
        return None
    return float(np.clip(pv[day].sum() / clear[day].sum(), 0.0, MAX_CLEAR_INDEX))
