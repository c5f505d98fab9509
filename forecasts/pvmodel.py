"""PV power of a site's arrays from a weather frame, with pvlib, vectorised across arrays.

The chain, per step (evaluated at the interval midpoint):

1. solar position (:func:`pvlib.solarposition.ephemeris`, within 0.03° of NREL SPA
   for the sun above 5°) and clear-sky irradiance (Ineichen-Perez with pvlib's Linke
   turbidity climatology and the site altitude) -- computed once per time grid and
   cached (:func:`solar_geometry`);
2. GHI: given, or from cloud cover by :func:`cloud_cover_to_ghi`, or clear sky;
3. DNI/DHI: given, else Erbs decomposition (:func:`pvlib.irradiance.erbs`);
4. plane of array: beam with the physical IAM, Perez sky diffuse
   (:func:`pvlib.irradiance.perez`), isotropic ground reflection;
5. cell temperature: SAPM (:func:`pvlib.temperature.sapm_cell`) for the mounting;
6. DC: PVWatts (:func:`pvlib.pvsystem.pvwatts_dc`) times ``1 - losses_frac``;
7. AC: PVWatts inverter (:func:`pvlib.inverter.pvwatts`, 96 % nominal) clipped at
   ``inverter_ac_kw``.

Night (sun below the horizon at the midpoint) is exactly zero, AC never exceeds the
inverter limit and NaN never leaves :func:`pv_power`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pvlib

from forecasts.site import PVArray, PVSite
from forecasts.weather import (
    TYPICAL_TEMP_AIR_C,
    TYPICAL_WIND_SPEED_M_S,
    WeatherError,
    _step_of,
)

#: Cloud cover to GHI, ``ghi = ghi_clear * (1 - CLOUD_A * (cc/100) ** CLOUD_B)``
#: (Kasten & Czeplak 1980 form). Calibrated by least squares on the odd days of the
#: Greensboro TMY3 file shipped with pvlib (total sky cover, hourly GHI, sun above
#: 5°); see forecasts/README.md. Larson et al. (2016) is a=0.65, b=1.
CLOUD_A = 0.55
CLOUD_B = 2.66

INVERTER_ETA_NOM = 0.96
ALBEDO = 0.25

#: SAPM temperature parameters per ``PVArray.mounting``.
SAPM_PARAMS = {
    "open_rack": pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"],
    "close_mount": pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][
        "close_mount_glass_glass"
    ],
    "insulated_back": pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][
        "insulated_back_glass_polymer"
    ],
}


def array_column(name: str) -> str:
    """Column of one array's AC power [kW] in model and forecast frames."""
    return f"pv_ac_kw[{name}]"


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SolarGeometry:
    """Sun and clear sky at the midpoints of a time grid (numpy arrays, one per step)."""

    zenith: np.ndarray  # [deg], true
    apparent_zenith: np.ndarray  # [deg], with refraction
    azimuth: np.ndarray  # [deg], 180 = south
    airmass_relative: np.ndarray  # [-], NaN at night
    dni_extra: np.ndarray  # [W/m²]
    doy: np.ndarray  # day of year at the midpoint
    ghi_clear: np.ndarray  # [W/m²]
    dni_clear: np.ndarray  # [W/m²]
    dhi_clear: np.ndarray  # [W/m²]

    @property
    def day(self) -> np.ndarray:
        """True where the sun is above the horizon."""
        return self.apparent_zenith < 90.0


_GEOMETRY_CACHE: OrderedDict[tuple, SolarGeometry] = OrderedDict()
_GEOMETRY_CACHE_SIZE = 16


def clear_cache() -> None:
    """Forget cached solar geometry (for benchmarks)."""
    _GEOMETRY_CACHE.clear()
    _linke_monthly.cache_clear()


