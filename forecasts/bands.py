"""P10/P90 bands around the P50 forecast, from the errors seen so far.

Errors are measured in *clear-sky index* units: ``e = (measured - forecast) /
clear_sky_pv`` on daylight steps (clear-sky PV at least 5 % of capacity), so one
spread serves noon and evening alike. The bands are

    p10 = clip(p50 + q10 * clear, 0, limit),  p90 = clip(p50 + q90 * clear, 0, min(limit, 1.1 * clear))

with ``q10``/``q90`` the 10th/90th percentiles of past errors (:func:`fit_bands`),
and ``p10 <= p50 <= p90`` always. Without enough history (fewer than
``MIN_SAMPLES`` daylight steps) :data:`DEFAULT_BANDS` is used: the error
percentiles of the cloud-cover forecast against the "measured" TMY3 PV of
Greensboro (see forecasts/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SAMPLES = 96
MIN_CLEAR_FRAC = 0.05
CLOUD_ENHANCEMENT = 1.1


@dataclass(frozen=True)
class Bands:
    """Error percentiles in clear-sky-index units; ``q10 <= 0 <= q90``."""

    q10: float
    q90: float
    n_samples: int = 0  # daylight steps they were fitted on; 0 = default
    source: str = "default"


#: Default spread when there is no history (Greensboro TMY3, cloud-cover forecast).
DEFAULT_BANDS = Bands(q10=-0.18, q90=0.23)


def fit_bands(
    measured_kw: np.ndarray,
    forecast_kw: np.ndarray,
    clear_kw: np.ndarray,
    capacity_kw: float,
    *,
    default: Bands = DEFAULT_BANDS,
) -> Bands:
    """Band percentiles from past measured vs forecast PV [kW] on the same steps."""
    m, f, c = (np.asarray(x, float) for x in (measured_kw, forecast_kw, clear_kw))
    ok = np.isfinite(m) & np.isfinite(f) & np.isfinite(c) & (c >= MIN_CLEAR_FRAC * capacity_kw)
    if ok.sum() < MIN_SAMPLES:
        return default
    e = (m[ok] - f[ok]) / c[ok]
    q10, q90 = np.percentile(e, [10, 90])
    return Bands(min(float(q10), 0.0), max(float(q90), 0.0), int(ok.sum()), "history")


def apply_bands(
    p50_kw: np.ndarray, clear_kw: np.ndarray, limit_kw: float, bands: Bands
) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 [kW] around ``p50_kw`` (totals) for the given bands."""
    p10 = np.clip(p50_kw + bands.q10 * clear_kw, 0.0, limit_kw)
    top = np.minimum(limit_kw, CLOUD_ENHANCEMENT * clear_kw)
    p90 = np.clip(p50_kw + bands.q90 * clear_kw, 0.0, top)
    return np.minimum(p10, p50_kw), np.maximum(p90, p50_kw)
