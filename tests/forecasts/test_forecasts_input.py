"""Bad weather input is refused with the column and line named, or repaired as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest
from click.testing import CliRunner

import forecasts.weather
from forecasts.pvmodel import pv_power
from forecasts.weather import (
    TYPICAL_TEMP_AIR_C,
    TYPICAL_WIND_SPEED_M_S,
    WeatherError,
    check_step,
    clear_sky_weather,
    parse_csv,
    read_csv,
    read_epw,
    read_tmy3,
    resample_weather,
    step_grid,
)
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


# --------------------------------------------------------------------------- files and cells


def _gappy_file(tmp_path) -> Path:
    lines = rows(n=6).splitlines()
    del lines[2]  # the 08:00 row: a 2 h gap before line 4
    path = tmp_path / "wx.csv"
    path.write_text(HEAD + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_csv_passes_label_and_max_gap_and_names_the_file(tmp_path):
    path = _gappy_file(tmp_path)
    assert read_csv(path).index[0] == pd.Timestamp("2026-06-15T05:00+09:00")
    wx = read_csv(path, label="start")
    assert wx.index[0] == pd.Timestamp("2026-06-15T06:00+09:00") and len(wx) == 6
    with pytest.raises(WeatherError) as err:
        read_csv(path, max_gap="1h")
    assert str(err.value).startswith(f"{path}: line 4: gap of 2 h before")
    with pytest.raises(WeatherError) as err:
        read_csv(tmp_path / "missing.csv")
    assert str(err.value) == f"{tmp_path / 'missing.csv'}: no such file"


@pytest.mark.parametrize(
    ("step_min", "message"), [(0, "0 min"), (-60, "-60 min"), (90, "90 min"), (40, "40 min")]
)
def test_a_step_that_fits_no_clock_is_named_in_minutes(step_min, message):
    with pytest.raises(WeatherError) as err:
        step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 4, step_min)
    assert (
        str(err.value)
        == f"step_min: {message} neither divides the hour nor is a whole number of hours"
    )


def test_a_good_file_reads_without_warnings(tmp_path):
    path = _gappy_file(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_csv(path)
        parse_csv(path.read_text())


def test_utf8_file_is_read_as_utf8_whatever_the_locale(tmp_path):
    # A Korean Windows PC opens text as cp949 by default: the file's encoding must not
    # depend on the locale. Under the C locale (ASCII) a UTF-8 byte would crash the read.
    path = tmp_path / "wx.csv"
    path.write_text(HEAD + rows(over={1: {"temp_air": "20°C"}}), encoding="utf-8")
    code = (
        "import sys\nfrom forecasts.weather import WeatherError, read_csv\n"
        "try:\n    read_csv(sys.argv[1])\nexcept WeatherError as exc:\n"
        "    print(str(exc).encode('ascii', 'backslashreplace').decode())\n"
    )
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    # the child imports the same forecasts package as this process (a mutation tool's copy)
    env["PYTHONPATH"] = str(Path(forecasts.weather.__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-X", "utf8=0", "-c", code, str(path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert "line 3: column 'temp_air': '20\\xb0C' is not a number" in out.stdout, out.stderr


def test_empty_time_cell_is_named():
    with pytest.raises(WeatherError, match=r"^wx.csv: line 3: column 'time' is empty$"):
        parse_csv(HEAD + rows(over={1: {"time": ""}}), source="wx.csv")


@pytest.mark.parametrize("missing", ["", "nan", "NaN", "NA", "na", " NaN "])
def test_missing_cells_in_any_spelling_are_interpolated(missing):
    wx = parse_csv(HEAD + rows(over={2: {"ghi": missing}}), label="start")
    assert wx["ghi"].tolist() == pytest.approx([300, 301, 302, 303, 304, 305])


def test_columns_are_floats_even_when_the_file_has_integers():
    wx = parse_csv(HEAD + rows())
    assert (wx.dtypes == np.float64).all(), wx.dtypes


# --------------------------------------------------------------------------- TMY3 and EPW files

TMY3 = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"


def _tmy3_copy(tmp_path, edit) -> Path:
    """pvlib's Greensboro TMY3 file with its data lines passed through ``edit``."""
    head, data = TMY3.read_text().splitlines(True)[:2], TMY3.read_text().splitlines(True)[2:]
    path = tmp_path / "tmy3.csv"
    path.write_text("".join(head + edit(data)))
    return path


