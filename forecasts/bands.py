"""P10/P90 bands around the P50 forecast, by lead time.

Errors are measured in *clear-sky index* units: ``e = (measured - forecast) /
clear_sky_pv`` on daylight steps (clear-sky PV at least 5 % of capacity), so one
spread serves noon and evening alike. The bands are

    p10 = clip(p50 + q10(lead) * clear, 0, limit),  p90 = clip(p50 + q90(lead) * clear, 0, limit)

with ``q10``/``q90`` the 10th/90th error percentiles at that lead, and
``p10 <= p50 <= p90`` always. No cap at a multiple of clear sky: cloud enhancement is
real and a cap made P90 cover less than it claims. The spread grows with lead while
the nowcast's measured index loses weight; without a nowcast (no measured PV, or at
night) the scalar ``q10``/``q90`` (the raw forecast's errors) apply.

Defaults: :data:`DEFAULT_BANDS` (with a weather forecast) and
:data:`CLEARSKY_BANDS` (clear sky x recent index), fitted by
:func:`forecasts.calibration.fit_lead_bands` (benchmarks/forecast.py ``--fit``; see
forecasts/README.md for the data and the held-out coverage). :func:`fit_bands` fits
scalar percentiles from a station's own history (>= ``MIN_SAMPLES`` daylight steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SAMPLES = 96
MIN_CLEAR_FRAC = 0.05


@dataclass(frozen=True)
class Bands:
    """Error percentiles in clear-sky-index units; ``q10 <= 0 <= q90``.

    ``q10``/``q90`` apply without a nowcast; ``leads_h`` with ``q10_by_lead`` /
    ``q90_by_lead`` (same length) apply by lead [h] when the nowcast corrected P50
    (linear between nodes, held outside).
    """

    q10: float
    q90: float
    n_samples: int = 0  # daylight steps they were fitted on; 0 = default
    source: str = "default"
    leads_h: tuple[float, ...] = ()
    q10_by_lead: tuple[float, ...] = ()
    q90_by_lead: tuple[float, ...] = ()

    def at(self, lead_h: np.ndarray | None) -> tuple[np.ndarray | float, np.ndarray | float]:
        """``(q10, q90)`` at each lead, or the scalars when ``lead_h`` is None."""
        if lead_h is None or not self.leads_h:
            return self.q10, self.q90
        lead = np.clip(np.asarray(lead_h, float), 0.0, None)
        return (
            np.interp(lead, self.leads_h, self.q10_by_lead),
            np.interp(lead, self.leads_h, self.q90_by_lead),
        )


_LEADS = (0.125, 0.375, 0.625, 0.875, 1.125, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)

#: With a weather forecast.
DEFAULT_BANDS = Bands(
    q10=-0.15,
    q90=0.25,
    leads_h=_LEADS,
    q10_by_lead=(
        -0.06,
        -0.09,
        -0.11,
        -0.12,
        -0.13,
        -0.14,
        -0.14,
        -0.14,
        -0.15,
        -0.15,
        -0.15,
        -0.15,
        -0.15,
    ),
    q90_by_lead=(0.04, 0.09, 0.12, 0.15, 0.16, 0.18, 0.19, 0.21, 0.22, 0.23, 0.23, 0.24, 0.25),
)
#: Without one (clear sky x the recent clear-sky index).
CLEARSKY_BANDS = Bands(
    q10=-0.45,
    q90=0.38,
    leads_h=_LEADS,
    q10_by_lead=(
        -0.06,
        -0.12,
        -0.16,
        -0.19,
        -0.22,
        -0.25,
        -0.28,
        -0.33,
        -0.36,
        -0.39,
        -0.41,
        -0.45,
        -0.46,
    ),
    q90_by_lead=(0.04, 0.09, 0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.34, 0.35, 0.36, 0.37, 0.38),
)


def fit_bands(
    measured_kw: np.ndarray,
    forecast_kw: np.ndarray,
    clear_kw: np.ndarray,
    capacity_kw: float,
    *,
    default: Bands = DEFAULT_BANDS,
) -> Bands:
    """Scalar band percentiles from past measured vs forecast PV [kW] on the same steps."""
    m, f, c = (np.asarray(x, float) for x in (measured_kw, forecast_kw, clear_kw))
    ok = np.isfinite(m) & np.isfinite(f) & np.isfinite(c) & (c >= MIN_CLEAR_FRAC * capacity_kw)
    if ok.sum() < MIN_SAMPLES:
        return default
    e = (m[ok] - f[ok]) / c[ok]
    q10, q90 = np.percentile(e, [10, 90])
    return Bands(min(float(q10), 0.0), max(float(q90), 0.0), int(ok.sum()), "history")


def apply_bands(
    p50_kw: np.ndarray,
    clear_kw: np.ndarray,
    limit_kw: float,
    bands: Bands,
    lead_h: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 [kW] around ``p50_kw`` (totals); by lead when ``lead_h`` is given."""
    q10, q90 = bands.at(lead_h)
    p10 = np.clip(p50_kw + q10 * clear_kw, 0.0, limit_kw)
    p90 = np.clip(p50_kw + q90 * clear_kw, 0.0, limit_kw)
    return np.minimum(p10, p50_kw), np.maximum(p90, p50_kw)
