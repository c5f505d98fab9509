"""What each car needs: departure time and energy still wanted.

Sources, strongest first (:attr:`Need.source`):

1. ``override``: the operator set it (``megastation session ID --depart --energy-kwh``);
2. ``charging_needs``: OCPP 2.0.1 NotifyEVChargingNeeds (departureTime, energyAmount);
   ``energyAmount`` is taken as the session's total, so what is still wanted is
   ``energy - delivered so far``; a missing half comes from the defaults below;
3. ``soc``: the car reports its state of charge in MeterValues: energy to
   :data:`TARGET_SOC` of a battery whose capacity is estimated from the SoC rise
   per kWh delivered (or :data:`DEFAULT_EV_BATTERY_KWH`), departure from defaults;
4. ``history``: the station's own finished sessions, median dwell and energy by
   charger kind and local hour of arrival, once a cell has :data:`MIN_HISTORY`
   sessions (else the kind as a whole, if it has that many);
5. ``default``: ``station.defaults['ac'|'dc']`` (median dwell minutes, median energy kWh).

A guess is split in two (:class:`Need`), because a car that leaves before its plan is
done takes the shortfall with it while one that stays longer only waits:

- **firm**: ``energy_kwh`` by ``departure``. When the departure is not known (no
  ChargingNeeds, no override) it is a *pessimistic* one: the :data:`FIRM_DWELL_QUANTILE`
  quantile of the dwell (lognormal around the median with :data:`DWELL_SIGMA`, or the
  empirical quantile of the station's history), so the plan front-loads the car;
- **extra**: ``extra_energy_kwh`` more: what the car will probably still take when its
  energy is not known (up to full from the SoC, else up to :data:`EXTRA_ENERGY_FACTOR` x
  the median energy, and never less than a :data:`EXTRA_TOPUP_FRAC` top-up while it is
  plugged in: only the car knows when it is full; when only the top-up is left it is due
  now, so a car that still draws keeps drawing). With a guessed departure it comes
  with the stay's distribution (``stay_median_s``, ``stay_sigma``) and may be delivered
  until the stay's 95th percentile (``extra_departure``), each kWh weighed by the chance
  the car is still there (dispatch.md, "Uncertain departure"). The controller plans it
  one tier below the firm energy, so it is delivered but gives way to other cars' firm
  energy.

Everything here is a pure function of its inputs except :func:`learn_defaults_from_store`
and :func:`expected_demand_for_station`, which read the store (operator overrides are
:func:`megastation.store.control.session_overrides`).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from megastation.core.config import SessionDefaults, Station
from megastation.core.fleet import generate_visits, load_fleet_profile
from megastation.store import Store, records

MIN_HISTORY = 20  # finished sessions a (kind, hour) cell needs before it is trusted
MIN_HISTORY_KIND = 8  # ... and a whole charger kind (the fallback when the cell is thin)
DEFAULTS_HISTORY_LIMIT = 5000  # the latest closed sessions the defaults are learned from
TARGET_SOC = {"ac": 1.0, "dc": 0.8}  # firm: what a car surely charges to, by charger kind
FULL_SOC = {"ac": 1.0, "dc": 1.0}  # extra: up to this (the car stops itself when done)
DEFAULT_EV_BATTERY_KWH = 64.0  # a typical Korean EV battery when nothing better is known
MIN_DWELL_LEFT_MIN = 5.0  # a car past its assumed departure is given this much more
# Dwell spread (sigma of ln dwell) by kind when there is no history: seeds/fleet.toml.
DWELL_SIGMA = {"ac": 0.55, "dc": 0.40}
DEFAULT_DWELL_SIGMA = 0.5  # ... for a kind not listed
Z_95 = 1.645  # the standard normal's 95th percentile (a lognormal stay's q95)
# The capacity of a car's battery is estimated from its SoC once the SoC rose this much
# on more than this much energy, and kept within this range [kWh].
CAPACITY_MIN_SOC_RISE = 0.05
CAPACITY_MIN_KWH = 1.0
EV_BATTERY_KWH_RANGE = (10.0, 200.0)
FIRM_DWELL_QUANTILE = 0.1  # firm energy is planned to be in the car by this dwell quantile
EXTRA_ENERGY_FACTOR = 1.6  # no SoC: the car may take up to this x the median energy
EXTRA_TAIL_FRAC = 0.25  # a car past its median dwell stays about this x median longer
EXTRA_TOPUP_FRAC = 0.25  # no SoC: this x the median energy stays on offer while plugged in
# A known departure (ChargingNeeds, override) is planned with this share of the stay as a
# margin (at least MIN_DWELL_LEFT_MIN): a plan that fills the last minutes has no slack
# for a car that takes less than planned (taper, ramps, meter timing) or leaves early.
KNOWN_DEPARTURE_MARGIN_FRAC = 0.15


@dataclass(frozen=True)
class Need:
    """What a session still wants."""

    departure: datetime  # UTC; firm energy is due then (pessimistic when guessed)
    energy_kwh: float  # firm energy still wanted from now [kWh], >= 0
    source: str  # override | charging_needs | soc | history | default
    extra_energy_kwh: float = 0.0  # likely more the car takes, beyond the firm energy [kWh]
    extra_departure: datetime | None = None  # when the extra is due (expected departure)
    departure_known: bool = False  # from ChargingNeeds or an operator override
    # guessed departure: the stay is lognormal with this median [s] and sigma (of ln stay),
    # so the plan weighs the extra energy by the chance the car is still there
    # (dispatch.SessionNeed.stay_median_s); extra_departure is then its 95th percentile
    stay_median_s: float | None = None
    stay_sigma: float = 0.0


@dataclass(frozen=True)
class LearnedDefaults:
    """Session defaults learned from history, by (kind, local hour of arrival)."""

    by_cell: dict[tuple[str, int], SessionDefaults]
    by_kind: dict[str, SessionDefaults]
    # FIRM_DWELL_QUANTILE of the dwell [min], same keys
    early_by_cell: dict[tuple[str, int], float] = field(default_factory=dict)
    early_by_kind: dict[str, float] = field(default_factory=dict)

    def get(self, kind: str, hour: int) -> SessionDefaults | None:
        return self.by_cell.get((kind, hour)) or self.by_kind.get(kind)

    def early_dwell_min(self, kind: str, hour: int) -> float | None:
        """The pessimistic (low-quantile) dwell [min] of the cell used by :meth:`get`."""
        if (kind, hour) in self.by_cell:
            return self.early_by_cell.get((kind, hour))
        return self.early_by_kind.get(kind)


def learn_defaults(
    sessions: Sequence[tuple[str, datetime, datetime, float]],
    timezone: str,
    *,
    min_count: int = MIN_HISTORY,
    min_count_kind: int = MIN_HISTORY_KIND,
) -> LearnedDefaults:
    """Median dwell [min] and energy [kWh] by (kind, local arrival hour), and the
    :data:`FIRM_DWELL_QUANTILE` quantile of the dwell.

    ``sessions`` are finished sessions ``(kind 'ac'|'dc', start UTC, stop UTC, energy_kwh)``.
    Cells with fewer than ``min_count`` sessions, kinds with fewer than
    ``min_count_kind``, are left out.
    """
    tz = ZoneInfo(timezone)
    cells: dict[tuple[str, int], list[tuple[float, float]]] = {}
    kinds: dict[str, list[tuple[float, float]]] = {}
    for kind, start, stop, energy in sessions:
        dwell = (stop - start).total_seconds() / 60.0
        if dwell <= 0 or energy is None or energy < 0:
            continue
        hour = start.astimezone(tz).hour
        cells.setdefault((kind, hour), []).append((dwell, energy))
        kinds.setdefault(kind, []).append((dwell, energy))

    def med(rows: list[tuple[float, float]]) -> SessionDefaults:
        return SessionDefaults(
            dwell_min=statistics.median(r[0] for r in rows),
            energy_kwh=statistics.median(r[1] for r in rows),
        )

    def early(rows: list[tuple[float, float]]) -> float:
        dwell = sorted(r[0] for r in rows)
        return dwell[int(FIRM_DWELL_QUANTILE * (len(dwell) - 1))]

    cell_ok = {k: v for k, v in cells.items() if len(v) >= min_count}
    kind_ok = {k: v for k, v in kinds.items() if len(v) >= min_count_kind}
    return LearnedDefaults(
        by_cell={k: med(v) for k, v in cell_ok.items()},
        by_kind={k: med(v) for k, v in kind_ok.items()},
        early_by_cell={k: early(v) for k, v in cell_ok.items()},
        early_by_kind={k: early(v) for k, v in kind_ok.items()},
    )


@functools.cache
def _normal_quantile(q: float) -> float:
    """The standard normal's ``q`` quantile (once: every car of every plan asks for it)."""
    return statistics.NormalDist().inv_cdf(q)


