"""P10/P90 bands by season: the season measure (either hemisphere, no month table), a
synthetic year whose summer and winter errors differ (the bands must differ and cover
0.75-0.85 held out in each season; one spread for both cannot), and the season reaching
the bands through forecast_pv and the shipped tables."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pvlib
import pytest

from forecasts import bands as _bands
from forecasts import calibration as cal
from forecasts.bands import (
    CLEARSKY_BANDS,
    DEFAULT_BANDS,
    SEASON_EDGES,
    Bands,
    apply_bands,
    fit_bands,
    season,
)
from forecasts.forecast import assemble, forecast_pv

CAP = 100.0


def test_season_is_plus_one_in_local_summer_on_either_hemisphere():
    t = pd.DatetimeIndex(["2026-06-21", "2026-12-21", "2026-03-21", "2026-09-23"], tz="UTC")
    north, south = season(t, 35.1), season(t, -33.9)
    np.testing.assert_allclose(north, [1.0, -1.0, 0.0, 0.0], atol=0.05)  # Cooper: ~2 days off
    np.testing.assert_allclose(south, -north)
    assert (season(t, 0.0) == 0.0).all()  # the equator: no season


def _year(seed: int = 0):
    """A year of daylight steps (8 a day) at one clear-sky level: the forecast misses by
    N(0, 0.05) of clear sky in the summer half and by N(0, 0.20) in the winter half."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2026-01-01", "2026-12-31", freq="D", tz="UTC")
    t = days.repeat(8) + pd.to_timedelta(np.tile(np.arange(8), len(days)), unit="h")
    s = season(t, 35.1)
    sigma = np.where(s >= 0, 0.05, 0.20)
    clear = np.full(len(t), 80.0)
    forecast = np.full(len(t), 50.0)
    measured = forecast + rng.normal(0.0, 1.0, len(t)) * sigma * clear
    odd = (t.day_of_year.to_numpy() % 2) == 1
    return measured, forecast, clear, s, odd


def _coverage(b: Bands, m, f, c, s, on) -> float:
    p10, p90 = apply_bands(f[on], c[on], 2 * CAP, b, season_of=s[on])
    return float(((m[on] >= p10) & (m[on] <= p90)).mean())


def test_bands_differ_by_season_and_cover_80_percent_held_out_in_each():
    m, f, c, s, odd = _year()
    halves = (0.0,)  # the synthetic year's seasons are its halves
    b = fit_bands(m[odd], f[odd], c[odd], CAP, season_of=s[odd], season_edges=halves)
    assert b.season_edges == halves  # fitted on the odd days
    n_reg = len(b.regime_edges) + 1
    r = _bands.regime(np.array([50.0]), np.array([80.0]), b.regime_edges)[0]
    winter, summer = b.q90_by_regime[r], b.q90_by_regime[n_reg + r]
    assert summer == pytest.approx(1.28 * 0.05, rel=0.15)
    assert winter == pytest.approx(1.28 * 0.20, rel=0.15)
    even = ~odd
    for half in (s >= 0, s < 0):  # scored on the even days, season by season
        assert 0.75 <= _coverage(b, m, f, c, s, even & half) <= 0.85


def test_without_the_season_one_spread_misses_both_seasons():
    """What the season conditioning is for: dropped, summer is over-covered and winter
    under-covered (this fails if fit_bands or apply_bands ignore the season)."""
    m, f, c, s, odd = _year()
    pooled = fit_bands(m[odd], f[odd], c[odd], CAP)  # no season given: one spread
    assert pooled.season_edges == ()
    even = ~odd
    assert _coverage(pooled, m, f, c, s, even & (s >= 0)) > 0.95
    assert _coverage(pooled, m, f, c, s, even & (s < 0)) < 0.70


def test_a_sparse_season_takes_its_regimes_values_over_all_seasons():
    m, f, c, s, _ = _year()
    summer_only = s >= 0
    on = summer_only
    b = fit_bands(m[on], f[on], c[on], CAP, season_of=s[on], season_edges=(0.0,))
    n_reg = len(b.regime_edges) + 1
    assert b.q90_by_regime[:n_reg] == b.q90_by_regime[n_reg:]  # winter cells = all-season


def _two_seasons() -> Bands:
    """Bands whose winter spread (season < 0) is 0.3 and summer spread 0.1, any regime."""
    n = len(_bands.REGIME_EDGES) + 1
    return Bands(
        -0.1, 0.1, regime_edges=_bands.REGIME_EDGES, season_edges=(0.0,),
        q10_by_regime=(-0.3,) * n + (-0.1,) * n, q90_by_regime=(0.3,) * n + (0.1,) * n,
    )  # fmt: skip


def test_seasonal_bands_need_the_season():
    with pytest.raises(ValueError, match=r"^season: required"):
        apply_bands(np.array([50.0]), np.array([80.0]), CAP, _two_seasons())


def test_shipped_weather_bands_are_seasonal_and_wider_in_winter():
    b = DEFAULT_BANDS
    assert b.season_edges == pytest.approx(SEASON_EDGES, abs=1e-4)
    n_reg = len(b.regime_edges) + 1
    assert len(b.q90_by_regime_lead) == n_reg * (len(SEASON_EDGES) + 1)
    rows = np.asarray(b.q90_by_regime_lead) - np.asarray(b.q10_by_regime_lead)
    winter, summer = rows[:n_reg].mean(), rows[-n_reg:].mean()
    assert winter > summer
    assert CLEARSKY_BANDS.season_edges == ()  # no held-out gain without a weather forecast