# what read_tmy3 and read_epw give, in this order
MAPPED_COLUMNS = ["ghi", "dni", "dhi", "temp_air", "wind_speed", "cloud_cover", "albedo"]


def test_tmy3_is_mapped_and_start_labelled():
    wx, meta = read_tmy3(TMY3, year=2026)
    raw, _ = pvlib.iotools.read_tmy3(str(TMY3), coerce_year=2026, map_variables=True)
    assert meta["Name"] == raw.attrs.get("Name", meta["Name"]) and meta["TZ"] == -5.0
    assert list(wx.columns) == MAPPED_COLUMNS
    assert len(wx) == 8760 and str(wx.index.tz) == "UTC" and wx.index.freq == pd.Timedelta("1h")
    # TMY3 rows label hour ends: the 13:00 (-05:00) row is the hour from 12:00 local
    assert wx.index[0] == pd.Timestamp("2026-01-01T00:00-05:00")
    row = raw.loc[pd.Timestamp("2026-06-15T13:00-05:00")]
    got = wx.loc[pd.Timestamp("2026-06-15T12:00-05:00")]
    for name in ("ghi", "dni", "dhi", "temp_air", "wind_speed"):
        assert got[name] == row[name], name
    assert got["cloud_cover"] == 10.0 * row["TotCld (tenths)"]
    assert wx["cloud_cover"].max() == 100.0 and wx["cloud_cover"].min() == 0.0
    # the file's albedo is 0 (missing) everywhere: the typical 0.25 stands in
    assert (raw["albedo"] == 0).all() and (wx["albedo"] == 0.25).all()


def test_tmy3_keeps_a_real_albedo_and_clips_small_night_negatives(tmp_path):
    def edit(lines):
        f = lines[12].split(",")  # 01/01 13:00
        f[61], f[4] = "0.180", "-3"  # Alb (unitless), GHI (W/m^2)
        lines[12] = ",".join(f)
        for k, alb in ((13, "1.000"), (14, "1.500")):  # not albedos: 0.25 stands in
            g = lines[k].split(",")
            g[61] = alb
            lines[k] = ",".join(g)
        lines[20], lines[21] = lines[21], lines[20]  # out of order
        return [*lines[:30], lines[30], *lines[30:]]  # and one hour twice

    wx, _ = read_tmy3(_tmy3_copy(tmp_path, edit), year=2026)
    got = wx.loc[pd.Timestamp("2026-01-01T12:00-05:00")]
    assert got["albedo"] == pytest.approx(0.18) and got["ghi"] == 0.0
    assert wx["albedo"].iloc[13:15].tolist() == [0.25, 0.25]
    ref, _ = read_tmy3(TMY3, year=2026)
    assert len(wx) == 8760 and wx["temp_air"].iloc[18:33].equals(ref["temp_air"].iloc[18:33])


def test_tmy3_with_an_impossible_value_names_file_column_and_line(tmp_path):
    def edit(lines):
        f = lines[12].split(",")
        f[4] = "2500"
        lines[12] = ",".join(f)
        return lines

    path = _tmy3_copy(tmp_path, edit)
    with pytest.raises(WeatherError) as err:
        read_tmy3(path, year=2026)
    assert str(err.value) == f"{path}: line 14: column 'ghi': 2500 is outside 0..1500"