@lru_cache(maxsize=64)
def _linke_monthly(latitude: float, longitude: float) -> np.ndarray:
    """The 12 monthly Linke turbidity values of pvlib's climatology at the site."""
    mid = pd.DatetimeIndex([f"2021-{m:02d}-15" for m in range(1, 13)], tz="UTC")
    lt = pvlib.clearsky.lookup_linke_turbidity(mid, latitude, longitude, interp_turbidity=False)
    return np.asarray(lt, dtype=float)


def _linke(latitude: float, longitude: float, doy: np.ndarray) -> np.ndarray:
    """Linke turbidity interpolated between mid-months (as pvlib does), by day of year."""
    monthly = _linke_monthly(round(latitude, 4), round(longitude, 4))
    mid_doy = np.array([15, 46, 74, 105, 135, 166, 196, 227, 258, 288, 319, 349], float)
    x = np.concatenate([mid_doy[-1:] - 365, mid_doy, mid_doy[:1] + 365])
    y = np.concatenate([monthly[-1:], monthly, monthly[:1]])
    return np.interp(doy, x, y)


def solar_geometry(site: PVSite, index: pd.DatetimeIndex, step: pd.Timedelta) -> SolarGeometry:
    """Sun position and clear-sky irradiance at ``index + step/2`` (cached per grid).

    Depends only on the instants (a naive index is UTC, as pvlib takes it), not on
    the index's time zone; ``doy`` is the UTC day of year."""
    key = (site.latitude, site.longitude, site.altitude_m, index[0].value, len(index), step.value)
    hit = _GEOMETRY_CACHE.get(key)
    if hit is not None:
        _GEOMETRY_CACHE.move_to_end(key)
        return hit
    # UTC: the result is a function of the instants only. The cache key ignores the
    # index's zone, and a day of year taken from local clock time made the first
    # caller's zone decide the geometry every later caller got (the same simulation
    # gave different results in-process and in a worker process).
    mid = pd.DatetimeIndex(index + step / 2)
    mid = mid.tz_localize("UTC") if mid.tz is None else mid.tz_convert("UTC")
    pressure = pvlib.atmosphere.alt2pres(site.altitude_m)
    sp = pvlib.solarposition.ephemeris(mid, site.latitude, site.longitude, pressure=pressure)
    zen = sp["zenith"].to_numpy(float)
    app = sp["apparent_zenith"].to_numpy(float)
    azi = sp["azimuth"].to_numpy(float)
    doy = mid.day_of_year.to_numpy(float) + (mid.hour.to_numpy() + mid.minute.to_numpy() / 60) / 24
    with np.errstate(invalid="ignore", divide="ignore"):
        am_rel = pvlib.atmosphere.get_relative_airmass(app)
        am_abs = pvlib.atmosphere.get_absolute_airmass(am_rel, pressure)
        dni_extra = pvlib.irradiance.get_extra_radiation(doy)
        cs = pvlib.clearsky.ineichen(
            app, am_abs, _linke(site.latitude, site.longitude, doy), site.altitude_m, dni_extra
        )
    day = app < 90.0
    geo = SolarGeometry(
        zenith=zen,
        apparent_zenith=app,
        azimuth=azi,
        airmass_relative=np.asarray(am_rel, float),
        dni_extra=np.asarray(dni_extra, float),
        doy=doy,
        ghi_clear=np.where(day, np.nan_to_num(cs["ghi"]), 0.0),
        dni_clear=np.where(day, np.nan_to_num(cs["dni"]), 0.0),
        dhi_clear=np.where(day, np.nan_to_num(cs["dhi"]), 0.0),
    )
    _GEOMETRY_CACHE[key] = geo
    if len(_GEOMETRY_CACHE) > _GEOMETRY_CACHE_SIZE:
        _GEOMETRY_CACHE.popitem(last=False)
    return geo


# --------------------------------------------------------------------------- irradiance