def _typical_stay(
    kind: str,
    started_at: datetime,
    timezone: str,
    defaults: Mapping[str, SessionDefaults],
    learned: LearnedDefaults | None,
) -> tuple[SessionDefaults, str, float]:
    """The typical stay and energy of a car of ``kind`` arriving at ``started_at``, where
    it comes from ('history' | 'default'), and the pessimistic dwell [min]."""
    base = defaults[kind]
    source = "default"
    hour = started_at.astimezone(ZoneInfo(timezone)).hour
    z = _normal_quantile(FIRM_DWELL_QUANTILE)
    early_min = base.dwell_min * math.exp(z * DWELL_SIGMA.get(kind, DEFAULT_DWELL_SIGMA))
    if learned is not None and (got := learned.get(kind, hour)) is not None:
        base, source = got, "history"
        early_min = learned.early_dwell_min(kind, hour) or early_min
    return base, source, early_min


def ev_battery_kwh(soc_frac: float, soc_start_frac: float | None, delivered_kwh: float) -> float:
    """A car's battery capacity [kWh] from its SoC rise per kWh delivered, once it has
    risen :data:`CAPACITY_MIN_SOC_RISE` on more than :data:`CAPACITY_MIN_KWH`; else
    :data:`DEFAULT_EV_BATTERY_KWH`."""
    if (
        soc_start_frac is not None
        and soc_frac - soc_start_frac >= CAPACITY_MIN_SOC_RISE
        and delivered_kwh > CAPACITY_MIN_KWH
    ):
        lo, hi = EV_BATTERY_KWH_RANGE
        return min(hi, max(lo, delivered_kwh / (soc_frac - soc_start_frac)))
    return DEFAULT_EV_BATTERY_KWH