def _epw(path, *, albedo=0.2, sky_tenths=None) -> Path:
    """One EPW day (Gwangju, UTC+9): sun from hour 7 to 18, peak in hour 13."""
    head = [
        "LOCATION,Gwangju,,KOR,test,471560,35.15,126.92,9.0,70.0",
        "DESIGN CONDITIONS,0", "TYPICAL/EXTREME PERIODS,0", "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0", "COMMENTS 1,synthetic", "COMMENTS 2,",
        "DATA PERIODS,1,1,Data,Sunday, 1/ 1,12/31",
    ]  # fmt: skip
    lines = []
    for h in range(1, 25):  # EPW hour h is the hour ending at h:00 local standard time
        ghi = max(0, 700 - 100 * abs(h - 13))
        sky = (h % 11) if sky_tenths is None else sky_tenths
        # 1.5, 0 (missing) and 1.0 are not taken as albedos: the typical 0.25 stands in
        alb = {3: 1.5, 4: 0.0, 5: 1.0}.get(h, albedo)
        row = [1999, 6, 15, h, 60, "?9?9?9?9E0?9?9?9?9?9?9?9?9?9?9?9?9?9?9*9*9?9?9?9",
               20.0 + h / 10, 15.0, 60, 101000, 0, 0, 300, ghi, ghi // 2, ghi // 2, 0, 0, 0, 0,
               180, 2.5, sky, 0, 20, 77777, 9, 999999999, 20, 0.1, 0, 88, alb, 0, 1]  # fmt: skip
        lines.append(",".join(map(str, row)))
    path.write_text("\n".join(head + lines) + "\n")
    return path


def test_epw_is_mapped_and_its_hours_are_not_shifted_twice(tmp_path):
    wx, meta = read_epw(_epw(tmp_path / "day.epw"), year=2026)
    assert meta["TZ"] == 9.0 and len(wx) == 24 and str(wx.index.tz) == "UTC"
    assert list(wx.columns) == MAPPED_COLUMNS
    local = wx.tz_convert("Asia/Seoul")
    # EPW hour 13 is 12:00-13:00 local: the peak starts at 12:00, the day at 00:00
    assert local.index[0] == pd.Timestamp("2026-06-15T00:00+09:00")
    assert local["ghi"].idxmax() == pd.Timestamp("2026-06-15T12:00+09:00")
    assert local["ghi"].max() == 700.0 and local["dni"].max() == 350.0
    assert local["temp_air"].iloc[0] == pytest.approx(20.1)
    assert local["cloud_cover"].tolist()[:12] == [10.0 * (h % 11) for h in range(1, 13)]
    assert local["albedo"].iloc[2:5].eq(0.25).all()
    assert local["albedo"].drop(local.index[2:5]).eq(0.2).all()


@pytest.mark.parametrize(("tenths", "cloud_pct"), [(99, 100.0), (-1, 0.0)])
def test_epw_cloud_cover_outside_zero_to_ten_tenths_is_clipped(tmp_path, tenths, cloud_pct):
    wx, _ = read_epw(_epw(tmp_path / "day.epw", sky_tenths=tenths), year=2026)  # 99: missing
    assert (wx["cloud_cover"] == cloud_pct).all()