def cloud_cover_to_ghi(
    cloud_cover: np.ndarray, ghi_clear: np.ndarray, a: float = CLOUD_A, b: float = CLOUD_B
) -> np.ndarray:
    """GHI [W/m²] from total cloud cover [%] and clear-sky GHI [W/m²].

    ``ghi = ghi_clear * (1 - a * (cc/100) ** b)`` (Kasten & Czeplak 1980 form,
    recalibrated; see :data:`CLOUD_A`).
    """
    cc = np.clip(np.asarray(cloud_cover, float), 0.0, 100.0) / 100.0
    return np.asarray(ghi_clear, float) * (1.0 - a * cc**b)


@dataclass(frozen=True)
class _ArrayParams:
    names: tuple[str, ...]
    tilt: np.ndarray
    azimuth: np.ndarray
    kwp: np.ndarray
    gamma: np.ndarray
    derate: np.ndarray
    ac_kw: np.ndarray
    sapm_a: np.ndarray
    sapm_b: np.ndarray
    sapm_dt: np.ndarray


@lru_cache(maxsize=32)
def _params(arrays: tuple[PVArray, ...]) -> _ArrayParams:
    def col(values: Sequence[float]) -> np.ndarray:
        return np.asarray(values, float)[None, :]

    return _ArrayParams(
        names=tuple(a.name for a in arrays),
        tilt=col([a.tilt_deg for a in arrays]),
        azimuth=col([a.azimuth_deg for a in arrays]),
        kwp=col([a.peak_power_kw for a in arrays]),
        gamma=col([a.temp_coeff_per_c for a in arrays]),
        derate=col([1.0 - a.losses_frac for a in arrays]),
        ac_kw=col([a.inverter_ac_kw or a.peak_power_kw for a in arrays]),
        sapm_a=col([SAPM_PARAMS[a.mounting]["a"] for a in arrays]),
        sapm_b=col([SAPM_PARAMS[a.mounting]["b"] for a in arrays]),
        sapm_dt=col([SAPM_PARAMS[a.mounting]["deltaT"] for a in arrays]),
    )


def inverter_limits_kw(arrays: Sequence[PVArray]) -> np.ndarray:
    """AC limit of each array [kW] (``inverter_ac_kw``, else ``peak_power_kw``)."""
    return _params(tuple(arrays)).ac_kw[0]