def estimate_need(
    *,
    kind: str,
    started_at: datetime,
    delivered_kwh: float,
    now: datetime,
    timezone: str,
    defaults: Mapping[str, SessionDefaults],
    learned: LearnedDefaults | None = None,
    needs_departure: datetime | None = None,
    needs_energy_kwh: float | None = None,
    soc_frac: float | None = None,
    soc_start_frac: float | None = None,
    override_departure: datetime | None = None,
    override_energy_kwh: float | None = None,
) -> Need:
    """Departure and energy still wanted for one session (see the module docstring).

    ``kind`` is 'ac' or 'dc'; ``delivered_kwh`` the energy charged so far;
    ``soc_start_frac`` the first SoC seen in the session (for the capacity estimate).
    """
    kind = kind.lower()
    base, source, early_min = _typical_stay(kind, started_at, timezone, defaults, learned)
    # departure: pessimistic (firm) and expected (extra)
    departure = started_at + timedelta(minutes=min(early_min, base.dwell_min))
    expected = started_at + timedelta(minutes=base.dwell_min)
    # energy: firm, and what the car may take on top
    energy = base.energy_kwh - delivered_kwh
    total_high = EXTRA_ENERGY_FACTOR * base.energy_kwh - delivered_kwh
    # a car that took all we guessed may want more (an AC car does not say its SoC): keep
    # a top-up on offer; a full car shows it by drawing nothing (the controller caps it)
    topup_kwh: float | None = EXTRA_TOPUP_FRAC * base.energy_kwh
    total_high = max(total_high, topup_kwh)

    if soc_frac is not None:
        capacity = ev_battery_kwh(soc_frac, soc_start_frac, delivered_kwh)
        energy = (TARGET_SOC.get(kind, 1.0) - soc_frac) * capacity
        total_high = (FULL_SOC.get(kind, 1.0) - soc_frac) * capacity
        source = "soc"
        topup_kwh = None  # the SoC says how much more: no top-up

    departure_known = False
    # What the car said, then what the operator said: each later source wins.
    for src, said_departure, said_energy_kwh in (
        ("charging_needs", needs_departure, needs_energy_kwh),
        ("override", override_departure, override_energy_kwh),
    ):
        if said_departure is None and said_energy_kwh is None:
            continue
        source = src
        if said_departure is not None:
            departure = expected = said_departure
            departure_known = True
        if said_energy_kwh is not None:
            # what the driver said is firm, and once it is in a top-up stays on offer:
            # stated energies are often far off (#11), and only the car knows when it is
            # full (it then draws nothing)
            energy = said_energy_kwh - delivered_kwh
            topup_kwh = EXTRA_TOPUP_FRAC * base.energy_kwh
            total_high = max(energy, topup_kwh)

    energy = max(0.0, energy)
    extra = max(0.0, total_high - energy)
    soon = now + timedelta(minutes=MIN_DWELL_LEFT_MIN)
    if departure_known and departure > soon:
        margin = max(
            KNOWN_DEPARTURE_MARGIN_FRAC * (departure - started_at),
            timedelta(minutes=MIN_DWELL_LEFT_MIN),
        )
        departure = max(departure - margin, soon)
    if departure < soon:
        departure = soon
    stay_median_s = None
    sigma = 0.0
    if not departure_known:
        # the extra may come until the stay's 95th percentile, each kWh weighed by the
        # chance the car is still there (lognormal stay); still here after that: it stays
        # a while yet
        sigma = DWELL_SIGMA.get(kind, DEFAULT_DWELL_SIGMA)
        stay_median_s = 60.0 * base.dwell_min
        q95 = started_at + timedelta(seconds=stay_median_s * math.exp(Z_95 * sigma))
        tail = timedelta(minutes=max(2 * MIN_DWELL_LEFT_MIN, EXTRA_TAIL_FRAC * base.dwell_min))
        expected = max(q95, now + tail)
    expected = max(expected, departure)
    if topup_kwh is not None and energy <= 0.0 and total_high <= topup_kwh:
        # only the top-up is left: it is due now. Due at the (stated or expected)
        # departure it was a small amount the plan spread over hours, re-offered after
        # each plan, so a car that still drew was held to a trickle (#11: workplace file
        # at 1/4 scale, a car that said 20.5 kWh and wanted 39 left 5 kWh short)
        departure = expected = soon
    return Need(
        departure=departure,
        energy_kwh=energy,
        source=source,
        extra_energy_kwh=extra,
        extra_departure=expected,
        departure_known=departure_known,
        stay_median_s=stay_median_s,
        stay_sigma=sigma,
    )