def test_epw_and_tmy3_read_without_warnings_and_name_the_file(tmp_path):
    path = _epw(tmp_path / "day.epw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_epw(path, year=2026)
        read_tmy3(TMY3, year=2026)
    text = path.read_text().replace(",700,350,350,", ",1700,350,350,")  # GHI of hour 13
    path.write_text(text)
    with pytest.raises(WeatherError) as err:
        read_epw(path, year=2026)
    assert str(err.value).startswith(f"{path}: line ")
    assert str(err.value).endswith("column 'ghi': 1700 is outside 0..1500")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "time,ghi\n2026-06-15T06:00+09:00,1\n2026-13-45T07:00+09:00,2\n",
            "wx.csv: line 3: time '2026-13-45T07:00+09:00' is not ISO 8601",
        ),
        (
            "time,ghi\nTue 2026-06-15 06:00+09:00,1\nTue 2026-06-15 07:00+09:00,2\n",
            "wx.csv: column 'time' is not ISO 8601",
        ),
        (
            "time,ghi\n2026-06-15T06:00,1\n2026-06-15T07:00,1\n",
            "wx.csv: line 2: time '2026-06-15T06:00' has no UTC offset "
            "(write e.g. 2026-06-15T09:00+09:00 or ...Z)",
        ),
        ('time,ghi\n"2026-06-15T06:00+09:00,1\n', "wx.csv: not a readable CSV: "),
        ("", "wx.csv: not a readable CSV: "),
        (
            "time,Gih\n2026-06-15T06:00Z,1\n",
            "wx.csv: column 'Gih': unknown (misspelt?); expected some of "
            "time, ghi, cloud_cover, temp_air, wind_speed, dni, dhi, albedo",
        ),
        (
            "tiem,ghi,temp_air\n2026-06-15T06:00Z,1,2\n",
            "wx.csv: no 'time' column (columns: tiem, ghi, temp_air)",
        ),
    ],
)
def test_unreadable_times_and_files_are_named(text, message):
    with pytest.raises(WeatherError) as err:
        parse_csv(text, source="wx.csv")
    assert str(err.value).startswith(message)


def test_a_buffer_without_a_source_is_named_buffer():
    with pytest.raises(WeatherError, match=r"^<buffer>: needs a 'ghi' or a 'cloud_cover' column"):
        parse_csv("time,temp_air\n")


def test_space_separated_times_spaces_after_commas_and_quoted_cells_are_read():
    text = (
        "time, ghi, temp_air\n"
        '2026-06-15 06:00+09:00, "300", 20\n'
        '2026-06-15 07:00+09:00, "310", 21\n'
    )
    wx = parse_csv(text, label="start")
    assert wx.index[0] == pd.Timestamp("2026-06-15T06:00+09:00")
    assert wx["ghi"].tolist() == [300.0, 310.0] and wx["temp_air"].tolist() == [20.0, 21.0]


@pytest.mark.parametrize("column", ["ghi", "cloud_cover"])
def test_either_ghi_or_cloud_cover_alone_is_enough(column):
    text = f"time,{column}\n2026-06-15T06:00+09:00,40\n2026-06-15T07:00+09:00,50\n"
    wx = parse_csv(text, label="start")  # two rows: the fewest that give a step
    assert list(wx.columns) == [column] and wx[column].tolist() == [40.0, 50.0]


def test_one_row_or_two_names_for_one_variable_are_refused():
    with pytest.raises(WeatherError) as err:
        parse_csv("time,ghi\n2026-06-15T06:00+09:00,40\n", source="wx.csv")
    assert str(err.value) == "wx.csv: needs at least two rows, got 1"
    text = "time,ghi,GHI_W_M2,temp_air\n" + "".join(
        f"2026-06-15T0{h}:00+09:00,40,40,20\n" for h in (6, 7)
    )
    with pytest.raises(WeatherError) as err:
        parse_csv(text, source="wx.csv")
    assert str(err.value) == "wx.csv: columns ['ghi', 'GHI_W_M2'] all mean 'ghi': keep one"


def test_clear_sky_weather_is_typical_temperature_and_wind_on_a_utc_index():
    local = pd.date_range("2026-06-15T06:00", periods=3, freq="1h", tz="Asia/Seoul")
    wx = clear_sky_weather(local)
    assert list(wx.columns) == ["temp_air", "wind_speed"] and str(wx.index.tz) == "UTC"
    assert wx.index[0] == pd.Timestamp("2026-06-14T21:00Z")
    assert (wx["temp_air"] == TYPICAL_TEMP_AIR_C).all()
    assert (wx["wind_speed"] == TYPICAL_WIND_SPEED_M_S).all()
    assert clear_sky_weather(local, temp_air=30.0, wind_speed=3.0).iloc[0].tolist() == [30.0, 3.0]
    with pytest.raises(WeatherError) as err:
        clear_sky_weather(local.tz_localize(None))
    assert str(err.value) == "clear_sky_weather: index must be timezone-aware"


