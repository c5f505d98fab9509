"""Simulated car visits: who plugs into which connector, when, for how long, wanting what.

Pure and seeded: :func:`generate_visits` turns a station, a time window and a seed into
a list of :class:`CarVisit`. Every distribution is data in ``seeds/`` —
``seeds/fleet.toml`` (arrival rates by local hour, dwell, state of charge, share of cars
sending ChargingNeeds, per charger kind) and ``seeds/ev_models.csv`` (car models with
battery size, AC and DC max power and market share) — loaded by
:func:`load_fleet_profile`.

Model, per charger kind (AC / DC):

- Arrivals are a non-homogeneous Poisson process with a rate piecewise constant per
  local clock hour: ``rate = arrivals_per_connector_per_h[hour] x connectors of that
  kind`` (times ``weekend_factor`` on Saturdays and Sundays).
- An arriving car takes a random *free* connector of its kind (free = the previous car
  left at least ``turnover_gap_min`` ago); when none is free it drives on (is lost), so
  visits never overlap on a connector.
- Dwell is lognormal (median, sigma) clipped to [min, max]; a share of late AC arrivals
  stays overnight and leaves next morning at ``N(mean, sd)`` local hours.
- Arrival state of charge is Beta(alpha, beta); the driver wants a SoC uniform in
  [target_soc_min, target_soc_max], so ``energy_wanted_kwh = battery_kwh x (target -
  soc_arrival)`` never exceeds what the battery can take.
- The car model is drawn by market share; ``car_max_power_kw`` is its DC or AC limit.
"""

from __future__ import annotations

import csv
import math
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from megastation.core.clock import utc
from megastation.core.config import Station, seeds_dir

KINDS = ("AC", "DC")


@dataclass(frozen=True)
class CarVisit:
    """One car's stay at one connector (times tz-aware UTC)."""

    charger_id: str
    connector_id: int  # 1-based connector (1.6) / EVSE (2.0.1) number
    arrival: datetime  # plug-in
    departure: datetime  # unplug
    energy_wanted_kwh: float  # what the driver wants by departure
    car_model: str
    battery_kwh: float  # usable battery capacity
    car_max_power_kw: float  # the car's limit on this connector type (AC or DC)
    soc_arrival_frac: float  # state of charge on arrival, 0..1
    sends_charging_needs: bool  # ISO 15118 car: sends NotifyEVChargingNeeds (2.0.1 only)
    id_token: str  # RFID / contract id presented at the charger
    # what the driver *said* (an app or ISO 15118; megastation.sim.sessions reads it from
    # real data): reaches the controller as ChargingNeeds (2.0.1) or an override (1.6)
    # while the true departure and energy above drive the simulated car
    stated_departure: datetime | None = None
    stated_energy_kwh: float | None = None  # total energy asked for [kWh]

    @property
    def dwell_min(self) -> float:
        return (self.departure - self.arrival).total_seconds() / 60.0


@dataclass(frozen=True)
class EVModel:
    """A car model of the market mix (``seeds/ev_models.csv``)."""

    model: str
    battery_kwh: float  # usable capacity
    ac_max_kw: float  # onboard charger limit
    dc_max_kw: float  # peak DC charging power
    share: float  # market share (normalised on load)


@dataclass(frozen=True)
class KindProfile:
    """Arrival, dwell and energy distributions for one charger kind (``[ac]``/``[dc]``)."""

    arrivals_per_connector_per_h: tuple[float, ...]  # 24 values, local hours 0..23
    weekend_factor: float = 1.0
    dwell_median_min: float = 60.0
    dwell_sigma: float = 0.4  # of ln(dwell)
    dwell_min_min: float = 10.0
    dwell_max_min: float = 720.0
    overnight_share: float = 0.0
    overnight_from_hour: int = 18
    overnight_depart_hour_mean: float = 8.0  # local hours
    overnight_depart_hour_sd: float = 1.0
    soc_arrival_alpha: float = 2.0
    soc_arrival_beta: float = 5.0
    soc_arrival_min: float = 0.05
    target_soc_min: float = 0.8
    target_soc_max: float = 1.0
    min_energy_kwh: float = 1.0
    charging_needs_share: float = 0.0
    turnover_gap_min: float = 0.0


