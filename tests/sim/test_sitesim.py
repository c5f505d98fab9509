"""Simulated site: weather seeds, the degraded forecast, other site load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from megastation.core.config import seeds_dir
from megastation.sim.site import degrade_weather, site_load_kw

WEATHER = seeds_dir() / "weather"


def _read(name: str) -> pd.DataFrame:
    df = pd.read_csv(WEATHER / name)
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("time")))
    return df


@pytest.mark.parametrize("name", ["clear-day.csv", "cloudy-day.csv", "mixed-week.csv"])
def test_weather_seed_files_are_well_formed(name):
    text = (WEATHER / name).read_text().splitlines()
    assert text[0] == "time,ghi,cloud_cover,temp_air,wind_speed"
    assert text[1].split(",")[0].endswith("+09:00")
    df = _read(name)
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert (df.index.to_series().diff().dropna() == pd.Timedelta("15min")).all()
    assert (df["ghi"] >= 0).all() and df["ghi"].max() < 1300
    assert df["cloud_cover"].between(0, 100).all()
    local = df.index.tz_convert("Asia/Seoul")
    night = (local.hour < 4) | (local.hour >= 21)
    assert (df.loc[night, "ghi"] == 0).all()
    if name == "clear-day.csv":  # peak near solar noon in Gwangju (~12:30 local)
        assert 11 <= df["ghi"].idxmax().tz_convert("Asia/Seoul").hour <= 13


def test_clear_day_is_clearer_than_cloudy_day():
    clear, cloudy = _read("clear-day.csv"), _read("cloudy-day.csv")
    clear_kwh, cloudy_kwh = clear["ghi"].sum() / 4000, cloudy["ghi"].sum() / 4000
    assert 6.5 < clear_kwh < 9.0  # kWh/m^2 on a clear Korean summer day
    assert cloudy_kwh < 0.5 * clear_kwh
    assert clear["cloud_cover"].mean() < cloudy["cloud_cover"].mean()
    assert len(_read("mixed-week.csv")) == 7 * 96


def test_degraded_forecast_is_seeded_biased_and_physical():
    actual = _read("mixed-week.csv")
    a = degrade_weather(actual, seed=1)
    assert a.equals(degrade_weather(actual, seed=1))
    assert not a.equals(degrade_weather(actual, seed=2))
    assert list(a.columns) == list(actual.columns) and a.index.equals(actual.index)
    assert (a["ghi"] >= 0).all() and a["cloud_cover"].between(0, 100).all()
    assert (a.loc[actual["ghi"] == 0, "ghi"] == 0).all()
    day = actual["ghi"] > 100
    err = (a.loc[day, "ghi"] - actual.loc[day, "ghi"]) / actual.loc[day, "ghi"]
    assert -0.15 < err.mean() < 0.05  # the -5 % bias, give or take the noise
    assert 0.1 < err.std() < 0.3
    # Autocorrelated: consecutive 15-min errors move together.
    assert np.corrcoef(err.to_numpy()[:-1], err.to_numpy()[1:])[0, 1] > 0.7
    # Cloud cover tells the same story as GHI.
    dcc = a.loc[day, "cloud_cover"] - actual.loc[day, "cloud_cover"]
    assert np.corrcoef(err, dcc)[0, 1] < 0


def test_degrade_keeps_a_time_column_and_zero_noise_is_identity():
    actual = _read("clear-day.csv").reset_index(names="time")
    same = degrade_weather(
        actual, seed=3, bias_frac=0, noise_frac=0, cloud_noise_pct=0, temp_noise_c=0
    )
    pd.testing.assert_frame_equal(same, actual, check_dtype=False)


def test_site_load_has_a_daytime_bump_and_is_seeded():
    times = pd.date_range("2026-06-30", periods=96, freq="15min", tz="Asia/Seoul")
    load = site_load_kw(times, base_kw=8.0, seed=4)
    assert load.equals(site_load_kw(times, 8.0, seed=4))
    assert (load >= 0).all() and load.name == "site_load_kw"
    local = load.index.tz_convert("Asia/Seoul")
    afternoon = load[(local.hour >= 13) & (local.hour < 17)].mean()
    night = load[local.hour < 5].mean()
    assert night == pytest.approx(8.0, rel=0.1)
    assert afternoon > night + 3.0
    with pytest.raises(ValueError):
        site_load_kw(times.tz_localize(None), 8.0, seed=4)


@pytest.mark.parametrize("name", ["clear-day.csv", "mixed-week.csv"])
def test_weather_seed_files_read_by_the_forecast_reader(name):
    from forecasts import weather

    df = weather.read_csv(WEATHER / name)
    assert len(df) == len(_read(name))
    assert (df["ghi"] >= 0).all()
