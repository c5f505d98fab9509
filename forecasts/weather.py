"""Weather input for the PV model, with columns mapped once to pvlib names.

Every reader returns the *canonical weather frame*:

- index: timezone-aware UTC timestamps, regular step, each labelling the **start** of
  an interval; values are averages over ``[t, t + step)``;
- columns (pvlib names, units in brackets): ``ghi`` [W/m²], optionally ``dni``, ``dhi``
  [W/m²], ``cloud_cover`` [%, 0-100], ``temp_air`` [°C], ``wind_speed`` [m/s],
  optionally ``albedo`` [-]. At least one of ``ghi`` and ``cloud_cover``; both
  missing means clear sky (:func:`clear_sky_weather`).

Readers follow pvlib's verbs: ``read_*`` opens a file, ``parse_*`` reads a buffer.
:func:`resample_weather` puts a frame on the dispatch grid (interval averages placed
at interval midpoints and interpolated; finer data averaged).

Bad input raises :class:`WeatherError` naming the column and the CSV line; the one
repair is documented: gaps (missing rows or empty cells) up to ``max_gap`` are
interpolated linearly in time, longer ones are errors.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import IO, Literal

import numpy as np
import pandas as pd

Label = Literal["start", "end", "instant"]

#: Typical weather used when only clear sky is known [°C], [m/s].
TYPICAL_TEMP_AIR_C = 20.0
TYPICAL_WIND_SPEED_M_S = 1.0

#: CSV header names accepted, mapped once to pvlib names (units in the aliases).
VARIABLE_MAP: dict[str, str] = {
    "ghi": "ghi",
    "ghi_w_m2": "ghi",
    "ghi_w_per_m2": "ghi",
    "dni": "dni",
    "dni_w_m2": "dni",
    "dni_w_per_m2": "dni",
    "dhi": "dhi",
    "dhi_w_m2": "dhi",
    "dhi_w_per_m2": "dhi",
    "cloud_cover": "cloud_cover",
    "cloud_cover_pct": "cloud_cover",
    "temp_air": "temp_air",
    "temp_air_c": "temp_air",
    "wind_speed": "wind_speed",
    "wind_speed_m_s": "wind_speed",
    "albedo": "albedo",
}

#: Plausible range of each variable; outside it is an error, never clipped.
RANGES: dict[str, tuple[float, float]] = {
    "ghi": (0.0, 1500.0),
    "dni": (0.0, 1400.0),
    "dhi": (0.0, 1000.0),
    "cloud_cover": (0.0, 100.0),
    "temp_air": (-60.0, 70.0),
    "wind_speed": (0.0, 75.0),
    "albedo": (0.0, 1.0),
}

_OFFSET = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$")


class WeatherError(ValueError):
    """Weather input is unusable; the message names the source, column and line."""


# --------------------------------------------------------------------------- CSV


def read_csv(
    path: str | os.PathLike[str],
    *,
    label: Label = "end",
    max_gap: str | timedelta = "3h",
) -> pd.DataFrame:
    """Read a weather forecast CSV file into the canonical weather frame.

    Parameters
    ----------
    path : str or path
        CSV with a ``time`` column (ISO 8601 *with* UTC offset) and ``ghi`` [W/m²]
        and/or ``cloud_cover`` [%]; optionally ``temp_air`` [°C] (default
        :data:`TYPICAL_TEMP_AIR_C`), ``wind_speed`` [m/s] (default
        :data:`TYPICAL_WIND_SPEED_M_S`), ``dni``, ``dhi`` [W/m²], ``albedo``.
        Aliases: :data:`VARIABLE_MAP`.
    label : {"end", "start", "instant"}
        What ``time`` labels: the end of an averaging interval (default, as in TMY,
        Open-Meteo, Solcast and seeds/weather/*.csv), its start, or an instantaneous
        sample.
    max_gap : str or timedelta
        Longest gap interpolated; longer gaps are errors.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_csv(fh, label=label, max_gap=max_gap, source=str(path))
    except FileNotFoundError:
        raise WeatherError(f"{path}: no such file") from None


def parse_csv(
    buf: IO[str] | str,
    *,
    label: Label = "end",
    max_gap: str | timedelta = "3h",
    source: str = "<buffer>",
) -> pd.DataFrame:
    """Parse a weather CSV from a text buffer (or a string); see :func:`read_csv`."""
    if isinstance(buf, str):
        buf = io.StringIO(buf)
    try:
        raw = pd.read_csv(buf, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise WeatherError(f"{source}: not a readable CSV: {exc}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if "time" not in raw.columns:
        raise WeatherError(
            f"{source}: no 'time' column (columns: {', '.join(raw.columns) or 'none'})"
        )
    rename: dict[str, str] = {}
    for col in raw.columns:
        if col == "time":
            continue
        key = col.lower()
        if key not in VARIABLE_MAP:
            raise WeatherError(
                f"{source}: column {col!r}: unknown (misspelt?); expected some of "
                "time, ghi, cloud_cover, temp_air, wind_speed, dni, dhi, albedo"
            )
        rename[col] = VARIABLE_MAP[key]
    mapped = list(rename.values())
    for name in set(mapped):
        if mapped.count(name) > 1:
            cols = [c for c, n in rename.items() if n == name]
            raise WeatherError(f"{source}: columns {cols} all mean {name!r}: keep one")
    if "ghi" not in mapped and "cloud_cover" not in mapped:
        raise WeatherError(f"{source}: needs a 'ghi' or a 'cloud_cover' column")
    # temp_air and wind_speed are optional: the PV model then takes TYPICAL_TEMP_AIR_C
    # and TYPICAL_WIND_SPEED_M_S (many satellite and inverter files carry no wind)
    if len(raw) < 2:
        raise WeatherError(f"{source}: needs at least two rows, got {len(raw)}")

    times = _parse_times(raw["time"], source)
    data = pd.DataFrame(index=times)
    for col, name in rename.items():
        data[name] = _parse_numbers(raw[col], col, source)
    return _regularise(data, label=label, max_gap=pd.Timedelta(max_gap), source=source)


def _line(i: int) -> int:
    """CSV line of data row ``i`` (the header is line 1)."""
    return i + 2


def _parse_times(col: pd.Series, source: str) -> pd.DatetimeIndex:
    text = col.str.strip()
    for i, t in enumerate(text):
        if not t:
            raise WeatherError(f"{source}: line {_line(i)}: column 'time' is empty")
        if ("T" not in t and " " not in t) or not _OFFSET.search(t):
            raise WeatherError(
                f"{source}: line {_line(i)}: time {t!r} has no UTC offset "
                "(write e.g. 2026-06-15T09:00+09:00 or ...Z)"
            )
    try:
        times = pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        for i, t in enumerate(text):
            try:
                pd.Timestamp(t)
            except (ValueError, TypeError):
                raise WeatherError(
                    f"{source}: line {_line(i)}: time {t!r} is not ISO 8601"
                ) from None
        raise WeatherError(f"{source}: column 'time' is not ISO 8601") from None
    return pd.DatetimeIndex(times).as_unit("ns")


def _parse_numbers(col: pd.Series, name: str, source: str) -> np.ndarray:
    text = col.str.strip()
    values = pd.to_numeric(text.replace("", "nan"), errors="coerce").to_numpy(float)
    bad = np.isnan(values) & ~text.str.lower().isin(["", "nan", "na"]).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise WeatherError(
            f"{source}: line {_line(i)}: column {name!r}: {text.iloc[i]!r} is not a number"
        )
    return values


def _regularise(
    data: pd.DataFrame, *, label: Label, max_gap: pd.Timedelta, source: str
) -> pd.DataFrame:
    """Check order, step and ranges; fill short gaps; return start-labelled UTC frame."""
    idx = data.index
    diffs = idx[1:] - idx[:-1]
    zero = pd.Timedelta(0)
    dup = np.flatnonzero(diffs == zero)
    if dup.size:
        i = int(dup[0]) + 1
        raise WeatherError(f"{source}: line {_line(i)}: time {idx[i].isoformat()} is duplicated")
    back = np.flatnonzero(diffs < zero)
    if back.size:
        i = int(back[0]) + 1
        raise WeatherError(
            f"{source}: line {_line(i)}: time {idx[i].isoformat()} is earlier than the "
            "row before: sort the file by time"
        )
    step = pd.Timedelta(diffs.min())
    check_step(step, what=f"{source}: time step")
    off = np.flatnonzero(np.asarray(diffs % step) != np.int64(0))
    if off.size:
        i = int(off[0]) + 1
        raise WeatherError(
            f"{source}: line {_line(i)}: time {idx[i].isoformat()} is off the "
            f"{_fmt(step)} grid of the rows before"
        )
    gaps = np.flatnonzero(diffs > max_gap)
    if gaps.size:
        i = int(gaps[0]) + 1
        raise WeatherError(
            f"{source}: line {_line(i)}: gap of {_fmt(diffs[i - 1])} before "
            f"{idx[i].isoformat()} is longer than max_gap={_fmt(max_gap)}"
        )
    for name, (lo, hi) in RANGES.items():
        if name not in data:
            continue
        v = data[name].to_numpy()
        bad = np.flatnonzero((v < lo) | (v > hi))
        if bad.size:
            i = int(bad[0])
            unit = "%" if name == "cloud_cover" else ""
            raise WeatherError(
                f"{source}: line {_line(i)}: column {name!r}: {v[i]:g}{unit} is outside "
                f"{lo:g}..{hi:g}"
            )
    full = pd.date_range(idx[0], idx[-1], freq=step)
    data = data.reindex(full)
    limit = int(max_gap / step)
    for name in data.columns:
        col = data[name]
        if col.isna().all():
            raise WeatherError(f"{source}: column {name!r} has no values")
        run = _longest_nan_run(col.to_numpy())
        if run > limit:
            raise WeatherError(
                f"{source}: column {name!r}: {run} missing values in a row "
                f"({_fmt(run * step)}) exceed max_gap={_fmt(max_gap)}"
            )
        data[name] = col.interpolate(method="time", limit_area="inside").ffill().bfill()
    return _to_start_labels(data, step, label)


def _longest_nan_run(v: np.ndarray) -> int:
    isnan = np.concatenate([[False], np.isnan(v), [False]])
    edges = np.flatnonzero(np.diff(isnan.astype(np.int8)))
    if not edges.size:
        return 0
    return int((edges[1::2] - edges[::2]).max())


def _to_start_labels(data: pd.DataFrame, step: pd.Timedelta, label: Label) -> pd.DataFrame:
    if label == "end":
        data.index = data.index - step
    elif label == "instant":
        data.index = data.index - step / 2
    elif label != "start":
        raise WeatherError(f"label: must be start, end or instant, got {label!r}")
    data.index = pd.DatetimeIndex(data.index, freq=step).tz_convert("UTC")
    data.index.name = "time"
    return data


def _fmt(td: pd.Timedelta | timedelta) -> str:
    minutes = pd.Timedelta(td).total_seconds() / 60
    return f"{minutes / 60:g} h" if minutes >= 60 and minutes % 60 == 0 else f"{minutes:g} min"


def check_step(step: pd.Timedelta | timedelta, *, what: str = "step") -> pd.Timedelta:
    """Accept a step that divides the hour, or a whole number of hours (3-hourly NWP)."""
    step = pd.Timedelta(step)
    hour = pd.Timedelta(hours=1)
    if step <= pd.Timedelta(0) or (hour % step and step % hour):
        raise WeatherError(
            f"{what}: {_fmt(step)} neither divides the hour nor is a whole number of hours"
        )
    return step


# --------------------------------------------------------------------------- pvlib files


def read_tmy3(
    path: str | os.PathLike[str], *, year: int | None = 2021
) -> tuple[pd.DataFrame, dict]:
    """Read a TMY3 file with :func:`pvlib.iotools.read_tmy3` into the canonical frame.

    Keeps ``ghi``, ``dni``, ``dhi``, ``temp_air``, ``wind_speed``, ``albedo`` and maps
    total sky cover ``TotCld`` [tenths] to ``cloud_cover`` [%]. TMY3 rows label the
    end of each hour; ``year`` makes the months one continuous year.
    Returns ``(weather, metadata)``.
    """
    import pvlib

    df, meta = pvlib.iotools.read_tmy3(str(path), coerce_year=year, map_variables=True)
    out = df[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].astype(float)
    out["cloud_cover"] = df["TotCld (tenths)"].astype(float) * 10.0
    if "albedo" in df:
        alb = df["albedo"].astype(float)
        out["albedo"] = alb.where((alb > 0) & (alb < 1)).fillna(0.25)
    return _pvlib_frame(out, path), meta


def read_epw(path: str | os.PathLike[str], *, year: int | None = 2021) -> tuple[pd.DataFrame, dict]:
    """Read an EnergyPlus weather file with :func:`pvlib.iotools.read_epw`.

    Maps ``total_sky_cover`` [tenths] to ``cloud_cover`` [%]. EPW hour ``h`` is the hour
    ending at ``h``:00; pvlib already labels it at its start (``h - 1``), so no further
    shift. Returns ``(weather, metadata)``.
    """
    import pvlib

    df, meta = pvlib.iotools.read_epw(str(path), coerce_year=year)
    out = df[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].astype(float)
    if "total_sky_cover" in df:
        out["cloud_cover"] = (df["total_sky_cover"].astype(float) * 10.0).clip(0, 100)
    if "albedo" in df:
        alb = df["albedo"].astype(float)
        out["albedo"] = alb.where((alb > 0) & (alb < 1)).fillna(0.25)
    return _pvlib_frame(out, path, label="start"), meta


def _pvlib_frame(out: pd.DataFrame, path: object, label: Label = "end") -> pd.DataFrame:
    out = out.sort_index()
    out = out[~out.index.duplicated()]
    out.index = pd.DatetimeIndex(out.index).tz_convert("UTC").as_unit("ns")
    for name in ("ghi", "dni", "dhi"):
        out[name] = out[name].clip(lower=0)
    return _regularise(out, label=label, max_gap=pd.Timedelta("3h"), source=str(path))


# --------------------------------------------------------------------------- clear sky


def clear_sky_weather(
    index: pd.DatetimeIndex,
    *,
    temp_air: float = TYPICAL_TEMP_AIR_C,
    wind_speed: float = TYPICAL_WIND_SPEED_M_S,
) -> pd.DataFrame:
    """A weather frame with no irradiance columns: the PV model then uses clear sky.

    ``index`` labels interval starts (tz-aware); air temperature [°C] and wind speed
    [m/s] are constant typical values.
    """
    if index.tz is None:
        raise WeatherError("clear_sky_weather: index must be timezone-aware")
    idx = pd.DatetimeIndex(index).tz_convert("UTC")
    return pd.DataFrame({"temp_air": temp_air, "wind_speed": wind_speed}, index=idx)


# --------------------------------------------------------------------------- resampling


def step_grid(start: pd.Timestamp, n_steps: int, step_min: int) -> pd.DatetimeIndex:
    """``n_steps`` interval starts from ``start`` floored to the step, in UTC."""
    step = check_step(pd.Timedelta(minutes=step_min), what="step_min")
    if step > pd.Timedelta(hours=1):
        raise WeatherError(f"step_min: must divide 60, got {step_min}")
    t0 = pd.Timestamp(start)
    if t0.tzinfo is None:
        raise WeatherError(f"start {t0.isoformat()} is naive: give a time zone")
    t0 = t0.tz_convert("UTC").floor(step)
    return pd.date_range(t0, periods=n_steps, freq=step, unit="ns")


def resample_weather(
    weather: pd.DataFrame, index: pd.DatetimeIndex, *, columns: Iterable[str] | None = None
) -> pd.DataFrame:
    """Put a canonical weather frame on the grid ``index`` (interval starts, UTC).

    Coarser input: interval averages are placed at their midpoints and linearly
    interpolated to the target midpoints (held flat for half an input step at each
    end). Finer input: averaged over each target interval. Target steps not covered
    raise :class:`WeatherError` naming the first one.
    """
    if len(weather) == 0:
        raise WeatherError("weather: no rows")
    if weather.index.tz is None or index.tz is None:
        raise WeatherError("resample_weather: weather and grid must be timezone-aware")
    # one datetime precision for both (pandas >= 2 keeps s/ms/us/ns; asi8 is in that unit)
    target = index
    index = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns")
    weather = weather.set_axis(pd.DatetimeIndex(weather.index).tz_convert("UTC").as_unit("ns"))
    step_in = _step_of(weather.index)
    step_out = _step_of(index) if len(index) > 1 else pd.Timedelta(index.freq or "15min")
    cols = [c for c in (columns or weather.columns) if c in weather.columns]
    if step_in == step_out and weather.index[0] <= index[0] and weather.index[-1] >= index[-1]:
        out = weather.loc[index[0] : index[-1], cols]
        if len(out) == len(index) and out.index.equals(index):
            return out.set_axis(target)
    if step_in <= step_out:
        # average the finer rows that start inside each target interval
        bins = ((weather.index - index[0]) // step_out).to_numpy()
        src = weather[cols].to_numpy(float)
        n = len(index)
        ok = (bins >= 0) & (bins < n)
        counts = np.bincount(bins[ok], minlength=n)
        need = int(step_out / step_in)
        missing = np.flatnonzero(counts < need)
        if missing.size:
            raise WeatherError(
                f"weather does not cover {index[missing[0]].isoformat()} "
                f"(weather runs {weather.index[0].isoformat()} .. {weather.index[-1].isoformat()})"
            )
        sums = np.stack(
            [np.bincount(bins[ok], src[ok, j], minlength=n) for j in range(len(cols))], 1
        )
        return pd.DataFrame(sums / counts[:, None], index=target, columns=cols)
    x_in = ((weather.index + step_in / 2).asi8).astype(float)
    x_out = ((index + step_out / 2).asi8).astype(float)
    half = step_in.value / 2
    outside = (x_out < x_in[0] - half) | (x_out > x_in[-1] + half)
    if outside.any():
        i = int(np.argmax(outside))
        raise WeatherError(
            f"weather does not cover {index[i].isoformat()} "
            f"(weather runs {weather.index[0].isoformat()} .. "
            f"{(weather.index[-1] + step_in).isoformat()})"
        )
    src = weather[cols].to_numpy(float)
    out = np.column_stack([np.interp(x_out, x_in, src[:, j]) for j in range(len(cols))])
    return pd.DataFrame(out, index=target, columns=cols)


def _step_of(index: pd.DatetimeIndex) -> pd.Timedelta:
    if len(index) < 2:
        if index.freq is not None:
            return pd.Timedelta(index.freq)
        raise WeatherError("weather: need at least two rows to know the step")
    return pd.Timedelta(index[1] - index[0])