@dataclass(frozen=True)
class FleetProfile:
    """The whole fleet: car models and one :class:`KindProfile` per charger kind."""

    models: tuple[EVModel, ...]
    kinds: dict[str, KindProfile]  # keyed "AC" / "DC"

    def kind(self, kind: str) -> KindProfile:
        return self.kinds[kind.upper()]


def read_ev_models(path: str | Path) -> tuple[EVModel, ...]:
    """Read ``model,battery_kwh,ac_max_kw,dc_max_kw,share`` rows; shares are normalised."""
    p = Path(path)
    with p.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{p}: no car models")
    models = []
    for i, r in enumerate(rows, start=2):
        try:
            m = EVModel(
                model=r["model"].strip(),
                battery_kwh=float(r["battery_kwh"]),
                ac_max_kw=float(r["ac_max_kw"]),
                dc_max_kw=float(r["dc_max_kw"]),
                share=float(r["share"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{p}: line {i}: {exc}") from None
        if min(m.battery_kwh, m.ac_max_kw, m.dc_max_kw) <= 0 or m.share < 0:
            raise ValueError(f"{p}: line {i}: sizes must be > 0 and share >= 0")
        models.append(m)
    total = sum(m.share for m in models)
    if total <= 0:
        raise ValueError(f"{p}: shares sum to 0")
    return tuple(
        EVModel(m.model, m.battery_kwh, m.ac_max_kw, m.dc_max_kw, m.share / total) for m in models
    )


def _kind_profile(data: dict, where: str) -> KindProfile:
    data = dict(data)
    rates = data.pop("arrivals_per_connector_per_h", None)
    if not isinstance(rates, list) or len(rates) != 24 or any(r < 0 for r in rates):
        raise ValueError(f"{where}.arrivals_per_connector_per_h: must be 24 numbers >= 0")
    known = set(KindProfile.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (misspelt?)")
    prof = KindProfile(arrivals_per_connector_per_h=tuple(float(r) for r in rates), **data)
    if not 0 <= prof.target_soc_min <= prof.target_soc_max <= 1:
        raise ValueError(f"{where}: need 0 <= target_soc_min <= target_soc_max <= 1")
    if not prof.dwell_min_min <= prof.dwell_median_min <= prof.dwell_max_min:
        raise ValueError(f"{where}: need dwell_min_min <= dwell_median_min <= dwell_max_min")
    return prof


def load_fleet_profile(
    path: str | Path | None = None, models_path: str | Path | None = None
) -> FleetProfile:
    """Load ``fleet.toml`` and ``ev_models.csv`` (default: the ones in ``seeds/``)."""
    p = Path(path) if path is not None else seeds_dir() / "fleet.toml"
    mp = Path(models_path) if models_path is not None else p.parent / "ev_models.csv"
    with p.open("rb") as f:
        data = tomllib.load(f)
    kinds = {}
    for key, table in data.items():
        if key.upper() not in KINDS:
            raise ValueError(f"{p}: {key}: unknown charger kind (use [ac] / [dc])")
        kinds[key.upper()] = _kind_profile(table, f"{p}: {key}")
    return FleetProfile(models=read_ev_models(mp), kinds=kinds)


def _arrival_times(
    prof: KindProfile, n_connectors: int, start: datetime, end: datetime, tz, rng
) -> list[datetime]:
    """Exact NHPP sample for a rate piecewise constant per (UTC-aligned) hour slot."""
    out: list[datetime] = []
    slot = start.replace(minute=0, second=0, microsecond=0)
    while slot < end:
        nxt = slot + timedelta(hours=1)
        lo, hi = max(slot, start), min(nxt, end)
        mid_local = (slot + timedelta(minutes=30)).astimezone(tz)
        rate_per_h = prof.arrivals_per_connector_per_h[mid_local.hour] * n_connectors
        if mid_local.weekday() >= 5:
            rate_per_h *= prof.weekend_factor
        span_s = (hi - lo).total_seconds()
        n = int(rng.poisson(rate_per_h * span_s / 3600.0))
        for off in np.sort(rng.uniform(0.0, span_s, size=n)):
            out.append(lo + timedelta(seconds=round(float(off))))
        slot = nxt
    return out


def _dwell(prof: KindProfile, arrival: datetime, tz, rng) -> timedelta:
    local = arrival.astimezone(tz)
    late = prof.overnight_share > 0 and local.hour >= prof.overnight_from_hour
    if late and rng.random() < prof.overnight_share:
        hour = rng.normal(prof.overnight_depart_hour_mean, prof.overnight_depart_hour_sd)
        hour = float(np.clip(hour, 4.0, 12.0))
        morning = (local + timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        ) + timedelta(hours=hour)
        return timedelta(seconds=round((morning - local).total_seconds()))
    minutes = prof.dwell_median_min * math.exp(rng.normal(0.0, prof.dwell_sigma))
    minutes = float(np.clip(minutes, prof.dwell_min_min, prof.dwell_max_min))
    return timedelta(seconds=round(minutes * 60.0))


def generate_visits(
    station: Station,
    start: datetime,
    end: datetime,
    seed: int,
    *,
    profile: FleetProfile | None = None,
) -> list[CarVisit]:
    """Seeded car visits arriving in ``[start, end)`` at the station's connectors.

    Departures may fall after ``end``. Visits never overlap on a connector; the
    result is sorted by arrival. Same inputs and seed -> the same list.
    """
    start, end = utc(start), utc(end)
    if end <= start:
        return []
    profile = profile or load_fleet_profile()
    tz = station.site.tz
    rng = np.random.default_rng(seed)
    shares = np.array([m.share for m in profile.models])

    connectors: dict[str, list[tuple[str, int, float]]] = {k: [] for k in KINDS}
    for ch in station.chargers:
        for cid in ch.connector_ids:
            connectors[ch.kind].append((ch.id, cid, ch.connector_power_kw))

    arrivals: list[tuple[datetime, str]] = []
    for kind in KINDS:  # fixed order: the draw sequence depends only on the seed
        if not connectors[kind] or kind not in profile.kinds:
            continue
        times = _arrival_times(profile.kinds[kind], len(connectors[kind]), start, end, tz, rng)
        arrivals.extend((t, kind) for t in times)
    arrivals.sort(key=lambda a: (a[0], a[1]))

    free_at: dict[tuple[str, int], datetime] = {
        (c, n): datetime.min.replace(tzinfo=UTC) for k in KINDS for c, n, _ in connectors[k]
    }
    visits: list[CarVisit] = []
    for arrival, kind in arrivals:
        prof = profile.kinds[kind]
        # Draw everything for this car up front so the sequence does not depend on
        # whether a connector turns out to be free.
        model = profile.models[int(rng.choice(len(profile.models), p=shares))]
        dwell = _dwell(prof, arrival, tz, rng)
        soc = float(rng.beta(prof.soc_arrival_alpha, prof.soc_arrival_beta))
        target = float(rng.uniform(prof.target_soc_min, prof.target_soc_max))
        needs = bool(rng.random() < prof.charging_needs_share)
        token = f"SIM{int(rng.integers(0, 16**8)):08X}"
        pick = float(rng.random())

        free = [(c, n) for c, n, _ in connectors[kind] if free_at[(c, n)] <= arrival]
        if not free:
            continue  # station full: the car drives on
        charger_id, connector_id = free[min(int(pick * len(free)), len(free) - 1)]
        soc = max(soc, prof.soc_arrival_min)
        target = max(target, soc)
        energy = model.battery_kwh * (target - soc)
        if energy < prof.min_energy_kwh:
            # Top the wish up to the minimum where the battery has room for it.
            energy = min(prof.min_energy_kwh, model.battery_kwh * (1.0 - soc))
        departure = arrival + dwell
        free_at[(charger_id, connector_id)] = departure + timedelta(minutes=prof.turnover_gap_min)
        visits.append(
            CarVisit(
                charger_id=charger_id,
                connector_id=connector_id,
                arrival=arrival,
                departure=departure,
                energy_wanted_kwh=round(energy, 3),
                car_model=model.model,
                battery_kwh=model.battery_kwh,
                car_max_power_kw=model.dc_max_kw if kind == "DC" else model.ac_max_kw,
                soc_arrival_frac=round(soc, 4),
                sends_charging_needs=needs,
                id_token=token,
            )
        )
    return visits
