"""P10/P90 bands on skewed errors, with a forecast that is not clear sky: percentiles in
clear-sky-index units, night and missing steps left out, the clips at zero, the
inverter limit (no cap at a multiple of clear sky: cloud enhancement is real), bands by
lead, and the ordering p10 <= p50 <= p90."""

from __future__ import annotations

import numpy as np
import pytest

from forecasts.bands import (
    DEFAULT_BANDS,
    MIN_SAMPLES,
    Bands,
    apply_bands,
    fit_bands,
)


def _history(errors: np.ndarray, clear_kw: float = 80.0, forecast_kw: float = 50.0):
    """Measured = forecast + error x clear sky, on daylight steps of one clear-sky level."""
    n = len(errors)
    clear = np.full(n, clear_kw)
    forecast = np.full(n, forecast_kw)
    return forecast + errors * clear, forecast, clear


def test_percentiles_of_skewed_errors_in_clear_sky_units():
    # 101 errors -0.10, -0.09, ... and a long tail up: 10th pct -0.2 + ..., see below.
    e = np.concatenate([np.linspace(-0.2, 0.0, 51), np.linspace(0.01, 0.6, 50)])
    m, f, c = _history(e)
    b = fit_bands(m, f, c, 100.0)
    q10, q90 = np.percentile(e, [10, 90])
    assert (b.q10, b.q90) == pytest.approx((q10, q90))
    assert b.q10 == pytest.approx(-0.16)
    assert b.q90 == pytest.approx(np.percentile(e, 90))
    assert b.q90 > 2 * -b.q10  # skewed: the band is not symmetric
    assert (b.n_samples, b.source) == (101, "history")


def test_errors_are_scaled_by_clear_sky_not_by_the_forecast():
    # The same kW errors at a clear-sky level twice as high give half the index errors.
    e = np.linspace(-0.3, 0.5, 120)
    m, f, c = _history(e, clear_kw=40.0, forecast_kw=10.0)
    b1 = fit_bands(m, f, c, 100.0)
    b2 = fit_bands(m, f, 2 * c, 100.0)
    assert b2.q10 == pytest.approx(b1.q10 / 2)
    assert b2.q90 == pytest.approx(b1.q90 / 2)


def test_night_and_missing_steps_are_left_out():
    e = np.linspace(-0.2, 0.4, MIN_SAMPLES)
    m, f, c = _history(e)
    # Add night steps (clear below 5 % of 100 kW) with huge errors, and NaNs.
    m = np.concatenate([m, [40.0, np.nan, 30.0, 30.0]])
    f = np.concatenate([f, [0.0, 30.0, np.nan, 30.0]])
    c = np.concatenate([c, [4.9, 80.0, 80.0, np.nan]])
    b = fit_bands(m, f, c, 100.0)
    assert b.n_samples == MIN_SAMPLES
    assert (b.q10, b.q90) == pytest.approx(tuple(np.percentile(e, [10, 90])))
    # Exactly 5 % of capacity counts as daylight.
    m2, f2, c2 = _history(e, clear_kw=5.0, forecast_kw=2.0)
    assert fit_bands(m2, f2, c2, 100.0).n_samples == MIN_SAMPLES


def test_too_little_history_gives_the_default():
    m, f, c = _history(np.linspace(-0.2, 0.4, MIN_SAMPLES - 1))
    assert fit_bands(m, f, c, 100.0) == DEFAULT_BANDS
    mine = Bands(-0.5, 0.5)
    assert fit_bands(m, f, c, 100.0, default=mine) is mine
    m, f, c = _history(np.linspace(-0.2, 0.4, MIN_SAMPLES))
    assert fit_bands(m, f, c, 100.0).source == "history"


def test_one_sided_errors_keep_zero_inside_the_band():
    # A forecast that always under-predicts: q10 > 0 would put p50 below p10.
    m, f, c = _history(np.linspace(0.05, 0.3, 200))
    b = fit_bands(m, f, c, 100.0)
    assert b.q10 == 0.0 and b.q90 > 0.0
    m, f, c = _history(np.linspace(-0.3, -0.05, 200))
    b = fit_bands(m, f, c, 100.0)
    assert b.q90 == 0.0 and b.q10 < 0.0


