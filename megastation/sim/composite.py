"""The limit a charger enforces: OCPP smart-charging profiles to a composite schedule.

Pure: no I/O and no ``ocpp`` import. A charger keeps the profiles it has accepted in a
:class:`ProfileSet`; :meth:`ProfileSet.limit_kw` answers "what may this connector draw
now" and :meth:`ProfileSet.composite_schedule` answers GetCompositeSchedule.

Profiles are given as the ``ocpp`` library hands them to ``@on`` handlers (snake_case;
camelCase is accepted too): the 1.6 ``cs_charging_profiles`` dict (``charging_profile_id``,
one ``charging_schedule``) or the 2.0.1 ``charging_profile`` dict (``id``, a list of
``charging_schedule``; the first one is followed).

Rules (OCPP 1.6 §3.13, 2.0.1 K01-K08):

- ChargePointMaxProfile / ChargingStationMaxProfile only on connector (EVSE) 0; it caps
  the whole charger.
- TxDefaultProfile on connector 0 applies to every connector; one on a specific
  connector overrides the connector-0 default there.
- TxProfile only on a connector with an active transaction (and that transaction's id,
  when the profile names one); it wins over TxDefaultProfile whatever the stack levels,
  and is dropped when the transaction ends.
- Within one purpose the highest stackLevel *in force* wins. In force = inside
  ``[valid_from, valid_to)``, after the schedule's start, before ``start + duration``
  and past the first period's ``start_period``; otherwise the next lower profile (or
  purpose) applies. A new profile with the id, or the connector + stackLevel + purpose,
  of an installed one replaces it.
- Schedule start: Absolute = ``start_schedule`` (else ``valid_from``, else the time the
  profile was received); Relative = transaction start (else the time received);
  Recurring Daily/Weekly = ``start_schedule`` plus whole days/weeks.
- Units: ``W`` is total power; ``A`` is per phase, times ``number_phases`` (default 3,
  never more than the charger's phases) times the phase voltage.
- Composite = min(max profile, TxProfile or TxDefaultProfile, hardware max); with no
  profile the hardware max applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_PURPOSES = ("ChargePointMaxProfile", "ChargingStationMaxProfile")
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
_RECURRENCE = {"Daily": timedelta(days=1), "Weekly": timedelta(days=7)}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _snake_keys(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {_snake(k): _snake_keys(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_snake_keys(v) for v in obj]
    return obj


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        ts = value
    else:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    start_s: float  # start_period: seconds from the schedule start
    limit: float  # in the schedule's unit (W or A per phase)
    number_phases: int | None = None


@dataclass(frozen=True)
class Schedule:
    unit: str  # "W" or "A"
    periods: tuple[Period, ...]  # sorted by start_s
    start: datetime | None = None  # start_schedule
    duration_s: float | None = None


@dataclass(frozen=True)
class Profile:
    """One installed charging profile, normalised from 1.6 or 2.0.1."""

    id: int
    connector_id: int  # 0 = whole charger
    stack_level: int
    purpose: str
    kind: str  # Absolute | Relative | Recurring
    schedule: Schedule
    recurrency: str | None = None  # Daily | Weekly
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None
    received_at: datetime | None = None

    @property
    def is_max(self) -> bool:
        return self.purpose in MAX_PURPOSES


def parse_profile(
    connector_id: int, profile: Mapping[str, Any], *, received_at: datetime | None = None
) -> Profile:
    """Normalise a 1.6 ``cs_charging_profiles`` or 2.0.1 ``charging_profile`` dict."""
    p = _snake_keys(profile)
    sched = p["charging_schedule"]
    if isinstance(sched, list):  # 2.0.1: a list of up to 3 schedules
        sched = sched[0]
    periods = tuple(
        sorted(
            (
                Period(
                    start_s=float(x["start_period"]),
                    limit=float(x["limit"]),
                    number_phases=x.get("number_phases"),
                )
                for x in sched["charging_schedule_period"]
            ),
            key=lambda q: q.start_s,
        )
    )
    tx = p.get("transaction_id")
    return Profile(
        id=int(p["charging_profile_id"] if "charging_profile_id" in p else p["id"]),
        connector_id=int(connector_id),
        stack_level=int(p["stack_level"]),
        purpose=str(p["charging_profile_purpose"]),
        kind=str(p["charging_profile_kind"]),
        schedule=Schedule(
            unit=str(sched["charging_rate_unit"]),
            periods=periods,
            start=_time(sched.get("start_schedule")),
            duration_s=float(sched["duration"]) if sched.get("duration") is not None else None,
        ),
        recurrency=p.get("recurrency_kind"),
        valid_from=_time(p.get("valid_from")),
        valid_to=_time(p.get("valid_to")),
        transaction_id=str(tx) if tx is not None else None,
        received_at=received_at,
    )


@dataclass(frozen=True)
class Electrical:
    """How a charger turns profile limits into power."""

    hardware_max_kw: float  # per connector
    phases: int = 3  # AC phases wired (DC: irrelevant)
    voltage_v: float = 230.0  # AC phase-to-neutral voltage [V]

    def to_kw(self, limit: float, unit: str, number_phases: int | None) -> float:
        if unit.upper() == "W":
            return limit / 1000.0
        n = min(number_phases or 3, self.phases)
        return limit * n * self.voltage_v / 1000.0

    def from_kw(self, power_kw: float, unit: str) -> float:
        if unit.upper() == "W":
            return power_kw * 1000.0
        return power_kw * 1000.0 / (self.phases * self.voltage_v)


def _schedule_start(p: Profile, tx_start: datetime | None) -> datetime | None:
    if p.kind == "Relative":
        return tx_start or p.received_at
    return p.schedule.start or p.valid_from or p.received_at


def _offset_s(p: Profile, now: datetime, tx_start: datetime | None) -> float | None:
    """Seconds since the schedule start in force at ``now``; None when not started."""
    start = _schedule_start(p, tx_start)
    if start is None:
        return 0.0
    if p.kind == "Recurring" and p.recurrency in _RECURRENCE:
        every = _RECURRENCE[p.recurrency].total_seconds()
        return (now - start).total_seconds() % every
    return (now - start).total_seconds()


def profile_value(
    p: Profile, now: datetime, elec: Electrical, tx_start: datetime | None = None
) -> float | None:
    """The limit [kW] profile ``p`` sets at ``now``, or None when it is not in force."""
    if p.valid_from is not None and now < p.valid_from:
        return None
    if p.valid_to is not None and now >= p.valid_to:
        return None
    off = _offset_s(p, now, tx_start)
    if off is None or off < 0:
        return None
    if p.schedule.duration_s is not None and off >= p.schedule.duration_s:
        return None
    current = None
    for period in p.schedule.periods:
        if period.start_s <= off + 1e-9:
            current = period
        else:
            break
    if current is None:
        return None
    return elec.to_kw(current.limit, p.schedule.unit, current.number_phases)


def _top(
    profiles: Iterable[Profile], now: datetime, elec: Electrical, tx_start: datetime | None
) -> float | None:
    """The value of the highest-stack profile in force, or None."""
    for p in sorted(profiles, key=lambda q: -q.stack_level):
        v = profile_value(p, now, elec, tx_start)
        if v is not None:
            return v
    return None


def composite_limit_kw(
    profiles: Iterable[Profile],
    connector_id: int,
    now: datetime,
    elec: Electrical,
    *,
    transaction_id: str | None = None,
    transaction_start: datetime | None = None,
    charger_max_kw: float | None = None,
) -> float:
    """The limit [kW] in force on ``connector_id`` at ``now`` (0 = the whole charger).

    ``transaction_id`` is the connector's active transaction (None: no transaction).
    For connector 0 the result is min(max profile, ``charger_max_kw`` or hardware max).
    """
    profiles = list(profiles)
    max_kw = _top((p for p in profiles if p.is_max and p.connector_id == 0), now, elec, None)
    if connector_id == 0:
        hw = charger_max_kw if charger_max_kw is not None else elec.hardware_max_kw
        return max(0.0, min(hw, max_kw if max_kw is not None else hw))
    tx_kw = None
    if transaction_id is not None:
        tx_kw = _top(
            (
                p
                for p in profiles
                if p.purpose == TX
                and p.connector_id == connector_id
                and (p.transaction_id is None or p.transaction_id == str(transaction_id))
            ),
            now,
            elec,
            transaction_start,
        )
    if tx_kw is None:
        defaults = [p for p in profiles if p.purpose == TX_DEFAULT]
        tx_kw = _top(
            (p for p in defaults if p.connector_id == connector_id), now, elec, transaction_start
        )
        if tx_kw is None:
            tx_kw = _top((p for p in defaults if p.connector_id == 0), now, elec, transaction_start)
    limit = elec.hardware_max_kw
    for v in (max_kw, tx_kw):
        if v is not None:
            limit = min(limit, v)
    return max(0.0, limit)


@dataclass
class ProfileSet:
    """The charging profiles one charger has accepted, with the install/clear rules."""

    elec: Electrical
    charger_max_kw: float | None = None  # whole-charger hardware max (connector 0)
    max_stack_level: int = 8  # ChargeProfileMaxStackLevel
    max_periods: int = 24  # ChargingScheduleMaxPeriods
    allowed_units: tuple[str, ...] = ("A", "W")  # ChargingScheduleAllowedChargingRateUnit
    profiles: list[Profile] = field(default_factory=list)

    def install(
        self,
        connector_id: int,
        profile: Mapping[str, Any] | Profile,
        now: datetime,
        *,
        transaction_id: str | None = None,
    ) -> str:
        """Install a profile; ``transaction_id`` = the connector's active one (or None).

        Returns ``"Accepted"`` or ``"Rejected"`` (the SetChargingProfile status).
        """
        try:
            p = (
                profile
                if isinstance(profile, Profile)
                else parse_profile(connector_id, profile, received_at=now)
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return "Rejected"
        if p.received_at is None:
            p = replace(p, received_at=now)
        if p.is_max and connector_id != 0:
            return "Rejected"
        if p.purpose == TX:
            if connector_id == 0 or transaction_id is None:
                return "Rejected"
            if p.transaction_id is not None and p.transaction_id != str(transaction_id):
                return "Rejected"
            if p.transaction_id is None:
                p = replace(p, transaction_id=str(transaction_id))
        if not 0 <= p.stack_level <= self.max_stack_level:
            return "Rejected"
        if not p.schedule.periods or len(p.schedule.periods) > self.max_periods:
            return "Rejected"
        if p.schedule.unit not in self.allowed_units:
            return "Rejected"
        if p.kind == "Recurring" and p.recurrency not in _RECURRENCE:
            return "Rejected"
        self.profiles = [
            q
            for q in self.profiles
            if q.id != p.id
            and not (
                q.connector_id == p.connector_id
                and q.stack_level == p.stack_level
                and q.purpose == p.purpose
            )
        ]
        self.profiles.append(p)
        return "Accepted"

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> bool:
        """Remove matching profiles (by id alone when an id is given); True if any went."""

        def match(p: Profile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        before = len(self.profiles)
        self.profiles = [p for p in self.profiles if not match(p)]
        return len(self.profiles) < before

    def end_transaction(self, connector_id: int) -> None:
        """Drop the TxProfiles of a connector whose transaction ended."""
        self.profiles = [
            p for p in self.profiles if not (p.purpose == TX and p.connector_id == connector_id)
        ]

    def limit_kw(
        self,
        connector_id: int,
        now: datetime,
        *,
        transaction_id: str | None = None,
        transaction_start: datetime | None = None,
    ) -> float:
        """The limit [kW] in force now; see :func:`composite_limit_kw`."""
        return composite_limit_kw(
            self.profiles,
            connector_id,
            now,
            self.elec,
            transaction_id=transaction_id,
            transaction_start=transaction_start,
            charger_max_kw=self.charger_max_kw,
        )

    def _breakpoints(
        self, start: datetime, end: datetime, tx_start: datetime | None
    ) -> list[datetime]:
        points = {start}
        for p in self.profiles:
            for t in (p.valid_from, p.valid_to):
                if t is not None:
                    points.add(t)
            s0 = _schedule_start(p, tx_start)
            if s0 is None:
                continue
            offsets = [q.start_s for q in p.schedule.periods]
            if p.schedule.duration_s is not None:
                offsets.append(p.schedule.duration_s)
            if p.kind == "Recurring" and p.recurrency in _RECURRENCE:
                every = _RECURRENCE[p.recurrency]
                n0 = (start - s0) // every
                bases = [s0 + every * (n0 + k) for k in range(int((end - start) / every) + 2)]
            else:
                bases = [s0]
            for b in bases:
                points.update(b + timedelta(seconds=o) for o in offsets)
        return sorted(t for t in points if start <= t < end)

    def composite_schedule(
        self,
        connector_id: int,
        now: datetime,
        duration_s: int,
        unit: str | None = None,
        *,
        transaction_id: str | None = None,
        transaction_start: datetime | None = None,
    ) -> dict[str, Any]:
        """GetCompositeSchedule's answer from ``now`` for ``duration_s`` seconds.

        Returns ``{"start": now, "duration_s", "unit", "periods": [(start_s, limit)]}``,
        limits in ``unit`` (default W for DC-style single unit, else the first allowed)
        rounded to 0.1, equal neighbours merged.
        """
        unit = unit or ("W" if "W" in self.allowed_units else self.allowed_units[0])
        end = now + timedelta(seconds=duration_s)
        periods: list[tuple[int, float]] = []
        for t in self._breakpoints(now, end, transaction_start):
            kw = self.limit_kw(
                connector_id, t, transaction_id=transaction_id, transaction_start=transaction_start
            )
            limit = round(self.elec.from_kw(kw, unit), 1)
            if not periods or periods[-1][1] != limit:
                periods.append((round((t - now).total_seconds()), limit))
        return {"start": now, "duration_s": duration_s, "unit": unit, "periods": periods}