def test_grids_without_a_frequency_take_their_step_from_the_times():
    wx = parse_csv(HEAD + rows(n=12), label="start")
    t0 = pd.Timestamp("2026-06-15T07:00+09:00")
    half_hourly = resample_weather(wx, step_grid(t0, 4, 30))
    two = resample_weather(wx, pd.DatetimeIndex([t0, t0 + pd.Timedelta("30min")]))
    assert two["ghi"].tolist() == pytest.approx(half_hourly["ghi"].iloc[:2].tolist())
    # one step and no frequency: a 15-minute step is assumed
    one = resample_weather(wx, pd.DatetimeIndex([t0]))
    quarter = resample_weather(wx, step_grid(t0, 1, 15))
    assert one["ghi"].tolist() == pytest.approx(quarter["ghi"].tolist())
    assert half_hourly["ghi"].iloc[0] != pytest.approx(quarter["ghi"].iloc[0])


def test_finer_weather_beyond_both_ends_of_the_grid_is_averaged_inside_it():
    wx = parse_csv(HEAD + rows(n=24, step_min=15, start="2026-06-15T05:00+09:00"), label="start")
    grid = pd.date_range("2026-06-15T06:00+09:00", periods=3, freq="1h")
    out = resample_weather(wx, grid)
    # ghi is 300 + i at 05:00 + 15 min x i: the 06:00 hour averages i = 4..7
    assert out["ghi"].tolist() == pytest.approx([305.5, 309.5, 313.5])
    assert out.index.equals(grid)


@pytest.mark.parametrize(
    ("step_min", "grid_start", "grid_step", "n", "first_missing", "runs"),
    [
        # hourly weather 06:00-18:00 local on a 15-min grid: the 18:00 step is the first
        # whose midpoint lies after the last hour's end; 05:45 is before the first start
        (60, "06:00", 15, 60, "2026-06-15T09:00:00+00:00", "2026-06-15T09:00:00+00:00"),
        (60, "05:45", 15, 4, "2026-06-14T20:45:00+00:00", "2026-06-15T09:00:00+00:00"),
        # 15-min weather 06:00-09:00 on an hourly grid: the 09:00 hour has no rows
        (15, "06:00", 60, 4, "2026-06-15T00:00:00+00:00", "2026-06-14T23:45:00+00:00"),
    ],
)
def test_resampling_names_the_first_step_the_weather_does_not_cover(
    step_min, grid_start, grid_step, n, first_missing, runs
):
    wx = parse_csv(HEAD + rows(n=12, step_min=step_min), label="start")
    grid = step_grid(pd.Timestamp(f"2026-06-15T{grid_start}+09:00"), n, grid_step)
    with pytest.raises(WeatherError) as err:
        resample_weather(wx, grid)
    assert str(err.value) == (
        f"weather does not cover {first_missing} (weather runs 2026-06-14T21:00:00+00:00 .. {runs})"
    )


def test_weather_of_one_or_two_rows_and_its_step():
    wx = parse_csv(HEAD + rows(n=2), label="start")
    grid = step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 4, 30)
    assert resample_weather(wx.set_axis(pd.DatetimeIndex(list(wx.index))), grid)[
        "ghi"
    ].tolist() == pytest.approx([300.0, 300.25, 300.75, 301.0])
    one = wx.iloc[:1]
    hourly = one.set_axis(pd.date_range(one.index[0], periods=1, freq="1h"))
    assert resample_weather(hourly, grid[:2])["ghi"].tolist() == [300.0, 300.0]
    with pytest.raises(WeatherError) as err:
        resample_weather(one.set_axis(pd.DatetimeIndex(list(one.index))), grid[:2])
    assert str(err.value) == "weather: need at least two rows to know the step"


