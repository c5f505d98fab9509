"""The whole forecast chain on pvlib's Greensboro TMY3 file, plus nowcast, bands, scores, store."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest

from forecasts import nowcast
from forecasts.bands import DEFAULT_BANDS, apply_bands, fit_bands
from forecasts.forecast import forecast_pv
from forecasts.pvmodel import pv_power, solar_geometry
from forecasts.scoring import score, smart_persistence
from forecasts.site import PVArray, PVSite
from forecasts.weather import read_tmy3
from megastation.control.pv_forecast import issue_forecast
from megastation.core.config import Station
from megastation.store.forecasts import load_issued

TMY3 = Path(pvlib.__path__[0]) / "data" / "723170TYA.CSV"


@pytest.fixture(scope="module")
def tmy():
    return read_tmy3(TMY3)


@pytest.fixture
def greensboro(station: Station, tmy) -> PVSite:
    _, meta = tmy
    return dataclasses.replace(
        station.pv_site(),
        latitude=meta["latitude"],
        longitude=meta["longitude"],
        altitude_m=meta["altitude"],
        timezone="Etc/GMT+5",
    )


SOUTH = PVArray("south", peak_power_kw=100.0, tilt_deg=30.0, azimuth_deg=180.0)


def test_year_yield_per_kwp_is_plausible(greensboro, tmy):
    wx, _ = tmy
    out = pv_power(greensboro, greensboro.arrays, wx)
    assert len(out) == 8760
    yield_kwh_per_kwp = out["pv_ac_kw"].sum() / greensboro.peak_power_kw
    assert 1150 < yield_kwh_per_kwp < 1450
    south = pv_power(greensboro, [SOUTH], wx)["pv_ac_kw"].sum() / 100.0
    assert south > yield_kwh_per_kwp  # a 30° south array beats flat-ish and west ones
    per_array = out.drop(columns="pv_ac_kw").sum(axis=1)
    np.testing.assert_allclose(per_array, out["pv_ac_kw"])


def test_night_is_exactly_zero_and_never_nan(greensboro, tmy):
    wx, _ = tmy
    out = pv_power(greensboro, greensboro.arrays, wx)
    geo = solar_geometry(greensboro, wx.index, pd.Timedelta("1h"))
    assert not out.isna().any().any()
    assert (out.to_numpy()[geo.apparent_zenith >= 90] == 0.0).all()
    assert (out.to_numpy() >= 0).all()


def test_solar_geometry_depends_on_the_instants_not_the_zone(station):
    """The same instants in UTC, local time or naive (UTC) give bit-equal geometry,
    whichever zone fills the cache first (in-process vs worker simulations differed)."""
    from forecasts.pvmodel import clear_cache

    step = pd.Timedelta(minutes=15)
    utc_index = pd.date_range("2026-06-30T01:00Z", periods=40, freq=step)
    local = utc_index.tz_convert(station.site.timezone)
    naive = utc_index.tz_localize(None)
    fields = [f.name for f in dataclasses.fields(solar_geometry(station.pv_site(), local, step))]
    for order in ((utc_index, local, naive), (local, naive, utc_index), (naive, utc_index, local)):
        got = []
        for idx in order:
            clear_cache()
            got.append(solar_geometry(station.pv_site(), idx, step))
        got.append(solar_geometry(station.pv_site(), order[1], step))  # a cache hit
        for g in got[1:]:
            for name in fields:
                np.testing.assert_array_equal(getattr(g, name), getattr(got[0], name), name)


def test_daily_peak_is_near_solar_noon(greensboro, tmy):
    wx, _ = tmy
    site = greensboro
    out = pv_power(site, [SOUTH], wx, clear_sky=True)["pv_ac_kw"]
    geo = solar_geometry(site, wx.index, pd.Timedelta("1h"))
    zen = pd.Series(geo.zenith, index=wx.index)
    days = out.index.tz_convert(site.timezone).date
    for d in sorted(set(days))[1:-1]:
        sel = days == d
        peak = out[sel].idxmax()
        noon = zen[sel].idxmin()
        assert abs(peak - noon) <= pd.Timedelta("1h"), d


def test_output_is_clipped_at_the_inverter_limit(greensboro, tmy):
    wx, _ = tmy
    small = dataclasses.replace(SOUTH, inverter_ac_kw=50.0)
    out = pv_power(greensboro, [small], wx)["pv_ac_kw"]
    assert out.max() == pytest.approx(50.0)
    assert (out <= 50.0 + 1e-9).all()
    assert (out >= 50.0 - 1e-9).sum() > 100  # clipped for many hours


def test_cloud_cover_forecast_scores_better_than_clear_sky(greensboro, tmy):
    wx, _ = tmy
    site, arrays = greensboro, greensboro.arrays
    measured = pv_power(site, arrays, wx)["pv_ac_kw"]  # from measured GHI/DNI/DHI
    cc_only = wx[["cloud_cover", "temp_air", "wind_speed"]]
    from_clouds = pv_power(site, arrays, cc_only)["pv_ac_kw"]
    clear = pv_power(site, arrays, wx, clear_sky=True)["pv_ac_kw"]
    cap = greensboro.peak_power_kw
    s_cc = score(measured, from_clouds, clear, cap, tz=site.timezone).iloc[-1]
    s_cs = score(measured, clear, clear, cap, tz=site.timezone).iloc[-1]
    assert s_cc["day"] == "overall"
    assert s_cc["nrmse"] < s_cs["nrmse"]
    assert s_cc["nmae"] < s_cs["nmae"]
    assert s_cc["skill"] > s_cs["skill"]
    assert s_cs["nbias"] > 0  # clear sky over-forecasts


def test_smart_persistence_on_a_hand_made_example():
    idx = pd.date_range("2026-06-01", periods=48, freq="1h", tz="UTC")
    shape = np.clip(np.sin((np.arange(48) % 24 - 6) / 12 * np.pi), 0, None)
    clear = pd.Series(100.0 * shape, index=idx)
    clear.iloc[24:] *= 1.1  # day 2 has 10 % more clear-sky PV
    measured = clear * np.where(np.arange(48) < 24, 0.5, 0.8)
    p = smart_persistence(measured, clear, capacity_kw=100.0)
    assert p.iloc[:24].isna().all()  # no day before day 1
    day2 = clear.iloc[24:] > 5
    np.testing.assert_allclose(p.iloc[24:][day2], 0.5 * clear.iloc[24:][day2])
    # a perfect forecast has skill 1; persistence itself has skill 0
    s = score(measured, measured, clear, 100.0)
    assert s.iloc[-1]["skill"] == pytest.approx(1.0)
    assert s.iloc[-1]["nmae"] == 0.0
    s = score(measured, p, clear, 100.0)
    assert s.iloc[-1]["skill"] == pytest.approx(0.0)
    e = (0.5 - 0.8) * clear.iloc[24:][day2]
    assert s.iloc[-1]["nrmse_persistence"] == pytest.approx(np.sqrt((e**2).mean()) / 100.0)
    assert list(s["day"]) == ["2026-06-01", "2026-06-02", "overall"]


T = datetime(2026, 6, 15, 1, 0, tzinfo=UTC)  # 10:00 in Seoul


def test_forecast_pv_shape_and_clear_sky(station):
    fc = forecast_pv(station.pv_site(), T, 192)
    assert len(fc) == 192 and fc.index[0] == pd.Timestamp(T)
    assert fc.index.tz is not None
    assert not fc.isna().any().any()
    arrays = [c for c in fc.columns if c.startswith("pv_ac_kw[")]
    assert arrays == ["pv_ac_kw[canopy-south]", "pv_ac_kw[roof-west]"]
    np.testing.assert_allclose(fc[arrays].sum(axis=1), fc["pv_ac_kw"])
    assert (fc["pv_ac_p10_kw"] <= fc["pv_ac_kw"]).all()
    assert (fc["pv_ac_kw"] <= fc["pv_ac_p90_kw"]).all()
    assert fc["pv_ac_p90_kw"].max() <= 180.0
    assert fc.attrs["k_meas"] is None


def test_nowcast_follows_measured_pv_then_decays(station):
    raw = forecast_pv(station.pv_site(), T, 192)
    # the last hour produced half the clear-sky PV
    past = pd.date_range(T - timedelta(hours=1), T, freq="1min", inclusive="left")
    past_fc = forecast_pv(station.pv_site(), T - timedelta(hours=1), 4)
    measured = pd.Series(
        0.5 * past_fc["pv_clear_kw"].reindex(past, method="ffill").to_numpy(), index=past
    )
    fc = forecast_pv(station.pv_site(), T, 192, measured_kw=measured)
    assert fc.attrs["k_meas"] == pytest.approx(0.5, abs=0.01)
    first = fc["pv_ac_kw"].iloc[0] / fc["pv_clear_kw"].iloc[0]
    assert first == pytest.approx(0.5, abs=0.05)
    # the measured index loses weight with lead (nowcast.BLEND_CLEARSKY): none after 24 h
    later = fc.index >= pd.Timestamp(T) + pd.Timedelta("24h")
    np.testing.assert_allclose(fc["pv_ac_kw"][later], raw["pv_ac_kw"][later], rtol=0.01, atol=0.5)
    lead = (fc.index + pd.Timedelta("7.5min") - pd.Timestamp(T)).total_seconds() / 3600
    w = np.interp(lead, nowcast.BLEND_LEADS_H, nowcast.BLEND_CLEARSKY)
    ratio = (fc["pv_ac_kw"] / fc["pv_clear_kw"]).where(fc["pv_clear_kw"] > 20)
    np.testing.assert_allclose(ratio.dropna(), (1 - 0.5 * w)[ratio.notna()], atol=0.02)
    # measurements after the issue time are ignored
    future = pd.Series(0.0, index=pd.date_range(T, periods=60, freq="1min"))
    fc2 = forecast_pv(station.pv_site(), T, 192, measured_kw=future)
    assert fc2.attrs["k_meas"] is None
    np.testing.assert_allclose(fc2["pv_ac_kw"], raw["pv_ac_kw"])


def test_bands_from_history_and_default():
    rng = np.random.default_rng(1)
    clear = np.full(500, 100.0)
    forecast = np.full(500, 60.0)
    measured = forecast + rng.normal(0, 10, 500)
    b = fit_bands(measured, forecast, clear, 100.0)
    assert b.source == "history" and b.n_samples == 500
    assert b.q10 == pytest.approx(-0.128, abs=0.03)
    assert b.q90 == pytest.approx(0.128, abs=0.03)
    assert fit_bands(measured[:10], forecast[:10], clear[:10], 100.0) == DEFAULT_BANDS
    p10, p90 = apply_bands(np.array([0.0, 50.0, 100.0]), np.array([0.0, 100.0, 100.0]), 100.0, b)
    assert p10[0] == p90[0] == 0.0
    assert p90[2] == 100.0  # never above the AC limit


def test_issued_forecasts_are_stored_and_loaded(store, station, clock):
    issue_forecast(store, station)
    clock.set(clock.now() + timedelta(hours=1))
    second = issue_forecast(store, station)
    t0 = clock.now() - timedelta(hours=1)
    got = load_issued(store, t0, t0 + timedelta(hours=3))
    assert len(got) == 12
    # steps after the second issue come from it
    late = got.index >= second.index[0]
    np.testing.assert_allclose(
        got["pv_ac_kw"][late].to_numpy(float),
        second["pv_ac_kw"].iloc[: late.sum()].round(3).to_numpy(),
    )
    ahead = load_issued(store, t0, t0 + timedelta(hours=3), lead_min=120)
    assert (ahead["issued_at"] <= ahead.index - pd.Timedelta("2h")).all()
