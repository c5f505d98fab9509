"""forecasts.calibration: the fitting behind the nowcast blend and the bands by lead."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from forecasts import calibration as cal
from forecasts import nowcast
from forecasts.bands import CLEARSKY_BANDS, DEFAULT_BANDS, apply_bands, season
from forecasts.forecast import forecast_pv
from forecasts.pvmodel import pv_power
from forecasts.weather import clear_sky_weather, read_csv
from megastation.core.config import seeds_dir

CAP = 100.0


def _days(n_days=20, seed=0):
    """Clear sky of a 12-h day on 15-min steps and a measured index that wanders."""
    rng = np.random.default_rng(seed)
    t = np.arange(96 * n_days) % 96
    clear = np.clip(np.sin((t - 24) / 48 * np.pi), 0, None) * CAP
    k = np.clip(0.7 + np.cumsum(rng.normal(0, 0.03, t.size)) * 0.3, 0.1, 1.1)
    return clear * k, clear


def test_blend_weight_follows_the_better_input():
    measured, clear = _days()
    useless = cal.issues(measured, clear, clear, CAP, n_leads=24, window=1)  # raw = clear sky
    w = cal.fit_blend(useless)
    assert w[0] > 0.9 and (np.diff(w) <= 0.05).all()  # persistence first, the raw later
    perfect = cal.issues(measured, clear, measured, CAP, n_leads=24, window=1)
    assert cal.fit_blend(perfect).max() == pytest.approx(0.0, abs=1e-9)


def lead_bands(x: cal.Issues, p50: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """10th and 90th percentiles of ``(m - p50) / clear`` per lead (daylight), one band
    for all regimes: the plainest band a calibrated nowcast must already cover with."""
    q10, q90 = np.full(len(x.lead_h), np.nan), np.full(len(x.lead_h), np.nan)
    for h in range(len(x.lead_h)):
        ok = x.daylight[:, h] & np.isfinite(x.measured[:, h])
        if ok.sum() >= 20:
            e = (x.measured[ok, h] - p50[ok, h]) / x.clear[ok, h]
            q10[h], q90[h] = np.percentile(e, [10, 90])
    return np.minimum(q10, 0.0), np.maximum(q90, 0.0)


def test_fitted_blend_is_never_worse_than_persistence_on_its_days():
    measured, clear = _days(seed=3)
    x = cal.issues(measured, clear, 0.8 * clear, CAP, n_leads=24, window=1)
    w = cal.fit_blend(x)
    ev = cal.evaluate(x, cal.nowcast(x, w), x.raw, x.raw, CAP)
    assert (ev["skill"] >= -1e-9).all()
    q10, q90 = lead_bands(x, cal.nowcast(x, w))
    p50 = cal.nowcast(x, w)
    cov = cal.evaluate(x, p50, p50 + q10 * x.clear, p50 + q90 * x.clear, CAP)["coverage"]
    # 80 % where the errors straddle P50; more where they all fall on one side
    # (q10 <= 0 <= q90 keeps P10 <= P50 <= P90)
    assert (cov >= 0.78).all() and np.median(cov) <= 0.9


def test_recent_index_is_known_before_the_step():
    measured, clear = _days(n_days=5)
    k = cal.recent_index(measured, clear, CAP, 96)
    assert k[0] == 1.0  # no history
    day = clear >= 0.05 * CAP
    i = 96 * 3 + 50
    want = measured[i - 96 : i][day[i - 96 : i]].sum() / clear[i - 96 : i][day[i - 96 : i]].sum()
    assert k[i] == pytest.approx(want)


def test_bands_widen_with_lead_and_have_no_clear_sky_cap():
    for b in (DEFAULT_BANDS, CLEARSKY_BANDS):
        q10, q90 = b.at(np.array([0.125, 1.0, 6.0]))
        assert (np.diff(q10) < 0).all() and (np.diff(q90) > 0).all()
    winter = np.array([-1.0])  # the wider season: no 1.1 x clear cap shows
    _, p90 = apply_bands(np.array([90.0]), np.array([100.0]), 180.0, DEFAULT_BANDS, None, winter)
    _, q90 = DEFAULT_BANDS.quantiles(np.array([90.0]), np.array([100.0]), None, winter)
    assert p90[0] == pytest.approx(90.0 + 100.0 * q90[0]) and p90[0] > 110.0  # 1.1 x clear


def test_calibration_mirrors_forecast_pv(station):
    """The benchmark scores calibration.nowcast with the shipped weights: it must be
    what forecast_pv does (window of one step, blend by lead to the step middle)."""
    site = station.pv_site()
    wx = read_csv(seeds_dir() / "weather" / "mixed-week.csv")
    step = pd.Timedelta("15min")
    meas = pv_power(site, site.arrays, wx, step=step)["pv_ac_kw"]
    clear = pv_power(site, site.arrays, clear_sky_weather(wx.index), step=step)["pv_ac_kw"]
    i = 96 + 44  # 11:00 local on the second day
    x = cal.issues(meas.to_numpy(), clear.to_numpy(), None, site.peak_power_kw,
                   n_leads=24, window=1, issue_mask=np.arange(len(meas)) == i,
                   season=season(wx.index + step / 2, site.latitude))  # fmt: skip
    w = nowcast.blend_weights(x.lead_h, with_weather=False)
    mirror = cal.nowcast(x, w)[0]
    fc = forecast_pv(site, wx.index[i], 24, 15, measured_kw=meas.iloc[:i])
    np.testing.assert_allclose(fc["pv_ac_kw"].to_numpy(), np.minimum(mirror, 180.0), rtol=1e-6)
    # and its bands are what band_limits gives (by lead and regime; by regime without a nowcast)
    p50 = np.minimum(cal.nowcast(x, w), 180.0)
    p10, p90 = cal.band_limits(x, p50, CLEARSKY_BANDS, 180.0)
    np.testing.assert_allclose(fc["pv_ac_p10_kw"].to_numpy(), p10[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fc["pv_ac_p90_kw"].to_numpy(), p90[0], rtol=1e-6, atol=1e-9)
    night = forecast_pv(site, wx.index[i], 24, 15)  # no measured PV: the scalars by regime
    y = dataclasses.replace(x, k_meas=np.full_like(x.k_meas, np.nan), raw=x.clear)
    q10, q90 = cal.band_limits(y, np.minimum(y.clear, 180.0), CLEARSKY_BANDS, 180.0)
    np.testing.assert_allclose(night["pv_ac_p10_kw"].to_numpy(), q10[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(night["pv_ac_p90_kw"].to_numpy(), q90[0], rtol=1e-6, atol=1e-9)
