"""P10/P90 bands around the P50 forecast, by lead time and by the forecast's own regime.

Errors are measured in *clear-sky index* units: ``e = (measured - forecast) /
clear_sky_pv`` on daylight steps (clear-sky PV at least 5 % of capacity), so one
spread serves noon and evening alike. The bands are

    p10 = clip(p50 + q10 * clear, 0, limit),  p90 = clip(p50 + q90 * clear, 0, limit)

with ``q10``/``q90`` the 10th/90th error percentiles *given what is known at issue
time*: the lead (while the nowcast's measured index loses weight the spread grows) and
the regime, the forecast's own clear-sky index ``p50 / clear`` in bins
(:data:`REGIME_EDGES`: overcast, dull, broken, bright, clear-or-enhanced). The errors are
heteroscedastic: a forecast of steady overcast or of clear sky misses by little, one of
broken cloud by a lot, so one spread for all was too wide on clear and overcast days
and too narrow on broken-cloud ones. With a weather forecast, also the *season*
(:func:`season`: the solar declination's sign times the latitude's, so no month table and
either hemisphere; :data:`SEASON_EDGES`: the summer and the winter half): one spread for
the year covered 0.83 in summer and 0.77 in winter at 6 h. ``p10 <= p50 <= p90`` always; no cap at a multiple
of clear sky (cloud enhancement is real; a cap made P90 cover less than it claims); the
inverter's AC limit caps P90 (no upside at the clip).

Without a nowcast (no measured PV, or at night) the per-regime scalars apply (the raw
forecast's errors). Defaults: :data:`DEFAULT_BANDS` (with a weather forecast) and
:data:`CLEARSKY_BANDS` (clear sky x recent index), read from ``bands_fitted.json``
written by benchmarks/forecast.py ``--fit --write`` (:func:`forecasts.calibration.fit_band_table`;
see forecasts/README.md for the data and the held-out coverage). :func:`fit_bands` fits
the per-regime scalars from a station's own history (>= ``MIN_SAMPLES`` daylight steps),
per season too when given each step's season.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

MIN_SAMPLES = 96
#: A regime with fewer daylight steps than this takes the pooled percentiles.
MIN_REGIME_SAMPLES = 30
MIN_CLEAR_FRAC = 0.05
#: Bin edges of the forecast's clear-sky index ``p50 / clear`` [-]: equal bins of 0.25
#: to 1, the last open (see forecasts/README.md for how they were chosen).
REGIME_EDGES = (0.25, 0.5, 0.75, 1.0)
#: Bin edges of the season measure (:func:`season`, -1 midwinter .. +1 midsummer on
#: either hemisphere); see forecasts/README.md for how the number was chosen.
SEASON_EDGES = (0.0,)
FITTED_FILE = Path(__file__).with_name("bands_fitted.json")


def regime(p50_kw: np.ndarray, clear_kw: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Regime index (0 .. len(edges)) of each step: the bin of ``p50 / clear`` (0 at night)."""
    p, c = np.asarray(p50_kw, float), np.asarray(clear_kw, float)
    k = np.divide(p, c, out=np.zeros(np.broadcast_shapes(p.shape, c.shape)), where=c > 0)
    k[np.isnan(k)] = 0.0
    return np.searchsorted(np.asarray(edges, float), k, side="right")


def season(times: pd.DatetimeIndex, latitude_deg: float) -> np.ndarray:
    """Season measure of each time [-1 .. 1]: the solar declination over its maximum
    (Cooper's formula, day of the year) times the sign of the latitude, so +1 is the
    local midsummer and -1 midwinter on either hemisphere (0 on the equator)."""
    times = pd.DatetimeIndex(times)
    if times.tz is not None:
        times = times.tz_localize(None)  # the wall-clock day of the times' own zone
    return season_ns(times.as_unit("ns").asi8, latitude_deg)


def season_ns(wall_ns: np.ndarray, latitude_deg: float) -> np.ndarray:
    """:func:`season` of wall-clock times given as nanoseconds since 1970-01-01."""
    t = np.asarray(wall_ns, dtype=np.int64).view("M8[ns]")
    doy = (t.astype("M8[D]") - t.astype("M8[Y]")).astype(np.int64) + 1
    return float(np.sign(latitude_deg)) * np.sin(2 * np.pi * (284.0 + doy.astype(float)) / 365.0)


