"""Bad weather input is refused with the column and line named, or repaired as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from forecasts.pvmodel import pv_power
from forecasts.weather import WeatherError, parse_csv, resample_weather, step_grid
from megastation.cli import main

HEAD = "time,ghi,cloud_cover,temp_air,wind_speed\n"


def rows(n=6, step_min=60, start="2026-06-15T06:00+09:00", over=None):
    over = over or {}
    t0 = pd.Timestamp(start)
    lines = []
    for i in range(n):
        t = (t0 + pd.Timedelta(minutes=step_min * i)).isoformat()
        vals = {"time": t, "ghi": 300 + i, "cloud_cover": 40, "temp_air": 20, "wind_speed": 2}
        vals.update(over.get(i, {}))
        lines.append(
            ",".join(str(vals[k]) for k in ("time", "ghi", "cloud_cover", "temp_air", "wind_speed"))
        )
    return "\n".join(lines) + "\n"


def test_good_csv_is_mapped_to_start_labelled_utc():
    wx = parse_csv(HEAD + rows())
    assert list(wx.columns) == ["ghi", "cloud_cover", "temp_air", "wind_speed"]
    assert str(wx.index.tz) == "UTC"
    # default label "end": the 07:00 row is the hour 06:00-07:00 -> starts 21:00 UTC... 05:00 local
    assert wx.index[0] == pd.Timestamp("2026-06-15T05:00+09:00")
    assert parse_csv(HEAD + rows(), label="start").index[0] == pd.Timestamp(
        "2026-06-15T06:00+09:00"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiem,ghi,temp_air,wind_speed\n2026-06-15T06:00Z,1,2,3\n", "no 'time' column"),
        ("time,gih,temp_air,wind_speed\n", "column 'gih': unknown (misspelt?)"),
        (
            "time,temp_air,wind_speed\n2026-06-15T06:00Z,1,3\n2026-06-15T07:00Z,1,3\n",
            "'ghi' or a 'cloud_cover'",
        ),
        (
            HEAD + rows(start="2026-06-15T06:00"),
            "line 2: time '2026-06-15T06:00:00' has no UTC offset",
        ),
        (HEAD + rows(over={3: {"time": "2026-06-15T06:00+09:00"}}), "line 5: time"),
        (
            HEAD + rows(over={2: {"time": "2026-06-15T07:00+09:00"}}),
            "line 4: time 2026-06-14T22:00:00+00:00 is duplicated",
        ),
        (HEAD + rows(over={2: {"ghi": -5}}), "line 4: column 'ghi': -5 is outside 0..1500"),
        (
            HEAD + rows(over={1: {"cloud_cover": 120}}),
            "line 3: column 'cloud_cover': 120% is outside 0..100",
        ),
        (
            HEAD + rows(over={1: {"temp_air": "warm"}}),
            "line 3: column 'temp_air': 'warm' is not a number",
        ),
        (HEAD + rows(step_min=7), "7 min neither divides the hour"),
        (HEAD + rows(step_min=60) + "2026-06-15T18:00+09:00,0,40,20,2\n", "line 8: gap of 7 h"),
    ],
)
def test_bad_input_names_the_column_or_line(text, message):
    with pytest.raises(WeatherError) as err:
        parse_csv(text, source="wx.csv")
    assert message in str(err.value)
    assert str(err.value).startswith("wx.csv")


def test_unsorted_rows_are_refused():
    text = HEAD + rows(over={2: {"time": "2026-06-15T05:00+09:00"}})
    with pytest.raises(WeatherError, match=r"line 4: .* earlier than the row before"):
        parse_csv(text)


def test_short_gaps_are_interpolated():
    lines = rows(n=6).splitlines()
    del lines[2]  # a missing hour
    text = HEAD + "\n".join(lines) + "\n"
    text = text.replace(",303,", ",,")  # and an empty cell
    wx = parse_csv(text, label="start")
    assert len(wx) == 6
    assert wx["ghi"].iloc[2] == pytest.approx(302.0)
    assert wx["ghi"].iloc[3] == pytest.approx(303.0)
    with pytest.raises(WeatherError, match=r"line 4: gap of 2 h .* longer than max_gap=1 h"):
        parse_csv(text, max_gap="1h")


def test_resampling_hourly_to_15_min_and_coverage(station):
    wx = parse_csv(HEAD + rows(n=12), label="start")
    grid = step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 40, 15)
    out = resample_weather(wx, grid)
    # hourly averages sit at :30; the 15-min midpoint 06:37:30 is 1/8 of the way to 07:30
    assert out["ghi"].iloc[2] == pytest.approx(300.125)
    assert out["ghi"].iloc[1] == pytest.approx(300.0)  # held flat before the first midpoint
    assert out["ghi"].resample("1h").mean().iloc[1:10].round(6).tolist() == pytest.approx(
        [301, 302, 303, 304, 305, 306, 307, 308, 309], abs=0.2
    )
    with pytest.raises(WeatherError, match="does not cover"):
        resample_weather(wx, step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 60, 15))
    with pytest.raises(WeatherError, match="divide"):
        step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 4, 7)
    kw = pv_power(station.pv_site(), station.pv_site().arrays, out)
    assert not kw.isna().any().any()


def _weather_csv(path, n=96 * 2):
    t0 = pd.Timestamp("2026-07-02T00:15+09:00")
    with open(path, "w") as fh:
        fh.write(HEAD)
        for i in range(n):
            t = t0 + pd.Timedelta(minutes=15 * i)
            ghi = max(0.0, 800 * (1 - abs(t.hour + t.minute / 60 - 12.5) / 6.5))
            fh.write(f"{t.isoformat()},{ghi:.1f},30,25,2\n")


def test_cli_forecast_clear_sky_and_weather(tmp_path):
    runner = CliRunner()
    out = tmp_path / "f.csv"
    r = runner.invoke(
        main, ["forecast", "--start", "2026-07-02T00:00+09:00", "--hours", "48", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns[:4]) == ["time", "pv_ac_kw", "pv_ac_p10_kw", "pv_ac_p90_kw"]
    assert "pv_ac_kw[canopy-south]" in df.columns and len(df) == 192
    assert df["time"][0] == "2026-07-02T00:00:00+09:00"
    wx = tmp_path / "wx.csv"
    _weather_csv(wx)
    r = runner.invoke(
        main,
        [
            "forecast",
            "--weather",
            str(wx),
            "--start",
            "2026-07-02T00:00+09:00",
            "--hours",
            "48",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert pd.read_csv(out)["pv_ac_kw"].max() > 50


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    wx = tmp_path / "wx.csv"
    wx.write_text(HEAD + rows(start="2026-07-02T06:00"))
    r = CliRunner().invoke(main, ["forecast", "--weather", str(wx), "-o", str(tmp_path / "f.csv")])
    assert r.exit_code == 1
    assert "line 2: time '2026-07-02T06:00:00' has no UTC offset" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["forecast", "--step", "7min", "-o", str(tmp_path / "f.csv")])
    assert r.exit_code == 1 and "does not divide the hour" in r.output


def test_cli_score_reports_skill(tmp_path, station):
    from forecasts.weather import read_csv

    wx = tmp_path / "wx.csv"
    _weather_csv(wx)
    actual = pv_power(station.pv_site(), station.pv_site().arrays, read_csv(wx))["pv_ac_kw"] * 0.9
    measured = tmp_path / "m.csv"
    pd.DataFrame({"time": [t.isoformat() for t in actual.index], "pv_ac_kw": actual.values}).to_csv(
        measured, index=False
    )
    out = tmp_path / "s.csv"
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "--db",
            str(tmp_path / "db"),
            "forecast",
            "score",
            "--measured",
            str(measured),
            "--weather",
            str(wx),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "overall" in r.output
    s = pd.read_csv(out)
    assert list(s["day"]) == ["2026-07-02", "2026-07-03", "overall"]
    assert s["nbias"].iloc[-1] > 0  # the weather forecast is 10 % above "measured"
    assert s["skill"].iloc[-1] < 0.5
    # The forecast is always 10 % high: its errors fit a band with nothing above P50.
    band = re.search(r"bands from these errors: q10 ([-+.\d]+), q90 ([-+.\d]+)", r.output)
    assert band, r.output
    assert float(band.group(1)) < 0.0 and float(band.group(2)) == 0.0
    # and by the forecast's clear-sky index (regimes with too few steps: the pooled values)
    rows = re.findall(r"^  ([<>=\d. -]+?)\s+q10 ([-+.\d]+), q90 ([-+.\d]+)$", r.output, re.M)
    assert len(rows) == 5, r.output
    assert all(float(q90) == 0.0 for _, _, q90 in rows)
    r = runner.invoke(
        main, ["--db", str(tmp_path / "db"), "forecast", "score", "--measured", str(measured)]
    )
    assert r.exit_code == 0 and "clear sky" in r.output


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("grid_unit", ["s", "us", "ns"])
def test_resampling_any_datetime_precision(unit, grid_unit):
    """pandas >= 2 keeps an index's precision; weather and grid may differ (#12)."""
    wx = parse_csv(HEAD + rows(n=12), label="start")
    wx.index = wx.index.as_unit(unit)
    grid = step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 40, 15).as_unit(grid_unit)
    out = resample_weather(wx, grid)
    assert out.index.equals(grid)
    assert out["ghi"].iloc[2] == pytest.approx(300.125)
    fine = resample_weather(out, pd.date_range(grid[0], periods=10, freq="1h", unit=grid_unit))
    assert fine["ghi"].iloc[1] == pytest.approx(out["ghi"].iloc[4:8].mean())


def _coarse_weather(tmp_path, freq: str) -> Path:
    """The seed mixed week averaged to ``freq`` (rows labelled at interval ends)."""
    from megastation.core.config import seeds_dir

    df = pd.read_csv(seeds_dir() / "weather" / "mixed-week.csv")
    df.index = pd.to_datetime(df.pop("time"))
    out = df.resample(freq, label="right", closed="right").mean().dropna().round(1)
    out.index = [t.isoformat() for t in out.index]
    out.index.name = "time"
    path = tmp_path / f"week-{freq}.csv"
    out.to_csv(path)
    return path


@pytest.mark.parametrize("freq", ["1h", "30min"])
def test_simulate_with_hourly_and_half_hourly_weather(tmp_path, freq):
    path = _coarse_weather(tmp_path, freq)
    res = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "unused.db"), "simulate", "--weather", str(path),
         "--days", "0.25", "--policy", "re100", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "re100" in res.output