# --------------------------------------------------------------------------- store


def learn_defaults_from_store(
    store: Store,
    kind_of: Mapping[str, str],
    timezone: str,
    *,
    limit: int = DEFAULTS_HISTORY_LIMIT,
    rows: Sequence[tuple[str, datetime, datetime, float]] | None = None,
) -> LearnedDefaults:
    """:func:`learn_defaults` over the latest ``limit`` closed transactions in the store.

    ``kind_of`` maps charger id to 'ac' / 'dc'; unknown chargers are skipped. ``rows``: a
    longer read of :func:`megastation.store.records.closed_sessions` the caller has (its
    newest ``limit`` are the read of ``limit``: the store returns them in one order).
    """
    return learn_defaults(_closed_sessions_by_kind(store, kind_of, limit, rows), timezone)


def _closed_sessions_by_kind(
    store: Store,
    kind_of: Mapping[str, str],
    limit: int,
    rows: Sequence[tuple[str, datetime, datetime, float]] | None = None,
) -> list[tuple[str, datetime, datetime, float]]:
    """The latest ``limit`` closed sessions as ``(kind, start, stop, energy_kwh)``, on
    chargers in ``kind_of`` (charger id -> 'ac' / 'dc'); from ``rows`` (newest first)
    when given, else read."""
    newest = rows[:limit] if rows is not None else records.closed_sessions(store, limit=limit)
    return [(kind_of[c], a, b, e) for c, a, b, e in newest if c in kind_of]


