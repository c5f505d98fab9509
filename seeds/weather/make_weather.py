"""Make the demo weather files in this folder from pvlib's Greensboro TMY3 file.

    .venv/bin/python seeds/weather/make_weather.py

Reproducible (no randomness, no network): the output depends only on pvlib's bundled
``723170TYA.CSV`` and pvlib's clear-sky model. See ``seeds/README.md`` for the
derivation. Writes ``clear-day.csv``, ``cloudy-day.csv`` and ``mixed-week.csv``:
15-minute rows, ``time`` = END of the interval (ISO 8601, +09:00; the TMY /
``forecasts.weather.read_csv`` default label), ``ghi`` [W/m^2]
(interval average), ``cloud_cover`` [%], ``temp_air`` [degC], ``wind_speed`` [m/s].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pvlib

HERE = Path(__file__).resolve().parent
TMY_FILE = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
YEAR = 2026  # calendar year the typical days are placed in
SUMMER = (6, 7, 8)
STEP = "15min"

# Gwangju Dong-gu (the seed station); Greensboro, NC (the TMY3 station).
GWANGJU = pvlib.location.Location(35.146, 126.923, tz="Asia/Seoul", altitude=45.0)
K_MAX = 1.2  # clear-sky index cap (cloud enhancement above 1 is real, but bounded)
CLEAR_CLOUD_MAX = 30.0  # [%] daytime mean cloud cover of the "clear" day at most
CS_MIN_W_M2 = 50.0  # below this hourly clear-sky GHI the index is too noisy: fill it


def _clearsky_mean(loc: pvlib.location.Location, starts: pd.DatetimeIndex, minutes: int):
    """Mean Ineichen clear-sky GHI [W/m^2] over [start, start + minutes), from 1-min values."""
    offsets = pd.to_timedelta(np.arange(minutes) + 0.5, unit="min")
    times = pd.DatetimeIndex((starts.values[:, None] + offsets.values[None, :]).ravel())
    times = times.tz_localize("UTC").tz_convert(loc.tz)
    cs = loc.get_clearsky(times, model="ineichen")["ghi"].to_numpy()
    return cs.reshape(len(starts), minutes).mean(axis=1)


def read_tmy_hours() -> pd.DataFrame:
    """TMY hours keyed by naive local-standard hour start in YEAR, with the clear-sky index."""
    data, meta = pvlib.iotools.read_tmy3(str(TMY_FILE), map_variables=True)
    loc = pvlib.location.Location(
        meta["latitude"],
        meta["longitude"],
        tz=f"Etc/GMT{-int(meta['TZ']):+d}",
        altitude=meta["altitude"],
    )
    # TMY3 labels the END of each hour (01:00..24:00) in local standard time; the
    # hours come from different source years, so re-key them from the file's own
    # date and hour columns by (month, day, hour start) in one calendar year.
    date = pd.to_datetime(data["Date (MM/DD/YYYY)"], format="%m/%d/%Y")
    hour_end = data["Time (HH:MM)"].str.slice(0, 2).astype(int)
    key = pd.DatetimeIndex(
        [
            pd.Timestamp(YEAR, d.month, d.day) + pd.Timedelta(hours=h - 1)
            for d, h in zip(date, hour_end, strict=True)
        ],
        name="hour_start",
    )
    start = pd.DatetimeIndex(
        [
            pd.Timestamp(d.year, d.month, d.day) + pd.Timedelta(hours=h - 1)
            for d, h in zip(date, hour_end, strict=True)
        ]
    ).tz_localize(loc.tz)
    cs = _clearsky_mean(loc, start.tz_convert("UTC").tz_localize(None), 60)
    df = pd.DataFrame(
        {
            "ghi": data["ghi"].to_numpy(float),
            "ghi_clear": cs,
            "cloud_cover": data["TotCld (tenths)"].to_numpy(float) * 10.0,
            "temp_air": data["temp_air"].to_numpy(float),
            "wind_speed": data["wind_speed"].to_numpy(float),
        },
        index=key,
    ).sort_index()
    k = (df["ghi"] / df["ghi_clear"]).where(df["ghi_clear"] >= CS_MIN_W_M2)
    # Low sun: take the nearest trustworthy hour of the same day (1 if the day has none).
    day = df.index.normalize()
    k = k.groupby(day).transform(lambda s: s.ffill().bfill()).fillna(1.0)
    df["k"] = k.clip(0.0, K_MAX)
    return df


def daily_clearness(hours: pd.DataFrame) -> pd.Series:
    """Daily clearness: the day's GHI over its clear-sky GHI [-]."""
    g = hours.groupby(hours.index.normalize())
    return g["ghi"].sum() / g["ghi_clear"].sum()