def test_every_run_of_missing_cells_is_measured():
    over = {2: {"ghi": ""}, 5: {"ghi": ""}, 6: {"ghi": ""}, 7: {"ghi": ""}, 8: {"ghi": ""}}
    with pytest.raises(WeatherError) as err:
        parse_csv(HEAD + rows(n=12, over=over), source="wx.csv")
    assert str(err.value) == (
        "wx.csv: column 'ghi': 4 missing values in a row (4 h) exceed max_gap=3 h"
    )
    del over[8]  # runs of 1 and 3 cells: both interpolated
    wx = parse_csv(HEAD + rows(n=12, over=over), label="start")
    assert wx["ghi"].tolist() == pytest.approx([300.0 + i for i in range(12)])


@pytest.mark.parametrize(
    ("label", "first"), [("end", "05:00"), ("start", "06:00"), ("instant", "05:30")]
)
def test_labels_move_times_to_interval_starts(label, first):
    # an instantaneous sample at 06:00 stands for the hour around it, from 05:30
    wx = parse_csv(HEAD + rows(), label=label)
    assert wx.index[0] == pd.Timestamp(f"2026-06-15T{first}+09:00")
    assert wx.index.freq == pd.Timedelta("1h") and wx.index.name == "time"
    assert wx["ghi"].iloc[0] == 300.0


def test_unknown_label_and_off_grid_times_are_named():
    with pytest.raises(WeatherError) as err:
        parse_csv(HEAD + rows(), label="middle")
    assert str(err.value) == "label: must be start, end or instant, got 'middle'"
    text = HEAD + rows(n=4, over={3: {"time": "2026-06-15T09:15+09:00"}})
    with pytest.raises(WeatherError) as err:
        parse_csv(text, source="wx.csv")
    assert str(err.value) == (
        "wx.csv: line 5: time 2026-06-15T00:15:00+00:00 is off the 1 h grid of the rows before"
    )


def test_step_rules_for_grids_and_files():
    with pytest.raises(WeatherError) as err:
        check_step(pd.Timedelta("7min"))
    assert str(err.value) == "step: 7 min neither divides the hour nor is a whole number of hours"
    assert check_step(pd.Timedelta("3h")) == pd.Timedelta("3h")  # 3-hourly NWP files
    wx = parse_csv(HEAD + rows(n=4, step_min=180), label="start")
    assert wx.index.freq == pd.Timedelta("3h")
    t0 = pd.Timestamp("2026-06-15T06:00+09:00")
    with pytest.raises(WeatherError) as err:
        step_grid(t0, 4, 120)  # a file may be 2-hourly, the dispatch grid may not
    assert str(err.value) == "step_min: must divide 60, got 120"
    with pytest.raises(WeatherError) as err:
        step_grid(pd.Timestamp("2026-06-15T06:00"), 4, 15)
    assert str(err.value) == "start 2026-06-15T06:00:00 is naive: give a time zone"


def test_a_column_with_no_values_is_named():
    text = HEAD + rows(n=3, over={i: {"temp_air": ""} for i in range(3)})
    with pytest.raises(WeatherError) as err:
        parse_csv(text, source="wx.csv")
    assert str(err.value) == "wx.csv: column 'temp_air' has no values"


def test_resampling_refuses_no_rows_and_naive_times():
    wx = parse_csv(HEAD + rows(n=4), label="start")
    grid = step_grid(pd.Timestamp("2026-06-15T06:00+09:00"), 4, 15)
    with pytest.raises(WeatherError) as err:
        resample_weather(wx.iloc[:0], grid)
    assert str(err.value) == "weather: no rows"
    for weather, target in ((wx.tz_localize(None), grid), (wx, grid.tz_localize(None))):
        with pytest.raises(WeatherError) as err:
            resample_weather(weather, target)
        assert str(err.value) == "resample_weather: weather and grid must be timezone-aware"
