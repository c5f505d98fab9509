"""Set points become valid OCPP charging profiles (checked against the ocpp library's schemas)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from ocpp.messages import get_validator

from megastation.core.schedules import KwSchedule, failsafe_limits_kw
from ocpp_central.profiles import (
    BACKDATE_S,
    ChargerCaps,
    caps_from_config_keys,
    failsafe_profiles,
    tx_profile,
    within_deadband,
)
from tests.conftest import T0


def validate(payload: dict, version: str) -> None:
    # As the ocpp library does on the wire: floats parsed as Decimal (1.6 multipleOf 0.1).
    v = get_validator(2, "SetChargingProfile", version, parse_float=Decimal)
    v.validate(json.loads(json.dumps(payload), parse_float=Decimal))


DC16 = ChargerCaps("1.6", "DC")
AC16 = ChargerCaps("1.6", "AC", phases=1, voltage_v=220.0)
DC201 = ChargerCaps("2.0.1", "DC")
AC201 = ChargerCaps("2.0.1", "AC", phases=3, voltage_v=230.0)


@pytest.mark.parametrize("caps", [DC16, AC16, DC201, AC201], ids=["dc16", "ac16", "dc201", "ac201"])
def test_tx_profile_is_schema_valid_and_carries_the_horizon(caps):
    sched = KwSchedule.regular(T0, 900, [50.0, 33.333, 7.0, 0.0] * 6)
    payload, q = tx_profile(caps, connector_id=1, transaction_id=42, schedule=sched, now=T0)
    validate(payload, caps.ocpp_version)
    prof = (
        payload["csChargingProfiles"] if caps.ocpp_version == "1.6" else payload["chargingProfile"]
    )
    cs = prof["chargingSchedule"] if caps.ocpp_version == "1.6" else prof["chargingSchedule"][0]
    assert prof["chargingProfilePurpose"] == "TxProfile"
    assert cs["chargingRateUnit"] == ("W" if caps.kind == "DC" else "A")
    periods = cs["chargingSchedulePeriod"]
    assert periods[0]["startPeriod"] == 0
    # starts in the past, covers the whole plan
    assert cs["startSchedule"] == (T0 - timedelta(seconds=BACKDATE_S)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert cs["duration"] == 24 * 900 + BACKDATE_S
    assert periods[1]["startPeriod"] == 900 + BACKDATE_S
    for p in periods:
        assert p["limit"] * 10 == int(p["limit"] * 10)  # one decimal
    if caps.kind == "AC":
        assert all(p["numberPhases"] == caps.phases for p in periods)
        # 7 kW on one phase at 220 V = 31.8 A, rounded down
        assert 31.8 in [p["limit"] for p in periods] or caps.phases == 3
    else:
        assert periods[1]["limit"] == 33333.0
    assert max(q.limits_kw) <= 50.0


def test_ac_only_w_charger_gets_watts_and_max_periods_respected():
    caps = caps_from_config_keys(
        {"ChargingScheduleAllowedChargingRateUnit": "Power", "ChargingScheduleMaxPeriods": "5"},
        ocpp_version="1.6",
        kind="AC",
        phases=3,
        voltage_v=230.0,
    )
    # "Power" is not a unit name we know: both allowed, AC keeps amps.
    assert caps.unit == "A"
    caps = caps_from_config_keys(
        {"ChargingScheduleAllowedChargingRateUnit": "W", "ChargingScheduleMaxPeriods": "5"},
        ocpp_version="1.6",
        kind="AC",
        phases=3,
        voltage_v=230.0,
    )
    assert caps.unit == "W"
    sched = KwSchedule.regular(T0, 900, [float(i) for i in range(1, 20)])
    payload, _q = tx_profile(caps, connector_id=2, transaction_id=1, schedule=sched, now=T0)
    validate(payload, "1.6")
    periods = payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    assert len(periods) == 5
    # the profile ends with the last period sent; the charger then falls back to TxDefault
    assert (
        payload["csChargingProfiles"]["chargingSchedule"]["duration"] == 4 * 900 + BACKDATE_S + 900
    )


def test_small_ac_current_becomes_zero_and_equal_periods_merge():
    sched = KwSchedule.regular(T0, 900, [1.0, 1.0, 7.0, 7.0])
    payload, _q = tx_profile(AC16, connector_id=1, transaction_id=1, schedule=sched, now=T0)
    periods = payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [0.0, 31.8]


def test_failsafe_profiles_keep_site_within_limit(station):
    limits = failsafe_limits_kw(
        station.chargers, station.site.grid_import_limit_kw, station.site.base_load_kw
    )
    total = sum(f.charger_kw for f in limits.values())
    assert total <= station.site.grid_import_limit_kw - station.site.base_load_kw + 1e-9
    assert total > 0.9 * (station.site.grid_import_limit_kw - station.site.base_load_kw)
    for c in station.chargers:
        version = c.ocpp_version
        caps = ChargerCaps(version, c.kind, c.phases, c.voltage_v)
        reqs = failsafe_profiles(caps, limits[c.id], T0)
        for r in reqs:
            validate(r, version)
        if version == "1.6":
            assert reqs[0]["connectorId"] == 0
            assert (
                reqs[0]["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
            )
            assert reqs[1]["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
        else:
            assert reqs[0]["evseId"] == 0
            assert (
                reqs[0]["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
            )
        # what the default really gives, after rounding, never exceeds the share
        assert caps.quantise_kw(limits[c.id].connector_kw) <= limits[c.id].connector_kw + 1e-9


def test_deadband_skips_small_changes_and_refreshes_old_profiles():
    a = KwSchedule.regular(T0, 900, [50.0] * 8)
    b = KwSchedule.regular(T0, 900, [50.5] * 8)
    c = KwSchedule.regular(T0, 900, [50.0] * 4 + [20.0] * 4)
    assert within_deadband(a, b, T0, deadband_kw=1.0, refresh_before_s=600)
    assert not within_deadband(a, c, T0, deadband_kw=1.0, refresh_before_s=600)
    assert not within_deadband(None, a, T0, deadband_kw=1.0, refresh_before_s=600)
    later = T0 + timedelta(hours=1, minutes=55)
    long = KwSchedule.regular(later - timedelta(minutes=5), 900, [50.0] * 8)
    assert not within_deadband(a, long, later, deadband_kw=1.0, refresh_before_s=600)


def test_capped_after_splits_a_period():
    a = KwSchedule.regular(T0, 900, [50.0, 50.0])
    capped = a.capped_after(T0 + timedelta(seconds=300), 10.0)
    assert capped.value_at(T0) == 50.0
    assert capped.value_at(T0 + timedelta(seconds=301)) == 10.0
    assert capped.value_at(T0 + timedelta(seconds=1000)) == 10.0
    assert KwSchedule.from_json(capped.to_json()) == capped
