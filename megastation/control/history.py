"""Expected cars from history: by weekday/weekend, local hour and charger kind (#11).

:func:`megastation.control.needs.learn_expected_demand` averages arrivals over all days
and takes the *median* energy per car. The plan multiplies cars by energy per car to
get the energy still to come, and the expected value of a sum is the number of terms
times the *mean*: on right-skewed (heavy-tailed) energies the median under-states it
(lognormal with sigma 0.9: median / mean = exp(-sigma^2 / 2) = 0.67; on the issue's real
fortnight by ~28 %). Here:

- **arrivals** per local hour are counted separately for weekdays and weekend days
  (Saturday, Sunday) and divided by the number of such days the history spans, so a
  workplace or a motorway hub with quiet weekends is not planned as the average day;
- **energy per car** is :func:`energy_per_car_kwh`: the mean, winsorised at the
  :data:`ENERGY_WINSOR_Q` quantile (one freak session in a few hundred moves it little;
  with fewer than 1 / (1 - q) sessions it is the plain mean);
- **dwell** stays the median (it only places the aggregate session's departure).

The fleet profile is only the fallback when there is no history
(:func:`expected_demand_for_station`). Pure functions except
:func:`expected_demand_for_station`, which reads closed transactions through
:func:`megastation.store.records.list_transactions` (no SQL here).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from megastation.control.needs import (
    MIN_HISTORY_DAYS,
    MIN_HISTORY_KIND,
    ExpectedDemand,
    KindDemand,
    _kind_power,
    profile_demand,
)
from megastation.core.config import Station
from megastation.store import Store, records

ENERGY_WINSOR_Q = 0.99  # energies above this quantile count as this quantile (n >= 100)
HISTORY_LIMIT = 20000  # latest closed sessions read


def energy_per_car_kwh(energies: Sequence[float], *, winsor_q: float = ENERGY_WINSOR_Q) -> float:
    """Expected energy per car [kWh]: the mean, winsorised at the ``winsor_q`` quantile.

    The mean, not the median: expected energy of ``n`` cars is ``n x mean``. The
    winsorising only bounds the weight of the very top sessions (``q = 0.99`` changes
    nothing below 100 sessions)."""
    xs = sorted(float(e) for e in energies if e is not None and math.isfinite(e) and e >= 0)
    if not xs:
        return 0.0
    cap = xs[min(len(xs) - 1, math.floor(winsor_q * len(xs)))]
    return statistics.fmean(min(x, cap) for x in xs)


def _day_counts(first: datetime, now: datetime, tz: ZoneInfo) -> tuple[float, float]:
    """(weekdays, weekend days) spanned by ``[first, now)``, partial days pro rata."""
    wd = we = 0.0
    t = first
    while t < now:
        local = t.astimezone(tz)
        nxt_local = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = min(now, nxt_local.astimezone(first.tzinfo))
        frac = (nxt - t).total_seconds() / 86400.0
        if local.weekday() >= 5:
            we += frac
        else:
            wd += frac
        t = nxt
    return wd, we


def learn_expected_demand_by_daytype(
    sessions: Sequence[tuple[str, datetime, datetime, float]],
    station: Station,
    now: datetime,
    *,
    min_days: float = MIN_HISTORY_DAYS,
) -> ExpectedDemand | None:
    """Expected cars from finished sessions ``(kind 'ac'|'dc', start UTC, stop UTC,
    energy_kwh)``: arrivals per local hour on weekdays and on weekend days (each over the
    days of its type the history spans; a type the history does not cover takes the
    other's), median dwell, :func:`energy_per_car_kwh`. None when the history spans fewer
    than ``min_days`` days or no kind has :data:`MIN_HISTORY_KIND` sessions."""
    if not sessions:
        return None
    first = min(s[1] for s in sessions)
    if (now - first).total_seconds() / 86400.0 < min_days:
        return None
    tz = ZoneInfo(station.site.timezone)
    # the history covers whole local days from the first session's (its first hours too)
    local = first.astimezone(tz)
    day0 = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(first.tzinfo)
    n_wd, n_we = _day_counts(day0, now, tz)
    kinds = {}
    for kind in ("ac", "dc"):
        rows = [s for s in sessions if s[0] == kind and s[2] > s[1] and s[3] is not None]
        if len(rows) < MIN_HISTORY_KIND:
            continue
        wd, we = [0.0] * 24, [0.0] * 24
        for _, start, _, _ in rows:
            local = start.astimezone(tz)
            (we if local.weekday() >= 5 else wd)[local.hour] += 1.0
        rate_wd = [c / n_wd for c in wd] if n_wd >= 0.5 else None
        rate_we = [c / n_we for c in we] if n_we >= 0.5 else None
        rate_wd = rate_wd or rate_we
        rate_we = rate_we or rate_wd
        car, total = _kind_power(station, kind)
        kinds[kind] = KindDemand(
            arrivals_per_h=tuple(rate_wd),
            dwell_min=statistics.median((b - a).total_seconds() / 60.0 for _, a, b, _ in rows),
            energy_kwh=energy_per_car_kwh([e for *_, e in rows]),
            car_power_kw=car,
            max_power_kw=total,
            weekend_arrivals_per_h=tuple(rate_we),
        )
    return ExpectedDemand(kinds, "history") if kinds else None


def closed_sessions(
    store: Store,
    station: Station,
    *,
    limit: int = HISTORY_LIMIT,
    rows: Sequence[tuple[str, datetime, datetime, float]] | None = None,
) -> list[tuple[str, datetime, datetime, float]]:
    """The store's closed sessions on the station's chargers as ``(kind, start, stop,
    energy_kwh)`` (the latest ``limit`` with an end and a finite energy, oldest first).

    Read with :func:`megastation.store.records.closed_sessions` (four columns, the limit in
    SQL, along a partial index): re-read by the loop on every relearn, a year of history
    cost ~0.15 s per read as whole rows (#15). ``rows``: that read's answer, when the caller
    has it."""
    kind_of = {c.id: c.kind.lower() for c in station.chargers}
    if rows is None:
        rows = records.closed_sessions(store, limit=limit)
    return [(kind_of[c], a, b, e) for c, a, b, e in reversed(rows) if c in kind_of]


def expected_demand_for_station(
    store: Store,
    station: Station,
    now: datetime,
    *,
    fallback: Callable[[], ExpectedDemand | None] | None = None,
    rows: Sequence[tuple[str, datetime, datetime, float]] | None = None,
) -> ExpectedDemand | None:
    """Expected cars from the store's history (:func:`learn_expected_demand_by_daytype`),
    else ``fallback()`` (default: the fleet profile, :func:`needs.profile_demand`).
    ``rows``: :func:`megastation.store.records.closed_sessions` of :data:`HISTORY_LIMIT`
    read now, when the caller has them."""
    sessions = closed_sessions(store, station, rows=rows)
    got = learn_expected_demand_by_daytype(sessions, station, now)
    if got is not None:
        return got
    return fallback() if fallback is not None else profile_demand(station)


__all__ = [
    "ENERGY_WINSOR_Q",
    "closed_sessions",
    "energy_per_car_kwh",
    "expected_demand_for_station",
    "learn_expected_demand_by_daytype",
]
