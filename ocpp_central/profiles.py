"""Set points into OCPP charging profiles: pure functions, no I/O, no ``ocpp`` import.

The controller hands over a power schedule in kW (:class:`KwSchedule`); this module
turns it into the JSON payload of a ``SetChargingProfile`` request (camelCase, as on
the wire) for OCPP 1.6 or 2.0.1, respecting what the charger said it accepts
(:class:`ChargerCaps`, read from its configuration keys).

Rules (OCPP 1.6 §3.13 "Smart Charging"; OCPP 2.0.1 Part 2, use case K01 SetChargingProfile):

- **Units.** DC chargers get ``W`` (total power); AC chargers get ``A`` per phase with
  ``numberPhases``; when a charger allows only one unit, that unit is used.
  Limits are rounded *down* to 0.1 so a profile never exceeds the set point;
  AC currents below :data:`MIN_AC_CURRENT_A` become 0 (IEC 61851 cars do not charge
  below 6 A, so a smaller figure would be rounded up by the car).
- **Stack levels and ids.** One fixed stack level and profile id per purpose (and
  connector), so a new profile *replaces* the old one in place;
  replacements start :data:`BACKDATE_S` in the past so there is no gap.
- **Periods.** Equal neighbouring periods are merged; at most
  ``ChargingScheduleMaxPeriods`` are sent, and the profile's ``duration`` ends with
  the last period sent (the charger then falls back to its TxDefaultProfile).
- **Fail-safe.** :func:`megastation.core.schedules.failsafe_limits_kw` shares the grid import limit minus the
  base load among all chargers in proportion to their max power (battery idle, PV
  zero): with every charger at its default the site stays within its limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from megastation.core.schedules import FailSafe, KwSchedule

BACKDATE_S = 60  # replacements start this long before "now": no gap between profiles
MIN_AC_CURRENT_A = 6.0  # below this an AC limit is sent as 0 A
DEFAULT_MAX_PERIODS = 24  # when the charger does not say (ChargingScheduleMaxPeriods)

# Fixed stack levels (all <= 1 so that chargers with ChargeProfileMaxStackLevel=1 accept).
STACK_MAX = 0  # ChargePointMaxProfile / ChargingStationMaxProfile
STACK_TX_DEFAULT = 0  # TxDefaultProfile
STACK_TX = 1  # TxProfile (above the default, although Tx always wins over TxDefault)

# Fixed profile ids: a new profile of the same purpose replaces the old one.
ID_MAX = 1
ID_TX_DEFAULT = 2
ID_TX_BASE = 100  # TxProfile id = ID_TX_BASE + connector / EVSE id

PURPOSE_MAX = {"1.6": "ChargePointMaxProfile", "2.0.1": "ChargingStationMaxProfile"}


@dataclass(frozen=True)
class ChargerCaps:
    """What one charger accepts, from the station config and its configuration keys."""

    ocpp_version: str  # "1.6" or "2.0.1"
    kind: str  # "AC" or "DC"
    phases: int = 3  # AC phases in use
    voltage_v: float = 230.0  # AC phase-to-neutral voltage [V]
    allowed_units: tuple[str, ...] = ("A", "W")  # ChargingScheduleAllowedChargingRateUnit
    max_periods: int = DEFAULT_MAX_PERIODS  # ChargingScheduleMaxPeriods
    max_stack_level: int = 8  # ChargeProfileMaxStackLevel

    @property
    def unit(self) -> str:
        """The unit profiles are sent in: W for DC, A for AC, unless not allowed."""
        preferred = "W" if self.kind == "DC" else "A"
        if preferred in self.allowed_units or not self.allowed_units:
            return preferred
        return self.allowed_units[0]

    def to_limit(self, power_kw: float) -> float:
        """A power [kW] as a profile limit in :attr:`unit`, rounded down to 0.1."""
        power_kw = max(0.0, float(power_kw))
        if self.unit == "W":
            value = power_kw * 1000.0
        else:
            value = power_kw * 1000.0 / (self.voltage_v * self.phases)
            if value < MIN_AC_CURRENT_A:
                value = 0.0
        return math.floor(value * 10.0 + 1e-6) / 10.0

    def to_kw(self, limit: float) -> float:
        """A profile limit in :attr:`unit` as power [kW]."""
        if self.unit == "W":
            return limit / 1000.0
        return limit * self.voltage_v * self.phases / 1000.0

    def quantise_kw(self, power_kw: float) -> float:
        """The power [kW] a charger actually gets for a set point (after unit rounding)."""
        return self.to_kw(self.to_limit(power_kw))


def caps_from_config_keys(
    keys: Mapping[str, str], *, ocpp_version: str, kind: str, phases: int, voltage_v: float
) -> ChargerCaps:
    """Build :class:`ChargerCaps` from configuration keys (1.6 GetConfiguration names).

    Unknown or missing keys keep the defaults. 2.0.1 variables are passed under the
    1.6 names by the gateway (SmartChargingCtrlr.RateUnit, PeriodsPerSchedule, ...).
    """
    units_text = keys.get("ChargingScheduleAllowedChargingRateUnit", "")
    units = tuple(
        u
        for u in ("A", "W")
        if u in {p.strip().upper() for p in units_text.replace(";", ",").split(",")}
    ) or ("A", "W")

    def _int(name: str, default: int) -> int:
        try:
            return max(1, int(keys[name]))
        except (KeyError, ValueError, TypeError):
            return default

    return ChargerCaps(
        ocpp_version=ocpp_version,
        kind=kind,
        phases=phases,
        voltage_v=voltage_v,
        allowed_units=units,
        max_periods=_int("ChargingScheduleMaxPeriods", DEFAULT_MAX_PERIODS),
        max_stack_level=_int("ChargeProfileMaxStackLevel", 8),
    )


def ocpp_time(ts: datetime) -> str:
    """OCPP date-time: UTC, whole seconds, ``Z``."""
    return ts.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantised(caps: ChargerCaps, schedule: KwSchedule, now: datetime) -> KwSchedule:
    """What the charger will actually follow: from ``now - BACKDATE_S``, unit-rounded,
    equal periods merged, at most ``caps.max_periods`` periods."""
    start = now - timedelta(seconds=BACKDATE_S)
    starts: list[datetime] = []
    limits: list[float] = []
    for i, s in enumerate(schedule.starts):
        nxt = schedule.starts[i + 1] if i + 1 < len(schedule.starts) else schedule.end
        if nxt <= now:
            continue  # already over
        kw = caps.quantise_kw(schedule.limits_kw[i])
        if not starts and s <= now:
            s = start  # backdate the current period: no gap with the profile it replaces
        if limits and abs(limits[-1] - kw) < 1e-9:
            continue
        starts.append(s)
        limits.append(kw)
    if not starts:
        raise ValueError("schedule: ends before now")
    end = schedule.end
    if len(starts) > caps.max_periods:
        end = starts[caps.max_periods]
        starts, limits = starts[: caps.max_periods], limits[: caps.max_periods]
    if starts[0] > start:
        # the plan starts later than now: nothing allowed before it
        starts.insert(0, start)
        limits.insert(0, 0.0)
        if len(starts) > caps.max_periods:
            end = starts[caps.max_periods]
            starts, limits = starts[: caps.max_periods], limits[: caps.max_periods]
    return KwSchedule(tuple(starts), tuple(limits), end)


def _periods(caps: ChargerCaps, q: KwSchedule) -> list[dict[str, Any]]:
    periods = []
    for s, kw in zip(q.starts, q.limits_kw, strict=True):
        p: dict[str, Any] = {
            "startPeriod": round((s - q.starts[0]).total_seconds()),
            "limit": caps.to_limit(kw) if kw > 0 else 0.0,
        }
        if caps.kind == "AC":
            p["numberPhases"] = caps.phases
        periods.append(p)
    return periods


def _schedule(caps: ChargerCaps, q: KwSchedule, *, with_duration: bool) -> dict[str, Any]:
    sched: dict[str, Any] = {
        "startSchedule": ocpp_time(q.starts[0]),
        "chargingRateUnit": caps.unit,
        "chargingSchedulePeriod": _periods(caps, q),
    }
    if with_duration:
        sched["duration"] = math.ceil((q.end - q.starts[0]).total_seconds())
    if caps.ocpp_version == "2.0.1":
        sched["id"] = 1
    return sched


def _request(
    caps: ChargerCaps,
    connector_id: int,
    profile: dict[str, Any],
) -> dict[str, Any]:
    if caps.ocpp_version == "1.6":
        return {"connectorId": connector_id, "csChargingProfiles": profile}
    return {"evseId": connector_id, "chargingProfile": profile}


def _profile(
    caps: ChargerCaps,
    *,
    profile_id: int,
    stack_level: int,
    purpose: str,
    schedule: dict[str, Any],
    transaction_id: str | int | None = None,
) -> dict[str, Any]:
    stack_level = min(stack_level, caps.max_stack_level)
    if caps.ocpp_version == "1.6":
        prof: dict[str, Any] = {
            "chargingProfileId": profile_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        }
        if transaction_id is not None:
            prof["transactionId"] = int(transaction_id)
        return prof
    prof = {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [schedule],
    }
    if transaction_id is not None:
        prof["transactionId"] = str(transaction_id)
    return prof


def tx_profile(
    caps: ChargerCaps,
    *,
    connector_id: int,
    transaction_id: str | int | None,
    schedule: KwSchedule,
    now: datetime,
) -> tuple[dict[str, Any], KwSchedule]:
    """A SetChargingProfile request carrying ``schedule`` as the session's TxProfile.

    ``connector_id`` is the 1.6 connector or the 2.0.1 EVSE id. Returns the payload
    and the schedule in kW the charger will follow (for the deadband and the record).
    """
    q = quantised(caps, schedule, now)
    sched = _schedule(caps, q, with_duration=True)
    prof = _profile(
        caps,
        profile_id=ID_TX_BASE + connector_id,
        stack_level=STACK_TX,
        purpose="TxProfile",
        schedule=sched,
        transaction_id=transaction_id,
    )
    return _request(caps, connector_id, prof), q


def failsafe_profiles(caps: ChargerCaps, failsafe: FailSafe, now: datetime) -> list[dict[str, Any]]:
    """The two fail-safe SetChargingProfile requests for one charger, in order:

    the station maximum (ChargePointMaxProfile on connector 0 /
    ChargingStationMaxProfile on EVSE 0) and the TxDefaultProfile on connector/EVSE 0
    (which applies to every connector). Both start in the past and have no end.
    """
    start = now - timedelta(seconds=BACKDATE_S)
    out = []
    for kw, purpose, pid, level in (
        (failsafe.max_kw, PURPOSE_MAX[caps.ocpp_version], ID_MAX, STACK_MAX),
        (failsafe.connector_kw, "TxDefaultProfile", ID_TX_DEFAULT, STACK_TX_DEFAULT),
    ):
        q = KwSchedule((start,), (caps.quantise_kw(kw),), start + timedelta(days=1))
        sched = _schedule(caps, q, with_duration=False)
        out.append(
            _request(
                caps,
                0,
                _profile(caps, profile_id=pid, stack_level=level, purpose=purpose, schedule=sched),
            )
        )
    return out


def within_deadband(
    previous: KwSchedule | None,
    new: KwSchedule,
    now: datetime,
    *,
    deadband_kw: float,
    refresh_before_s: float,
    until: datetime | None = None,
    previous_until: datetime | None = None,
) -> bool:
    """True when ``new`` need not be sent because ``previous`` (already on the charger)
    differs from it by at most ``deadband_kw`` at every instant from ``now`` on, and
    still covers ``refresh_before_s`` seconds ahead.

    ``until`` / ``previous_until`` end the part of each schedule that follows the plan
    (the controller's lease; beyond it both fall back to the fail-safe cap): only the
    common part is compared, and ``previous`` must keep following the plan for
    ``refresh_before_s`` more seconds.
    """
    if previous is None:
        return False
    horizon = now + timedelta(seconds=refresh_before_s)
    if previous.end < min(new.end, horizon):
        return False
    if previous_until is not None and previous_until < horizon:
        return False
    stop = min(t for t in (new.end, until, previous_until) if t is not None)
    points = sorted(
        {now, *(s for s in new.starts if s > now), *(s for s in previous.starts if s > now)}
    )
    for t in points:
        if t >= stop:
            break
        a, b = previous.value_at(t), new.value_at(t)
        if a is None or b is None or abs(a - b) > deadband_kw + 1e-9:
            return False
    return True
