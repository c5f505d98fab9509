"""What real files carry: night negatives, interval-end labels, daylight-saving jumps,
no wind or temperature columns (issue #12)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from forecasts import timing
from forecasts.pvmodel import pv_power
from forecasts.scoring import read_power_csv
from forecasts.weather import WeatherError, clear_sky_weather, parse_csv, read_csv
from megastation.cli import main
from megastation.core.config import seeds_dir

WEEK = seeds_dir() / "weather" / "mixed-week.csv"


def _write(path, series: pd.Series, tz="Asia/Seoul", column="pv_ac_kw"):
    times = [t.isoformat() for t in series.index.tz_convert(tz)]
    pd.DataFrame({"time": times, column: np.round(series.to_numpy(), 3)}).to_csv(path, index=False)
    return path


@pytest.fixture
def week_pv(station) -> pd.Series:
    site = station.pv_site()
    return pv_power(site, site.arrays, read_csv(WEEK))["pv_ac_kw"]


def test_small_night_negatives_are_clipped_large_ones_named(tmp_path, week_pv):
    m = week_pv.copy()
    night = m.to_numpy() == 0
    m[night] = -0.4  # inverter standby draw
    got = read_power_csv(_write(tmp_path / "m.csv", m))
    assert (got >= 0).all() and got[night].eq(0).all()
    m.iloc[40] = -0.2 * week_pv.max()
    with pytest.raises(WeatherError, match=r"line 42: column 'pv_ac_kw': .* sign convention"):
        read_power_csv(_write(tmp_path / "bad.csv", m))


def test_measured_label_end_moves_times_back_one_step(tmp_path, week_pv):
    path = _write(tmp_path / "m.csv", week_pv)
    start = read_power_csv(path)
    end = read_power_csv(path, label="end")
    assert (start.index - end.index == pd.Timedelta("15min")).all()
    np.testing.assert_array_equal(start.to_numpy(), end.to_numpy())


def test_weather_without_wind_or_temperature_uses_typical_values(station):
    text = "time,ghi\n" + "".join(
        f"2026-07-02T{h:02d}:00+09:00,{max(0, 800 - 100 * abs(h - 12))}\n" for h in range(6, 20)
    )
    wx = parse_csv(text)
    assert list(wx.columns) == ["ghi"]
    site = station.pv_site()
    kw = pv_power(site, site.arrays, wx)["pv_ac_kw"]
    with_typical = pv_power(site, site.arrays, wx.assign(temp_air=20.0, wind_speed=1.0))
    np.testing.assert_allclose(kw, with_typical["pv_ac_kw"])


@pytest.mark.parametrize(("shift", "label"), [("0min", "end"), ("15min", "start")])
def test_weather_label_is_guessed_from_the_sun(station, tmp_path, shift, label):
    """The seed week is labelled at interval ends; the same rows stamped one step
    earlier are start-labelled (as NSRDB/PSM3 files are)."""
    raw = pd.read_csv(WEEK)
    raw["time"] = [(pd.Timestamp(t) - pd.Timedelta(shift)).isoformat() for t in raw["time"]]
    path = tmp_path / "wx.csv"
    raw.to_csv(path, index=False)
    got, why = timing.weather_label(read_csv(path, label="start"), station.pv_site())
    assert got == label, why
    # hourly averages of the end-labelled week: still "end"
    hourly = read_csv(WEEK).resample("1h").mean()
    hourly.index = hourly.index + pd.Timedelta("1h")  # read as start, stamped at ends
    assert timing.weather_label(hourly, station.pv_site())[0] == "end"


def test_cli_score_guesses_the_weather_label(tmp_path, week_pv):
    measured = _write(tmp_path / "m.csv", week_pv)
    r = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "db"), "forecast", "score", "--measured", str(measured),
         "--weather", str(WEEK)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "time read as interval ends" in r.output
    assert "24 h before" in r.output and "daylight-saving" not in r.output


def test_cli_score_warns_of_a_daylight_saving_jump(tmp_path, station):
    """Ten mostly clear days; from the sixth on the logger's clock runs an hour ahead."""
    site = station.pv_site()
    idx = pd.date_range("2026-06-01T00:00+09:00", periods=10 * 96, freq="15min")
    clear = pv_power(site, site.arrays, clear_sky_weather(idx))["pv_ac_kw"]
    rng = np.random.default_rng(5)
    m = clear * rng.uniform(0.8, 0.95, len(clear))
    jump = m.index >= pd.Timestamp("2026-06-06T00:00+09:00")
    m.index = pd.DatetimeIndex(m.index.where(~jump, m.index + pd.Timedelta("1h")))
    m = m[~m.index.duplicated()]
    measured = _write(tmp_path / "m.csv", m)
    r = CliRunner().invoke(
        main, ["--db", str(tmp_path / "db"), "forecast", "score", "--measured", str(measured)]
    )
    assert r.exit_code == 0, r.output
    assert "daylight-saving" in r.output and "from 2026-06-06" in r.output
    steady = _write(tmp_path / "steady.csv", clear * rng.uniform(0.8, 0.95, len(clear)))
    r = CliRunner().invoke(
        main, ["--db", str(tmp_path / "db"), "forecast", "score", "--measured", str(steady)]
    )
    assert r.exit_code == 0 and "daylight-saving" not in r.output


def test_clock_shifts_need_a_lasting_jump():
    days = [f"2026-07-{d:02d}" for d in range(1, 11)]
    steady = pd.Series([3.0, -5, 8, 0, 2, -4, 6, 1, 0, 3], index=days)
    assert timing.clock_shifts(steady) == []
    jumped = steady + np.r_[np.zeros(5), np.full(5, 60.0)]
    (day, size), *rest = timing.clock_shifts(jumped)
    assert day == "2026-07-06" and size == pytest.approx(60, abs=10) and not rest
    one_day = steady.copy()
    one_day.iloc[4] = 90  # one odd day (clouds all morning) is no jump
    assert timing.clock_shifts(one_day) == []
