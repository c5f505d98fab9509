"""Weather forecasts from an Open-Meteo-compatible ``/v1/forecast`` endpoint.

pvlib's iotools verbs: :func:`get_open_meteo` asks the network (blocking, standard
library; the station calls it in a thread), :func:`parse_open_meteo` reads a response
body. Both return the canonical weather frame of :mod:`forecasts.weather`.

The response (https://open-meteo.com/en/docs): ``{"latitude", "longitude",
"utc_offset_seconds", "hourly": {"time": [...], "<variable>": [...]},
"hourly_units": {...}}`` and the same under ``minutely_15``. Radiation values are
means over the *preceding* interval (label = end); ``time`` is local time of the
``timezone`` asked for, without an offset (``utc_offset_seconds`` gives it), or Unix
seconds with ``timeformat=unixtime``. We ask for ``timezone=GMT`` and wind in m/s but
read whatever units the response declares.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
import pandas as pd

from forecasts.site import PVSite
from forecasts.weather import WeatherError, _regularise

#: Open-Meteo variable -> canonical column.
VARIABLES: dict[str, str] = {
    "shortwave_radiation": "ghi",
    "direct_normal_irradiance": "dni",
    "diffuse_radiation": "dhi",
    "temperature_2m": "temp_air",
    "wind_speed_10m": "wind_speed",
    "cloud_cover": "cloud_cover",
}
RESOLUTIONS = ("minutely_15", "hourly")
#: Wind units Open-Meteo can return, as factors to m/s.
_WIND_TO_M_S = {"m/s": 1.0, "km/h": 1 / 3.6, "mp/h": 0.44704, "kn": 0.514444}
#: Largest response body read [bytes] (a 16-day minutely_15 answer is ~300 kB).
MAX_BODY_BYTES = 5_000_000


def forecast_url(
    base_url: str, site: PVSite, *, resolution: str = "minutely_15", forecast_days: int = 3
) -> str:
    """The request URL for the site: ``base_url`` (``.../v1/forecast``) plus the query."""
    if resolution not in RESOLUTIONS:
        raise WeatherError(f"resolution: must be one of {', '.join(RESOLUTIONS)}")
    query = {
        "latitude": f"{site.latitude:.4f}",
        "longitude": f"{site.longitude:.4f}",
        "elevation": f"{site.altitude_m:g}",
        resolution: ",".join(VARIABLES),
        "wind_speed_unit": "ms",
        "timezone": "GMT",
        "forecast_days": str(forecast_days),
    }
    sep = "&" if "?" in base_url else "?"
    return base_url + sep + urllib.parse.urlencode(query, safe=",")


def get_open_meteo(
    base_url: str,
    site: PVSite,
    *,
    resolution: str = "minutely_15",
    forecast_days: int = 3,
    timeout_s: float = 10.0,
) -> pd.DataFrame:
    """Fetch and parse a forecast (blocking). Any failure raises :class:`WeatherError`
    naming the URL: unreachable, timeout, HTTP error, body not JSON or not the shape."""
    url = forecast_url(base_url, site, resolution=resolution, forecast_days=forecast_days)
    where = base_url.split("?", 1)[0]
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise WeatherError(f"{where}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeatherError(f"{where}: cannot fetch: {reason}") from None
    if len(body) > MAX_BODY_BYTES:
        raise WeatherError(f"{where}: response larger than {MAX_BODY_BYTES} bytes")
    return parse_open_meteo(body, resolution=resolution, source=where)


def parse_open_meteo(
    body: bytes | str | dict[str, Any], *, resolution: str | None = None, source: str = "<buffer>"
) -> pd.DataFrame:
    """Parse an Open-Meteo forecast response into the canonical weather frame.

    ``resolution``: the block to read (``minutely_15`` or ``hourly``); None = the
    finest one present. Null values are gaps (interpolated up to 3 h, as
    :func:`forecasts.weather.parse_csv` does); rows after the last GHI or cloud-cover
    value are dropped (the provider's horizon ends there).
    """
    data = body
    if not isinstance(data, dict):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WeatherError(f"{source}: response is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WeatherError(f"{source}: response is not a JSON object")
    if data.get("error"):
        raise WeatherError(f"{source}: provider error: {data.get('reason', 'no reason given')}")
    blocks = [resolution] if resolution else [r for r in RESOLUTIONS if r in data]
    if not blocks or not isinstance(data.get(blocks[0]), dict):
        raise WeatherError(f"{source}: no {resolution or ' or '.join(RESOLUTIONS)} block")
    block_name = blocks[0]
    block = data[block_name]
    units = data.get(f"{block_name}_units") or {}
    times = _times(block.get("time"), data.get("utc_offset_seconds", 0), f"{source}: {block_name}")
    frame = pd.DataFrame(index=times)
    for var, col in VARIABLES.items():
        if var not in block:
            continue
        values = block[var]
        if not isinstance(values, list) or len(values) != len(times):
            raise WeatherError(f"{source}: {block_name}.{var}: not a list as long as time")
        try:
            v = np.array([np.nan if x is None else float(x) for x in values], dtype=float)
        except (TypeError, ValueError):
            raise WeatherError(f"{source}: {block_name}.{var}: not numbers") from None
        if col == "wind_speed":
            unit = str(units.get(var, "m/s"))
            if unit not in _WIND_TO_M_S:
                raise WeatherError(f"{source}: {block_name}.{var}: unknown unit {unit!r}")
            v = v * _WIND_TO_M_S[unit]
        frame[col] = v
    sky = [c for c in ("ghi", "cloud_cover") if c in frame]
    if not sky:
        raise WeatherError(f"{source}: {block_name}: needs shortwave_radiation or cloud_cover")
    has = frame[sky].notna().any(axis=1).to_numpy()
    if has.sum() < 2:
        raise WeatherError(f"{source}: {block_name}: fewer than two rows with values")
    first, last = int(np.argmax(has)), len(has) - int(np.argmax(has[::-1]))
    frame = frame.iloc[first:last]
    frame = frame.dropna(axis=1, how="all")
    return _regularise(frame, label="end", max_gap=pd.Timedelta("3h"), source=source)


def _times(raw: object, offset_s: object, where: str) -> pd.DatetimeIndex:
    if not isinstance(raw, list) or len(raw) < 2:
        raise WeatherError(f"{where}.time: missing or fewer than two values")
    try:
        offset = pd.Timedelta(seconds=float(offset_s or 0))
        if all(isinstance(t, int | float) and not isinstance(t, bool) for t in raw):
            idx = pd.to_datetime(np.asarray(raw, dtype="int64"), unit="s", utc=True)
        else:
            idx = pd.to_datetime(pd.Series(raw, dtype=str), format="ISO8601")
            idx = pd.DatetimeIndex(idx)
            idx = (idx - offset).tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError):
        raise WeatherError(f"{where}.time: not ISO 8601 times or Unix seconds") from None
    idx = pd.DatetimeIndex(idx).as_unit("ns")
    if not idx.is_monotonic_increasing or idx.has_duplicates:
        raise WeatherError(f"{where}.time: not strictly increasing")
    return idx