# --------------------------------------------------------------------------- expected cars

# Expected (not yet arrived) cars are planned as one aggregate session per charger kind
# and hour. Their unmet kWh cost this share of a firm kWh (tier 1): far below any real
# car's firm or extra energy (EXTRA_PRIORITY 0.05) and below a grid kWh into a car
# (re100 tier 2, 1e4 points = 0.01 of tier 1), but far above money (tier 3): the plan
# keeps PV and green stored energy for them rather than export or curtail it, yet never
# buys grid energy for them, nor holds back green energy a real car could use instead
# of grid energy. Measured choice: dispatch.md, "Cars still to come".
EXPECTED_PRIORITY = 0.005
EXPECTED_PREFIX = "expected:"
PROFILE_HISTORY_DAYS = 28  # simulated history behind expected_demand_from_profile
MIN_HISTORY_DAYS = 3.0  # history must span this many days before it replaces the profile
MIN_EXPECTED_KWH = 0.1  # an expected session with less energy is left out
MIN_HOUR_FRAC = 1e-6  # a part of an hour shorter than this share gets no expected session


@dataclass(frozen=True)
class KindDemand:
    """Expected arrivals of one charger kind at the whole station."""

    arrivals_per_h: tuple[float, ...]  # 24 values: cars per hour by local hour (all days)
    dwell_min: float  # typical (median) stay
    energy_kwh: float  # typical (median) energy per car
    car_power_kw: float  # what one car can take (connector power)
    max_power_kw: float  # all connectors of the kind together
    # Saturdays and Sundays, when learned apart (megastation.control.history); None: as above
    weekend_arrivals_per_h: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ExpectedDemand:
    """Expected future cars by charger kind ('ac' / 'dc'), and where the figures came from."""

    kinds: dict[str, KindDemand]
    source: str  # history | fleet profile


def _kind_power(station: Station, kind: str) -> tuple[float, float]:
    chargers = [c for c in station.chargers if c.kind.lower() == kind]
    if not chargers:
        return 0.0, 0.0
    car = statistics.median(c.connector_power_kw for c in chargers)
    total = sum(min(c.max_power_kw, c.connector_power_kw * c.connectors) for c in chargers)
    return car, total


def expected_demand_from_profile(
    station: Station, profile: object, *, days: int = PROFILE_HISTORY_DAYS, seed: int = 0
) -> ExpectedDemand:
    """Expected cars from a fleet profile (:class:`megastation.core.fleet.FleetProfile`): what
    the station's own history would show if the profile is right. ``days`` of visits are
    simulated from it (:func:`megastation.core.fleet.generate_visits`: a busy connector turns
    cars away, so fewer arrive than the rates say) and learned like real history
    (:func:`learn_expected_demand`), each visit counting the energy it can take by its
    departure at its car's and connector's power, not what its driver wanted (history
    records what cars took). Deterministic for a given ``seed``."""

    start = datetime(2026, 1, 5, tzinfo=UTC)  # any fixed span: only hours and counts matter
    end = start + timedelta(days=days)
    kinds = {c.id: c.kind.lower() for c in station.chargers}
    power = {c.id: c.connector_power_kw for c in station.chargers}
    rows = []
    for v in generate_visits(station, start, end, seed, profile=profile):
        hours = (v.departure - v.arrival).total_seconds() / 3600.0
        kw = min(v.car_max_power_kw, power[v.charger_id])
        rows.append(
            (kinds[v.charger_id], v.arrival, v.departure, min(v.energy_wanted_kwh, kw * hours))
        )
    got = learn_expected_demand(rows, station, end, min_days=0.0)
    return ExpectedDemand(got.kinds if got else {}, "fleet profile")