def pick_days(hours: pd.DataFrame) -> dict[str, list[pd.Timestamp]]:
    """The clearest and the cloudiest summer day, and the most variable summer week.

    The clear day must also *look* clear (daytime mean cloud cover <= CLEAR_CLOUD_MAX
    percent), so a cloud-cover-driven forecast of it is not wrong by construction.
    """
    kd = daily_clearness(hours)
    summer = kd[kd.index.month.isin(SUMMER)]
    daylight = hours[hours["ghi_clear"] >= CS_MIN_W_M2]
    cloud = daylight.groupby(daylight.index.normalize())["cloud_cover"].mean()
    looks_clear = summer[cloud.reindex(summer.index) <= CLEAR_CLOUD_MAX]
    clear = (looks_clear if len(looks_clear) else summer).idxmax()
    cloudy = summer.idxmin()
    best, best_std = None, -1.0
    for first in summer.index:
        week = pd.date_range(first, periods=7, freq="D")
        # Stay inside one month: TMY months come from different source years.
        if week[-1].month != first.month or week[-1] not in summer.index:
            continue
        std = float(summer.loc[week].std())
        if std > best_std:
            best, best_std = week, std
    return {"clear-day": [clear], "cloudy-day": [cloudy], "mixed-week": list(best)}


def gwangju_weather(hours: pd.DataFrame, days: list[pd.Timestamp]) -> pd.DataFrame:
    """15-min Gwangju weather for ``days``: TMY clear-sky index x Gwangju clear sky."""
    start = pd.Timestamp(days[0]).tz_localize(GWANGJU.tz)
    end = pd.Timestamp(days[-1] + pd.Timedelta(days=1)).tz_localize(GWANGJU.tz)
    idx = pd.date_range(start, end, freq=STEP, inclusive="left", name="time")
    step_min = int(pd.Timedelta(STEP).total_seconds() // 60)
    cs = _clearsky_mean(GWANGJU, idx.tz_convert("UTC").tz_localize(None), step_min)
    naive_mid = (idx + pd.Timedelta(minutes=step_min / 2)).tz_localize(None)
    # Interpolate hourly values in local clock time: k and cloud at hour midpoints,
    # temperature and wind at the hour end (where TMY3 samples them).
    hr = hours.loc[days[0] - pd.Timedelta(hours=2) : days[-1] + pd.Timedelta(hours=26)]
    x = naive_mid.asi8
    x_mid = (hr.index + pd.Timedelta(minutes=30)).asi8
    x_end = (hr.index + pd.Timedelta(hours=1)).asi8
    k = np.interp(x, x_mid, hr["k"].to_numpy())
    cloud = np.interp(x, x_mid, hr["cloud_cover"].to_numpy())
    temp = np.interp(x, x_end, hr["temp_air"].to_numpy())
    wind = np.interp(x, x_end, hr["wind_speed"].to_numpy())
    # Label each row with the END of its interval (TMY convention, read_csv default).
    return pd.DataFrame(
        {
            "ghi": np.round(np.where(cs > 0, k * cs, 0.0), 1),
            "cloud_cover": np.round(np.clip(cloud, 0, 100)).astype(int),
            "temp_air": np.round(temp, 1),
            "wind_speed": np.round(np.maximum(wind, 0.0), 1),
        },
        index=pd.DatetimeIndex(idx + pd.Timedelta(STEP), name="time"),
    )


def main() -> None:
    hours = read_tmy_hours()
    kd = daily_clearness(hours)
    for name, days in pick_days(hours).items():
        df = gwangju_weather(hours, days)
        out = HERE / f"{name}.csv"
        df.to_csv(out, date_format="%Y-%m-%dT%H:%M:%S%z")
        # ISO offsets with a colon (+09:00), as the forecast readers expect.
        text = out.read_text().replace("+0900,", "+09:00,")
        out.write_text(text)
        clear = ", ".join(f"{d:%m-%d} {kd[d]:.2f}" for d in days)
        kwh = df["ghi"].sum() * 0.25 / 1000
        print(f"{out.name}: {len(df)} rows; daily clearness {clear}; {kwh:.2f} kWh/m^2 GHI")


if __name__ == "__main__":
    main()