def band_class(
    p50_kw: np.ndarray,
    clear_kw: np.ndarray,
    edges: tuple[float, ...],
    season_of: np.ndarray | None = None,
    season_edges: tuple[float, ...] = (),
) -> np.ndarray:
    """Row of each step in the bands tables: its :func:`regime`, and with
    ``season_edges`` its season bin (of ``season_of``) times the number of regimes plus it."""
    r = regime(p50_kw, clear_kw, edges)
    if not season_edges:
        return r
    if season_of is None:
        raise ValueError("season: required by bands fitted per season (season_edges set)")
    s = np.searchsorted(
        np.asarray(season_edges, float), np.broadcast_to(season_of, r.shape), "right"
    )
    return s * (len(edges) + 1) + r


@dataclass(frozen=True)
class Bands:
    """Error percentiles in clear-sky-index units; every ``q10 <= 0 <= q90``.

    ``q10``/``q90`` apply without a nowcast; ``leads_h`` with ``q10_by_lead`` /
    ``q90_by_lead`` (same length) apply by lead [h] when the nowcast corrected P50
    (linear between nodes, held outside). With ``regime_edges`` (see :func:`regime`),
    ``q10_by_regime``/``q90_by_regime`` (one per regime) replace the scalars and
    ``q10_by_regime_lead``/``q90_by_regime_lead`` (one row of ``leads_h`` per regime)
    the rows by lead; the pooled values stay as a summary. With ``season_edges`` (see
    :func:`band_class`) those tables have one block of regimes per season bin, season-major.
    """

    q10: float
    q90: float
    n_samples: int = 0  # daylight steps they were fitted on; 0 = default
    source: str = "default"
    leads_h: tuple[float, ...] = ()
    q10_by_lead: tuple[float, ...] = ()
    q90_by_lead: tuple[float, ...] = ()
    regime_edges: tuple[float, ...] = ()
    q10_by_regime: tuple[float, ...] = ()
    q90_by_regime: tuple[float, ...] = ()
    q10_by_regime_lead: tuple[tuple[float, ...], ...] = ()
    q90_by_regime_lead: tuple[tuple[float, ...], ...] = ()
    season_edges: tuple[float, ...] = ()

    def __deepcopy__(self, memo: dict) -> Bands:
        # immutable: a forecast frame carries its Bands in ``attrs``, which pandas
        # deep-copies on every column access and arithmetic (#15)
        return self

    def at(self, lead_h: np.ndarray | None) -> tuple[np.ndarray | float, np.ndarray | float]:
        """Pooled ``(q10, q90)`` at each lead, or the scalars when ``lead_h`` is None."""
        if lead_h is None or not self.leads_h:
            return self.q10, self.q90
        lead = np.clip(np.asarray(lead_h, float), 0.0, None)
        return (
            np.interp(lead, self.leads_h, self.q10_by_lead),
            np.interp(lead, self.leads_h, self.q90_by_lead),
        )

    def quantiles(
        self,
        p50_kw: np.ndarray,
        clear_kw: np.ndarray,
        lead_h: np.ndarray | None = None,
        season_of: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(q10, q90)`` for each step: by regime of ``p50 / clear``, by season
        (``season_of``, :func:`season`) when the bands have ``season_edges`` and, when
        ``lead_h`` is given (the nowcast applied), by lead."""
        shape = np.shape(p50_kw)
        if not self.regime_edges:
            q10, q90 = self.at(lead_h)
            return np.broadcast_to(q10, shape).copy(), np.broadcast_to(q90, shape).copy()
        r = band_class(p50_kw, clear_kw, self.regime_edges, season_of, self.season_edges)
        tables = self._tables
        if lead_h is None or not self.leads_h:
            return tables[0][r], tables[1][r]
        # linear in lead between nodes, held outside (np.interp's rule), all regimes at once:
        # the fractional node position of each lead, then the flattened (regime, lead) rows
        nodes, n = tables[2], len(tables[2])
        pos = np.interp(np.asarray(lead_h, float), nodes, np.arange(n, dtype=float))
        i = np.minimum(pos.astype(int), max(n - 2, 0))
        w, j = pos - i, np.minimum(i + 1, n - 1)
        lo, hi = r * n + i, r * n + j
        q10, q90 = tables[3], tables[4]
        return q10[lo] + w * (q10[hi] - q10[lo]), q90[lo] + w * (q90[hi] - q90[lo])

    @cached_property
    def _tables(self) -> tuple[np.ndarray, ...]:
        """The regime tables as arrays: scalars by regime, nodes, rows by regime x lead."""
        return (
            np.asarray(self.q10_by_regime, float),
            np.asarray(self.q90_by_regime, float),
            np.asarray(self.leads_h, float),
            np.asarray(self.q10_by_regime_lead, float).ravel(),
            np.asarray(self.q90_by_regime_lead, float).ravel(),
        )


def bands_from_dict(d: dict) -> Bands:
    """A :class:`Bands` from its JSON form (lists for tuples)."""

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return Bands(**{k: tup(v) for k, v in d.items() if k in Bands.__dataclass_fields__})


def bands_to_dict(b: Bands) -> dict:
    """The JSON form of ``b`` (rounded to 4 decimals)."""

    def out(v):
        if isinstance(v, tuple):
            return [out(x) for x in v]
        return round(v, 4) if isinstance(v, float) else v

    return {k: out(getattr(b, k)) for k in Bands.__dataclass_fields__}


def _fitted() -> dict[str, Bands]:
    data = json.loads(FITTED_FILE.read_text())
    return {kind: bands_from_dict(data[kind]) for kind in ("weather", "clearsky")}


_FITTED = _fitted()
#: With a weather forecast.
DEFAULT_BANDS = _FITTED["weather"]
#: Without one (clear sky x the recent clear-sky index).
CLEARSKY_BANDS = _FITTED["clearsky"]


def _percentiles(e: np.ndarray) -> tuple[float, float]:
    q10, q90 = np.percentile(e, [10, 90])
    return min(float(q10), 0.0), max(float(q90), 0.0)


def fit_bands(
    measured_kw: np.ndarray,
    forecast_kw: np.ndarray,
    clear_kw: np.ndarray,
    capacity_kw: float,
    *,
    default: Bands = DEFAULT_BANDS,
    edges: tuple[float, ...] = REGIME_EDGES,
    season_of: np.ndarray | None = None,
    season_edges: tuple[float, ...] = SEASON_EDGES,
) -> Bands:
    """Band percentiles from past measured vs forecast PV [kW] on the same steps: pooled,
    and per regime of ``forecast / clear`` (``edges``; a regime with fewer than
    ``MIN_REGIME_SAMPLES`` daylight steps takes the pooled values). With ``season_of``
    (:func:`season` of each step) also per season bin (``season_edges``): a season x
    regime cell with too few steps takes its regime's values over all seasons."""
    m, f, c = (np.asarray(x, float) for x in (measured_kw, forecast_kw, clear_kw))
    ok = np.isfinite(m) & np.isfinite(f) & np.isfinite(c) & (c >= MIN_CLEAR_FRAC * capacity_kw)
    if ok.sum() < MIN_SAMPLES:
        return default
    e = (m[ok] - f[ok]) / c[ok]
    q10, q90 = _percentiles(e)
    r = regime(f[ok], c[ok], edges)
    n_reg = len(edges) + 1

    def cells(sel: np.ndarray, fallback: list) -> list:
        return [
            _percentiles(e[sel & (r == j)]) if (sel & (r == j)).sum() >= MIN_REGIME_SAMPLES
            else fallback[j]
            for j in range(n_reg)
        ]  # fmt: skip

    by = cells(np.ones(len(e), bool), [(q10, q90)] * n_reg)
    seasons = ()
    if season_of is not None and season_edges:
        seasons = tuple(season_edges)
        s = np.searchsorted(np.asarray(seasons, float), np.asarray(season_of, float)[ok], "right")
        by = [cell for k in range(len(seasons) + 1) for cell in cells(s == k, by)]
    return Bands(
        q10, q90, int(ok.sum()), "history", regime_edges=tuple(edges),
        q10_by_regime=tuple(b[0] for b in by), q90_by_regime=tuple(b[1] for b in by),
        season_edges=seasons,
    )  # fmt: skip


def apply_bands(
    p50_kw: np.ndarray,
    clear_kw: np.ndarray,
    limit_kw: float,
    bands: Bands,
    lead_h: np.ndarray | None = None,
    season_of: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 [kW] around ``p50_kw`` (totals); by regime, by season (``season_of``,
    :func:`season`; required when ``bands`` has ``season_edges``), and by lead when
    ``lead_h`` is given (the nowcast applied)."""
    p50 = np.asarray(p50_kw, float)
    q10, q90 = bands.quantiles(p50, clear_kw, lead_h, season_of)
    p10 = np.clip(p50 + q10 * clear_kw, 0.0, limit_kw)
    p90 = np.clip(p50 + q90 * clear_kw, 0.0, limit_kw)
    return np.minimum(p10, p50), np.maximum(p90, p50)
