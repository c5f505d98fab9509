"""The simulated site around the chargers: forecast error and the other site load.

Pure, seeded functions; see ``seeds/README.md`` for how the demo uses them.

- :func:`degrade_weather` turns the weather that "really happens" (the actuals the
  simulated PV produces from) into the forecast the controller is given: a bias and
  autocorrelated (AR(1)) noise on GHI, mirrored on cloud cover, plus noise on air
  temperature. The forecast error is then real and of a known size.
- :func:`site_load_kw` is the station's own consumption besides the chargers
  (building, lighting, cooling): a base load plus a daytime cooling bump, seeded noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

_TIME = "time"


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) noise of ``n`` samples with lag-one correlation ``phi``."""
    if n == 0:
        return np.empty(0)
    eps = rng.standard_normal(n)
    scale = float(np.sqrt(max(0.0, 1.0 - phi * phi)))
    # y[i] = phi y[i-1] + scale eps[i], started in the stationary state y[0] = eps[0].
    zi = np.array([(1.0 - scale) * eps[0]])
    out, _ = lfilter([scale], [1.0, -phi], eps, zi=zi)
    return out


def _step_h(times: pd.DatetimeIndex) -> float:
    """Median step of ``times`` [h] (1 for fewer than two times)."""
    if len(times) < 2:
        return 1.0
    return float(pd.Series(times).diff().dropna().median() / pd.Timedelta(hours=1))


def _times(weather: pd.DataFrame) -> pd.DatetimeIndex:
    if _TIME in weather.columns:
        idx = pd.DatetimeIndex(pd.to_datetime(weather[_TIME]))
    elif isinstance(weather.index, pd.DatetimeIndex):
        idx = weather.index
    else:
        raise ValueError("weather: needs a DatetimeIndex or a 'time' column")
    if idx.tz is None:
        raise ValueError("weather: times must be timezone-aware")
    return idx


def degrade_weather(
    weather: pd.DataFrame,
    seed: int,
    *,
    bias_frac: float = -0.05,
    noise_frac: float = 0.20,
    correlation_h: float = 3.0,
    cloud_bias_pct: float = 5.0,
    cloud_noise_pct: float = 15.0,
    temp_noise_c: float = 1.0,
) -> pd.DataFrame:
    """A forecast made from ``weather`` by adding bias and autocorrelated noise.

    Parameters
    ----------
    weather : DataFrame
        Actual weather with a tz-aware DatetimeIndex (or a ``time`` column) at a
        regular step and any of ``ghi`` [W/m^2], ``cloud_cover`` [%], ``temp_air``
        [degC], ``wind_speed`` [m/s]. Other columns are passed through unchanged.
    seed : int
        Seed of the noise; the same seed gives the same forecast.
    bias_frac : float
        Relative GHI bias [-]; -0.05 under-forecasts by 5 % on average.
    noise_frac : float
        Standard deviation of the relative GHI error [-].
    correlation_h : float
        e-folding time of the error [h]: AR(1) with ``phi = exp(-step / correlation_h)``,
        so a forecast is wrong for hours at a time, as a real one is.
    cloud_bias_pct, cloud_noise_pct : float
        Cloud-cover bias and noise amplitude [percentage points]. The cloud noise is
        the GHI noise mirrored (more cloud where GHI is under-forecast), and the bias
        has the sign opposite to ``bias_frac``'s effect, so both inputs tell one story.
    temp_noise_c : float
        Standard deviation of the air-temperature error [degC] (same AR(1) shape,
        independent draw).

    Returns
    -------
    DataFrame
        Same index, columns and dtypes-by-name as ``weather``: ``ghi >= 0`` (zero
        stays zero at night), ``0 <= cloud_cover <= 100``.
    """
    times = _times(weather)
    n = len(times)
    step_h = _step_h(times)
    phi = float(np.exp(-step_h / correlation_h)) if correlation_h > 0 else 0.0
    rng = np.random.default_rng(seed)
    z = _ar1(rng, n, phi)  # drives GHI and cloud cover together
    z_temp = _ar1(rng, n, phi)
    out = weather.copy()
    if "ghi" in out:
        ghi = out["ghi"].to_numpy(float)
        out["ghi"] = np.maximum(0.0, ghi * (1.0 + bias_frac + noise_frac * z)).round(1)
    if "cloud_cover" in out:
        cc = out["cloud_cover"].to_numpy(float)
        bias = -np.sign(bias_frac) * cloud_bias_pct if bias_frac else 0.0
        out["cloud_cover"] = np.clip(cc + bias - cloud_noise_pct * z, 0.0, 100.0).round(0)
    if "temp_air" in out:
        out["temp_air"] = (out["temp_air"].to_numpy(float) + temp_noise_c * z_temp).round(1)
    return out


def site_load_kw(
    times: pd.DatetimeIndex,
    base_kw: float,
    seed: int,
    *,
    cooling_peak_kw: float | None = None,
    peak_hour: float = 15.0,
    width_h: float = 3.0,
    noise_frac: float = 0.05,
    temp_air: pd.Series | np.ndarray | None = None,
    tz: str = "Asia/Seoul",
) -> pd.Series:
    """Other site load [kW] at ``times``: base plus a daytime cooling bump plus noise.

    ``load = base_kw + cooling_peak_kw * exp(-((local_hour - peak_hour) / width_h)^2 / 2)``
    times ``(1 + noise_frac * AR(1) noise)`` (1 h correlation), never below zero.
    ``cooling_peak_kw`` defaults to ``0.6 * base_kw``. When ``temp_air`` [degC] is
    given (aligned with ``times``) the bump scales with ``clip((T - 20) / 10, 0, 1.5)``
    instead of being the same every day. ``times`` must be tz-aware; ``tz`` is the
    site's zone for the local hour. Same inputs and seed -> the same series.
    """
    idx = pd.DatetimeIndex(times)
    if idx.tz is None:
        raise ValueError("times must be timezone-aware")
    if base_kw < 0:
        raise ValueError(f"base_kw: must be >= 0, got {base_kw}")
    peak = 0.6 * base_kw if cooling_peak_kw is None else cooling_peak_kw
    local = idx.tz_convert(tz)
    hour = local.hour + local.minute / 60.0 + local.second / 3600.0
    bump = np.exp(-0.5 * ((np.asarray(hour) - peak_hour) / width_h) ** 2)
    if temp_air is not None:
        t = np.asarray(temp_air, dtype=float)
        bump = bump * np.clip((t - 20.0) / 10.0, 0.0, 1.5)
    n = len(idx)
    phi = float(np.exp(-_step_h(idx) / 1.0))
    noise = _ar1(np.random.default_rng(seed), n, phi)
    load = (base_kw + peak * bump) * (1.0 + noise_frac * noise)
    return pd.Series(np.maximum(load, 0.0), index=idx, name="site_load_kw")
