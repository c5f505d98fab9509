"""Is a file's clock what it says? Timestamp labels and daylight-saving jumps from the sun.

A PV or irradiance series peaks when the sun does. Per local day, the *phase offset*
is the centroid in time of the series minus the centroid of the clear-sky reference
on the same grid [min]: ``sum(t v) / sum(v) - sum(t c) / sum(c)``. Clouds move it
by minutes to tens of minutes on a given day; the median over days is robust.

- :func:`guess_label`: a file read as if ``time`` labelled interval *starts* shows a
  median offset near 0 if it does, near +step for interval ends (values belong to
  the interval before the label).
- :func:`clock_shifts`: a logger that follows daylight saving while its file claims
  one fixed offset (or none was applied) shows the offset jump by about an hour
  between weeks: reported so that the user can fix the file. Only clear-ish days
  (:data:`CLEAR_DAY_INDEX`) are compared: on cloudy ones the centroid wanders.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasts.pvmodel import solar_geometry
from forecasts.weather import _step_of

#: Days with daylight a label guess needs; fewer and the caller's default stands.
MIN_DAYS_FOR_GUESS = 3
#: A change of the median phase offset [min] that counts as a clock jump, the days on
#: each side whose medians are compared, and the days compared: those with at least
#: this share of clear-sky energy. On the TMY3 year at the seed site (no shift) the
#: 3-day medians of all days move by up to 63 min (a cloudy morning moves a centroid
#: by an hour); of days with index >= 0.8 by at most 18 min (208 of 365 days).
SHIFT_MIN = 40.0
SHIFT_WINDOW_DAYS = 3
CLEAR_DAY_INDEX = 0.8
#: A day counts when its clear-sky reference has this share of the file's peak.
MIN_DAY_ENERGY_FRAC = 0.2


def daily_phase_min(
    values: pd.Series, clear: pd.Series, tz: str, *, min_index: float = 0.0
) -> pd.Series:
    """Phase offset [min] of ``values`` against ``clear`` per local day (``tz``).

    Both on the same regular grid (tz-aware index); days where either sums to zero
    or the clear sky is weak (winter polar night, partial first/last day) are left out,
    and days whose energy ratio ``sum(values) / sum(clear)`` is below ``min_index``.
    """
    v = values.reindex(clear.index).to_numpy(float)
    c = clear.to_numpy(float)
    ok = np.isfinite(v) & np.isfinite(c)
    v, c = np.where(ok, np.clip(v, 0.0, None), 0.0), np.where(ok, c, 0.0)
    t_min = (clear.index - clear.index[0]).total_seconds().to_numpy() / 60.0
    day = np.asarray(clear.index.tz_convert(tz).strftime("%Y-%m-%d"))
    frame = pd.DataFrame({"day": day, "t": t_min, "v": v, "c": c})
    g = frame.assign(tv=frame.t * frame.v, tc=frame.t * frame.c).groupby("day", sort=True)
    sums = g[["v", "c", "tv", "tc"]].sum()
    strong = sums["c"] >= MIN_DAY_ENERGY_FRAC * sums["c"].max() if len(sums) else sums["c"]
    sums = sums[(sums["v"] > 0) & strong & (sums["v"] >= min_index * sums["c"])]
    return (sums["tv"] / sums["v"] - sums["tc"] / sums["c"]).rename("phase_min")


def guess_label(phase_min: pd.Series, step: pd.Timedelta) -> str | None:
    """``"start"`` or ``"end"``: the label whose shift is nearer the median phase of a
    series read as start-labelled; None with too few days.

    Instantaneous samples (half a step) are not guessed: on the seed week's 15-min
    rows, labelled at ends, the median phase is +11 min, nearer 7.5 than 15 (clouds
    move it a few minutes); only an explicit ``instant`` chooses them.
    """
    if len(phase_min) < MIN_DAYS_FOR_GUESS:
        return None
    med = float(np.median(phase_min.to_numpy()))
    return "end" if med >= step.total_seconds() / 120.0 else "start"


def clock_shifts(phase_min: pd.Series) -> list[tuple[str, float]]:
    """Days where the clock seems to jump: ``[(first day after, jump [min]), ...]``.

    For each day, the median phase of the ``SHIFT_WINDOW_DAYS`` days from it on is
    compared with that of the same number of days before it; a difference of at least
    :data:`SHIFT_MIN` is a jump (the largest of neighbouring candidates is kept).
    """
    p = phase_min.to_numpy(float)
    n, w = len(p), SHIFT_WINDOW_DAYS
    found: list[tuple[str, float]] = []
    best_i, best = -1, 0.0
    for i in range(w, n - w + 1):
        jump = float(np.median(p[i : i + w]) - np.median(p[i - w : i]))
        if abs(jump) >= SHIFT_MIN and abs(jump) > abs(best) and (best_i < 0 or i - best_i < w):
            best_i, best = i, jump
        elif best_i >= 0 and i - best_i >= w:
            found.append((str(phase_min.index[best_i]), best))
            best_i, best = (i, jump) if abs(jump) >= SHIFT_MIN else (-1, 0.0)
    if best_i >= 0:
        found.append((str(phase_min.index[best_i]), best))
    return found


def weather_label(weather: pd.DataFrame, site: object, default: str = "end") -> tuple[str, str]:
    """The label of a weather frame *read as start-labelled*, guessed from its GHI.

    Returns ``(label, why)``; ``default`` when the frame has no GHI or too few days.
    ``site`` is a :class:`forecasts.site.PVSite` (latitude, longitude, altitude, zone).
    """
    if "ghi" not in weather or len(weather) < 2:
        return default, f"default {default!r} (no GHI to check the timing against)"
    step = _step_of(weather.index)
    geo = solar_geometry(site, weather.index, step)
    clear = pd.Series(geo.ghi_clear, index=weather.index)
    phase = daily_phase_min(weather["ghi"], clear, site.timezone)
    label = guess_label(phase, step)
    if label is None:
        return default, f"default {default!r} ({len(phase)} sunny days, too few to check)"
    med = float(np.median(phase.to_numpy()))
    return (
        label,
        f"{label!r} from the GHI peak, {med:+.0f} min after clear sky's on {len(phase)} days",
    )