def learn_expected_demand(
    sessions: Sequence[tuple[str, datetime, datetime, float]],
    station: Station,
    now: datetime,
    *,
    min_days: float = MIN_HISTORY_DAYS,
) -> ExpectedDemand | None:
    """Expected cars from finished sessions ``(kind, start UTC, stop UTC, energy_kwh)``:
    arrivals per local hour averaged over the days the history spans (weekdays and
    weekends alike), median dwell and energy. None when the history spans fewer than
    ``min_days`` days or a kind has fewer than :data:`MIN_HISTORY_KIND` sessions."""
    if not sessions:
        return None
    first = min(s[1] for s in sessions)
    days = (now - first).total_seconds() / 86400.0
    if days < min_days:
        return None
    tz = ZoneInfo(station.site.timezone)
    kinds = {}
    for kind in ("ac", "dc"):
        rows = [s for s in sessions if s[0] == kind and s[2] > s[1] and s[3] is not None]
        if len(rows) < MIN_HISTORY_KIND:
            continue
        counts = [0.0] * 24
        for _, start, _, _ in rows:
            counts[start.astimezone(tz).hour] += 1.0
        car, total = _kind_power(station, kind)
        kinds[kind] = KindDemand(
            arrivals_per_h=tuple(c / days for c in counts),
            dwell_min=statistics.median((b - a).total_seconds() / 60.0 for _, a, b, _ in rows),
            energy_kwh=statistics.median(e for *_, e in rows),
            car_power_kw=car,
            max_power_kw=total,
        )
    return ExpectedDemand(kinds, "history") if kinds else None


def expected_sessions(
    demand: ExpectedDemand,
    edges_utc: Sequence[datetime],
    timezone: str,
    *,
    priority: float = EXPECTED_PRIORITY,
    share: float = 1.0,
) -> list[tuple[str, str, datetime, datetime, float, float, float]]:
    """Aggregate expected sessions over a plan whose steps start at ``edges_utc[:-1]``.

    One per kind and local clock hour from the end of the first step (cars arriving
    within the first step are seen when they plug in) to the end of the plan: arriving
    at the start of the hour (or of the window), leaving the typical dwell after its
    end, wanting ``share`` x (expected cars x energy per car) kWh (the policy's
    ``expected_share``: :data:`megastation.dispatch.RE100_EXPECTED_SHARE` under re100)
    at up to (cars x car power), capped by the kind's connectors. Returns tuples
    ``(session_id, kind, arrival, departure, energy_kwh, max_power_kw, priority)``.
    """
    tz = ZoneInfo(timezone)
    lo, hi = edges_utc[1] if len(edges_utc) > 1 else edges_utc[0], edges_utc[-1]
    out = []
    t = lo.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    while t < hi:
        nxt = t + timedelta(hours=1)
        a, b = max(t, lo), min(nxt, hi)
        frac = (b - a).total_seconds() / 3600.0
        if frac > MIN_HOUR_FRAC:
            for kind, kd in demand.kinds.items():
                per_h = kd.weekend_arrivals_per_h if t.weekday() >= 5 else None
                cars = (per_h or kd.arrivals_per_h)[t.hour] * frac
                kwh = cars * kd.energy_kwh * share
                if kwh < MIN_EXPECTED_KWH:
                    continue
                dep = b + timedelta(minutes=kd.dwell_min)
                kw = min(kd.max_power_kw, max(cars, 1.0) * kd.car_power_kw)
                sid = f"{EXPECTED_PREFIX}{kind}:{a.astimezone(UTC).isoformat()}"
                out.append((sid, kind, a, dep, kwh, kw, priority))
        t = nxt
    return out


def expected_demand_for_station(
    store: Store,
    station: Station,
    now: datetime,
    *,
    limit: int = 20000,
    fallback: Callable[[], ExpectedDemand | None] | None = None,
) -> ExpectedDemand | None:
    """Expected cars learned from the store's closed sessions (:func:`learn_expected_demand`),
    else ``fallback()`` (default :func:`profile_demand`: the fleet profile in ``seeds/``)."""
    kind_of = {c.id: c.kind.lower() for c in station.chargers}
    got = learn_expected_demand(_closed_sessions_by_kind(store, kind_of, limit), station, now)
    if got is not None:
        return got
    return fallback() if fallback is not None else profile_demand(station)


def profile_demand(station: Station) -> ExpectedDemand | None:
    """:func:`expected_demand_from_profile` for the fleet profile in ``seeds/``; None when
    it cannot be read."""
    try:
        return expected_demand_from_profile(station, load_fleet_profile())
    except (OSError, ValueError, KeyError):
        return None
