"""Time a 48-hour, 15-minute forecast for the seed station and a full-year hourly run.

Run: .venv/bin/python benchmarks/forecast.py

Baseline: a straightforward pvlib ModelChain (PVWatts, Perez, SAPM temperature,
physical IAM) per call, with ``Location.get_clearsky`` and NREL SPA solar position.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pvlib
from pvlib.location import Location
from pvlib.modelchain import ModelChain
from pvlib.pvsystem import Array, FixedMount, PVSystem

from forecasts.forecast import forecast_pv
from forecasts.pvmodel import SAPM_PARAMS, clear_cache, pv_power
from forecasts.weather import read_tmy3
from megastation.core.config import load_station, seeds_dir

STATION = load_station(seeds_dir() / "gwangju-donggu.toml")
SITE = STATION.pv_site()
START = datetime(2026, 6, 15, 1, 7, tzinfo=UTC)


def baseline(times: pd.DatetimeIndex, weather: pd.DataFrame | None = None) -> pd.Series:
    site = STATION.site
    loc = Location(site.latitude, site.longitude, site.timezone, site.altitude_m)
    arrays = [
        Array(
            FixedMount(a.tilt_deg, a.azimuth_deg),
            module_parameters={"pdc0": a.peak_power_kw * 1000, "gamma_pdc": a.temp_coeff_per_c},
            temperature_model_parameters=SAPM_PARAMS[a.mounting],
            name=a.name,
        )
        for a in STATION.pv_arrays
    ]
    total = 0
    for a, arr in zip(STATION.pv_arrays, arrays, strict=True):
        system = PVSystem(
            arrays=[arr],
            inverter_parameters={"pdc0": (a.inverter_ac_kw or a.peak_power_kw) * 1000 / 0.96},
            losses_parameters={},
        )
        mc = ModelChain(
            system,
            loc,
            aoi_model="physical",
            spectral_model="no_loss",
            transposition_model="perez",
            losses_model="no_loss",
        )
        if weather is None:
            wx = loc.get_clearsky(times)
            wx["temp_air"], wx["wind_speed"] = 20.0, 1.0
        else:
            wx = weather
        mc.run_model(wx)
        total = total + mc.results.ac * (1 - a.losses_frac) / 1000
    return total


def best_ms(fn, repeat: int = 7) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return min(out), statistics.median(out)


def main() -> None:
    grid = pd.date_range(pd.Timestamp(START).floor("15min"), periods=192, freq="15min")
    wx, _ = read_tmy3(Path(pvlib.__path__[0]) / "data" / "723170TYA.CSV", year=2026)
    year_grid = wx.index
    mid = wx.copy()
    mid.index = mid.index + pd.Timedelta("30min")

    def cold48():
        clear_cache()
        forecast_pv(SITE, START, 192)

    measured = pd.Series(50.0, index=pd.date_range(START - pd.Timedelta("1h"), START, freq="1min"))
    rows = [
        (
            "48 h / 15 min, clear sky, cold cache",
            cold48,
            lambda: baseline(grid + pd.Timedelta("7.5min")),
        ),
        (
            "48 h / 15 min, clear sky, warm",
            lambda: forecast_pv(SITE, START, 192),
            lambda: baseline(grid + pd.Timedelta("7.5min")),
        ),
        (
            "48 h / 15 min, + nowcast, warm",
            lambda: forecast_pv(SITE, START, 192, measured_kw=measured),
            lambda: baseline(grid + pd.Timedelta("7.5min")),
        ),
        (
            "year / 1 h, TMY3 GHI+DNI+DHI, cold",
            lambda: (clear_cache(), pv_power(SITE, SITE.arrays, wx)),
            lambda: baseline(year_grid, mid[["ghi", "dni", "dhi", "temp_air", "wind_speed"]]),
        ),
        (
            "year / 1 h, TMY3 GHI+DNI+DHI, warm",
            lambda: pv_power(SITE, SITE.arrays, wx),
            lambda: baseline(year_grid, mid[["ghi", "dni", "dhi", "temp_air", "wind_speed"]]),
        ),
    ]
    forecast_pv(SITE, START, 192)  # imports and first-call set-up done
    print(f"{'case':<40}{'ours ms':>10}{'baseline ms':>13}{'ratio':>8}")
    for name, ours, base in rows:
        o, _ = best_ms(ours)
        b, _ = best_ms(base, repeat=3)
        print(f"{name:<40}{o:>10.1f}{b:>13.1f}{b / o:>7.1f}x")


if __name__ == "__main__":
    main()
