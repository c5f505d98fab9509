"""The array forms of the forecast's time arithmetic (#15) give exactly what the pandas
forms gave: a simulated year's KPIs are held bit for bit across the change."""

import numpy as np
import pandas as pd

from forecasts.bands import season
from forecasts.forecast import lead_hours
from forecasts.nowcast import epoch_ns, step_means, step_means_ns

RNG = np.random.default_rng(15)
GRID = pd.date_range("2026-03-01", periods=300, freq="15min", tz="UTC", unit="ns")
STEP = pd.Timedelta(minutes=15)


def test_lead_hours_equal_pandas_total_seconds_bit_for_bit():
    for k in range(500):
        offset = pd.Timedelta(microseconds=int(RNG.integers(-(10**10), 10**10)))
        if k % 2:
            offset = pd.Timedelta(seconds=int(RNG.integers(-(10**5), 10**5)))
        issued = (GRID[0] + offset).as_unit("us")
        want = ((GRID + STEP / 2) - issued).total_seconds().to_numpy() / 3600.0
        got = lead_hours(epoch_ns(GRID) + STEP.value // 2, issued.value)
        assert np.array_equal(got, want)


def test_season_of_zoned_and_naive_times_is_their_own_day_of_year():
    t = pd.DatetimeIndex(pd.to_datetime(RNG.integers(0, 3 * 10**18, 5000)))
    for times in (t, t.tz_localize("UTC"), t.tz_localize("UTC").tz_convert("Asia/Seoul")):
        doy = times.day_of_year.to_numpy(float)
        want = np.sin(2 * np.pi * (284.0 + doy) / 365.0)
        assert np.array_equal(season(times, 35.1), want)
        assert np.array_equal(season(times, -33.9), -want)


def test_step_means_on_arrays_drop_nan_and_samples_outside():
    t = GRID[0] + pd.to_timedelta([-60, 0, 60, 900, 1000, 2700, 3600], unit="s")
    kw = np.array([9.0, 1.0, 3.0, np.nan, 5.0, 7.0, 8.0])
    got = step_means_ns(epoch_ns(t), kw, GRID[0].value, STEP.value, 3)
    np.testing.assert_array_equal(got, [2.0, 5.0, np.nan])
    np.testing.assert_array_equal(step_means(pd.Series(kw, index=t), GRID[:3], STEP), got)