def test_apply_bands_by_hand():
    b = Bands(q10=-0.2, q90=0.3)
    p50 = np.array([0.0, 30.0, 60.0, 90.0, 5.0])
    clear = np.array([0.0, 100.0, 100.0, 100.0, 50.0])
    p10, p90 = apply_bands(p50, clear, 95.0, b)
    # p10 = p50 - 0.2 clear, at least 0; p90 = p50 + 0.3 clear, at most the limit 95.
    np.testing.assert_allclose(p10, [0.0, 10.0, 40.0, 70.0, 0.0])
    np.testing.assert_allclose(p90, [0.0, 60.0, 90.0, 95.0, 20.0])


def test_p90_may_exceed_clear_sky_up_to_the_inverter_limit():
    # Clear sky 50 kW on a 100 kW inverter: p90 = 45 + 0.4 x 50 = 65 kW (cloud
    # enhancement; a 1.1 x clear-sky cap at 55 kW made P90 cover less than it claims).
    p10, p90 = apply_bands(np.array([45.0]), np.array([50.0]), 100.0, Bands(-0.1, 0.4))
    np.testing.assert_allclose(p90, [65.0])
    np.testing.assert_allclose(p10, [40.0])


def test_bands_by_lead_interpolate_and_hold():
    b = Bands(-0.3, 0.4, leads_h=(0.5, 2.5), q10_by_lead=(-0.1, -0.3), q90_by_lead=(0.1, 0.5))
    lead = np.array([0.0, 1.0, 2.5, 10.0])
    p50, clear = np.full(4, 50.0), np.full(4, 100.0)
    p10, p90 = apply_bands(p50, clear, 200.0, b, lead)
    # q10 -0.1 held before 0.5 h, -0.15 at 1 h (a quarter of the way), -0.3 from 2.5 h on
    np.testing.assert_allclose(p10, [40.0, 35.0, 20.0, 20.0])
    np.testing.assert_allclose(p90, [60.0, 70.0, 100.0, 100.0])
    # without leads (no nowcast) the scalars apply
    p10, p90 = apply_bands(p50, clear, 200.0, b)
    np.testing.assert_allclose(p10, 20.0)
    np.testing.assert_allclose(p90, 90.0)


def test_p50_always_inside_its_band():
    # A P50 above clear sky (nowcast on a bright hour) or above the limit.
    b = Bands(q10=-0.2, q90=0.3)
    p50 = np.array([70.0, 120.0])
    p10, p90 = apply_bands(p50, np.array([50.0, 100.0]), 100.0, b)
    assert (p10 <= p50).all() and (p50 <= p90).all()
    np.testing.assert_allclose(p90, [85.0, 120.0])  # 70 + 15; 120 above the limit stays
    np.testing.assert_allclose(p10, [60.0, 100.0])


def test_bands_at_dawn_and_above_the_limit():
    # Dawn: clear 1 kW, P50 0.2 kW, q90 0.3 -> P90 0.5 kW (not rounded up to anything).
    p10, p90 = apply_bands(np.array([0.2]), np.array([1.0]), 100.0, Bands(-0.1, 0.3))
    np.testing.assert_allclose(p90, [0.5])
    np.testing.assert_allclose(p10, [0.1])
    # A P50 above the inverter limit: P10 stays within the limit.
    p10, _ = apply_bands(np.array([120.0]), np.array([100.0]), 100.0, Bands(-0.1, 0.3))
    np.testing.assert_allclose(p10, [100.0])


def test_p90_is_never_negative_even_for_a_p50_below_zero():
    # An inverter's night draw can make P50 slightly negative: P90 stays at 0, P10 at P50.
    p10, p90 = apply_bands(np.array([-0.5, -0.5]), np.array([0.0, 2.0]), 100.0, Bands(-0.1, 0.1))
    np.testing.assert_allclose(p90, [0.0, 0.0])
    np.testing.assert_allclose(p10, [-0.5, -0.5])