def test_forecast_pv_takes_the_season_of_the_sites_hemisphere(station):
    site = station.pv_site()
    south = dataclasses.replace(site, latitude=-site.latitude)
    b = _two_seasons()

    def spread(s, when):
        fc = forecast_pv(s, when, 96, 15, bands=b)
        day = fc["pv_clear_kw"] > 0.05 * s.peak_power_kw
        up = (fc["pv_ac_p90_kw"] - fc["pv_ac_kw"]) / fc["pv_clear_kw"]
        return float(up[day & (fc["pv_ac_p90_kw"] < s.ac_limit_kw - 1e-6)].median())

    june, december = datetime(2026, 6, 20, 15, tzinfo=UTC), datetime(2026, 12, 20, 15, tzinfo=UTC)
    assert spread(site, june) == pytest.approx(0.1)
    assert spread(site, december) == pytest.approx(0.3)
    assert spread(south, june) == pytest.approx(0.3)
    assert spread(south, december) == pytest.approx(0.1)


def test_assemble_needs_the_latitude():
    grid = pd.date_range("2026-06-20 03:00", periods=2, freq="15min", tz="UTC")
    pv = np.full((2, 1), 50.0)
    with pytest.raises(TypeError, match="latitude_deg"):
        assemble((), grid, grid[0], pv, pv, np.array([100.0]), None, with_weather=True)


def _season_issues(n_issues: int, seed: int):
    """Issues with a measured index, 6 leads, one regime (p50/clear 0.6); errors growing
    with lead, three times larger in the winter half (season < 0) than in the summer half."""
    rng = np.random.default_rng(seed)
    lead_h = (np.arange(6) + 0.5) * 0.25
    clear = rng.uniform(30.0, 90.0, (n_issues, 6))
    s = np.broadcast_to(rng.uniform(-1.0, 1.0, (n_issues, 1)), clear.shape)
    p50 = 0.6 * clear
    sd = np.where(s < 0, 0.15, 0.05) * (0.3 + lead_h)[None, :]
    measured = p50 + rng.normal(0.0, 1.0, p50.shape) * sd * clear
    x = cal.Issues(
        lead_h=lead_h, measured=measured, clear=clear, raw=p50, k_meas=np.full((n_issues, 1), 0.8),
        persistence=p50, daylight=np.ones_like(p50, bool), season=s,
    )  # fmt: skip
    return x, p50


def test_band_table_by_season_covers_80_percent_held_out_per_season_and_lead():
    x, p50 = _season_issues(3000, seed=1)
    b = cal.fit_band_table(x, p50, season_edges=(0.0,))
    assert len(b.q10_by_regime_lead) == 2 * (len(_bands.REGIME_EDGES) + 1)
    y, q50 = _season_issues(3000, seed=2)
    p10, p90 = cal.band_limits(y, q50, b, 500.0)
    winter = y.season[:, 0] < 0
    for part in (winter, ~winter):
        inside = (y.measured[part] >= p10[part]) & (y.measured[part] <= p90[part])
        assert ((inside.mean(axis=0) >= 0.75) & (inside.mean(axis=0) <= 0.85)).all()
    width = (p90 - p10) / y.clear
    assert width[winter].mean() > 2 * width[~winter].mean()
    # without the season the same table misses both halves
    flat = cal.fit_band_table(x, p50)
    p10, p90 = cal.band_limits(y, q50, flat, 500.0)
    inside = (y.measured >= p10) & (y.measured <= p90)
    assert inside[~winter].mean() > 0.95 and inside[winter].mean() < 0.70


def test_season_is_coopers_declination_over_its_maximum():
    t = pd.date_range("2026-01-01", "2026-12-31", freq="D", tz="UTC")
    dec = pvlib.solarposition.declination_cooper69(t.day_of_year.to_numpy()) / np.deg2rad(23.45)
    np.testing.assert_allclose(season(t, 48.0), dec, atol=1e-12)
    np.testing.assert_allclose(season(t, -12.0), -dec, atol=1e-12)


def test_a_step_on_a_season_edge_is_fitted_and_applied_in_the_same_bin():
    """Steps at season exactly 0 (the edge) miss by little, the winter ones by a lot: the
    edge steps must go to the same (upper) bin in fit_bands and apply_bands."""
    rng = np.random.default_rng(3)
    n = 400
    s = np.where(np.arange(n) % 2 == 0, 0.0, -0.5)
    sigma = np.where(s == 0.0, 0.05, 0.20)
    c, f = np.full(n, 80.0), np.full(n, 50.0)
    m = f + rng.normal(0.0, 1.0, n) * sigma * c
    b = fit_bands(m, f, c, CAP, season_of=s, season_edges=(0.0,))
    edge = s == 0.0
    p10, p90 = apply_bands(f, c, 2 * CAP, b, season_of=s)
    e = (m - f) / c
    np.testing.assert_allclose((p90 - f)[edge] / c[edge], np.percentile(e[edge], 90))
    np.testing.assert_allclose((p10 - f)[~edge] / c[~edge], np.percentile(e[~edge], 10))


def test_season_is_the_day_of_year_where_the_times_are():
    """Zoned times count their own calendar day (#15: season from nanoseconds)."""
    utc = pd.DatetimeIndex(["2026-12-31 20:00"], tz="UTC")  # 2027-01-01 05:00 in Seoul
    seoul = utc.tz_convert("Asia/Seoul")
    doy = {"utc": 365.0, "seoul": 1.0}
    want = {k: np.sin(2 * np.pi * (284.0 + d) / 365.0) for k, d in doy.items()}
    assert season(utc, 35.1)[0] == want["utc"]
    assert season(seoul, 35.1)[0] == want["seoul"]
    assert season(utc.tz_localize(None), 35.1)[0] == want["utc"]