def pv_power_array(
    site: PVSite,
    arrays: Sequence[PVArray],
    weather: pd.DataFrame,
    *,
    step: pd.Timedelta | None = None,
    clear_sky: bool = False,
) -> tuple[np.ndarray, SolarGeometry]:
    """AC power [kW] as an ``(n_steps, n_arrays)`` array; see :func:`pv_power`."""
    if weather.index.tz is None:
        raise WeatherError("weather: index must be timezone-aware")
    index = pd.DatetimeIndex(weather.index).tz_convert("UTC")
    step = pd.Timedelta(step) if step is not None else _step_of(index)
    p = _params(tuple(arrays))
    geo = solar_geometry(site, index, step)
    day = geo.day
    n = len(index)

    def get(name: str, default: float) -> np.ndarray:
        if name in weather:
            v = weather[name].to_numpy(float)
            return np.where(np.isfinite(v), v, default)
        return np.full(n, default)

    if clear_sky or ("ghi" not in weather and "cloud_cover" not in weather):
        ghi, dni, dhi = geo.ghi_clear, geo.dni_clear, geo.dhi_clear
    else:
        if "ghi" in weather:
            ghi = np.clip(get("ghi", 0.0), 0.0, None)
            if "cloud_cover" in weather:  # fill missing GHI from cloud cover
                miss = ~np.isfinite(weather["ghi"].to_numpy(float))
                ghi = np.where(miss, cloud_cover_to_ghi(get("cloud_cover", 0), geo.ghi_clear), ghi)
        else:
            ghi = cloud_cover_to_ghi(get("cloud_cover", 0.0), geo.ghi_clear)
        ghi = np.where(day, ghi, 0.0)
        if "dni" in weather and "dhi" in weather:
            dni = np.clip(get("dni", 0.0), 0.0, None)
            dhi = np.clip(get("dhi", 0.0), 0.0, None)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                e = pvlib.irradiance.erbs(ghi, geo.zenith, geo.doy)
            dni = np.nan_to_num(np.asarray(e["dni"], float))
            dhi = np.nan_to_num(np.asarray(e["dhi"], float))
    temp_air = get("temp_air", TYPICAL_TEMP_AIR_C)[:, None]
    wind = get("wind_speed", TYPICAL_WIND_SPEED_M_S)[:, None]
    albedo = get("albedo", ALBEDO)[:, None]

    zen = geo.zenith[:, None]
    azi = geo.azimuth[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_aoi = pvlib.irradiance.aoi_projection(p.tilt, p.azimuth, zen, azi)
        aoi = np.degrees(np.arccos(np.clip(cos_aoi, -1.0, 1.0)))
        beam = dni[:, None] * np.clip(cos_aoi, 0.0, None)
        sky = pvlib.irradiance.perez(
            p.tilt,
            p.azimuth,
            dhi[:, None],
            dni[:, None],
            geo.dni_extra[:, None],
            zen,
            azi,
            geo.airmass_relative[:, None],
        )
        sky = np.nan_to_num(np.asarray(sky, float))
        ground = ghi[:, None] * albedo * (1.0 - np.cos(np.radians(p.tilt))) / 2.0
        iam = np.nan_to_num(pvlib.iam.physical(aoi))
        poa = beam + sky + ground
        effective = beam * iam + sky + ground
        t_cell = pvlib.temperature.sapm_cell(poa, temp_air, wind, p.sapm_a, p.sapm_b, p.sapm_dt)
        pdc = pvlib.pvsystem.pvwatts_dc(effective, t_cell, p.kwp, p.gamma) * p.derate
        pac = pvlib.inverter.pvwatts(pdc, p.ac_kw / INVERTER_ETA_NOM, INVERTER_ETA_NOM)
    pac = np.clip(np.nan_to_num(np.asarray(pac, float), nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    pac = np.minimum(pac, p.ac_kw)
    pac[~day] = 0.0
    return pac, geo


def pv_power(
    site: PVSite,
    arrays: Sequence[PVArray],
    weather: pd.DataFrame,
    *,
    step: pd.Timedelta | None = None,
    clear_sky: bool = False,
) -> pd.DataFrame:
    """AC power [kW] of each array and in total, per step of ``weather``.

    Parameters
    ----------
    site : PVSite
        Latitude, longitude [deg], altitude [m] (used, never looked up).
    arrays : sequence of PVArray
        kWp, tilt, azimuth [deg], temperature coefficient [1/K], losses, AC limit [kW].
    weather : DataFrame
        Canonical weather frame (:mod:`forecasts.weather`): tz-aware index of interval
        starts, regular step; ``ghi`` and/or ``cloud_cover``, optional ``dni``/``dhi``,
        ``temp_air`` [°C], ``wind_speed`` [m/s]. No irradiance column = clear sky.
    step : Timedelta, optional
        Interval length; inferred from the index when it has two rows or more.
    clear_sky : bool
        Ignore irradiance and cloud columns and use Ineichen clear sky.

    Returns
    -------
    DataFrame indexed like ``weather`` (UTC) with ``pv_ac_kw[<array>]`` per array
    and ``pv_ac_kw`` in total [kW], interval averages.
    """
    pac, _ = pv_power_array(site, arrays, weather, step=step, clear_sky=clear_sky)
    names = [array_column(a.name) for a in arrays]
    out = pd.DataFrame(pac, index=pd.DatetimeIndex(weather.index).tz_convert("UTC"), columns=names)
    out.insert(0, "pv_ac_kw", pac.sum(axis=1))
    return out
