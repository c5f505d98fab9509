"""Composite schedules from hand-made OCPP 1.6 and 2.0.1 charging profiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from megastation.sim.composite import Electrical, ProfileSet, parse_profile, profile_value

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
DC = Electrical(hardware_max_kw=200.0)
AC = Electrical(hardware_max_kw=7.0, phases=1, voltage_v=220.0)


def p16(pid, purpose, stack, periods, *, unit="W", kind="Absolute", start=T0, **extra):
    """A 1.6 cs_charging_profiles dict as the ocpp library hands it over."""
    sched = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [
            {"start_period": s, "limit": lim, **({"number_phases": n} if n else {})}
            for s, lim, n in (x if len(x) == 3 else (*x, None) for x in periods)
        ],
    }
    if start is not None:
        sched["start_schedule"] = start.isoformat()
    if "duration" in extra:
        sched["duration"] = extra.pop("duration")
    return {
        "charging_profile_id": pid,
        "stack_level": stack,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "charging_schedule": sched,
        **extra,
    }


def test_no_profile_means_hardware_max():
    ps = ProfileSet(DC)
    assert ps.limit_kw(1, T0, transaction_id="1") == 200.0


def test_tx_profile_periods_by_start_period_in_watts():
    ps = ProfileSet(DC)
    prof = p16(5, "TxProfile", 1, [(0, 50000.0), (600, 80000.0), (1200, 20000.0)])
    assert ps.install(1, prof, T0, transaction_id="7") == "Accepted"
    at = lambda s: ps.limit_kw(1, T0 + timedelta(seconds=s), transaction_id="7")  # noqa: E731
    assert at(0) == 50.0 and at(599) == 50.0 and at(600) == 80.0 and at(5000) == 20.0


def test_tx_profile_needs_a_transaction_and_a_real_connector():
    ps = ProfileSet(DC)
    prof = p16(5, "TxProfile", 1, [(0, 50000.0)])
    assert ps.install(1, prof, T0) == "Rejected"
    assert ps.install(0, prof, T0, transaction_id="7") == "Rejected"
    assert ps.install(1, {**prof, "transaction_id": 8}, T0, transaction_id="7") == "Rejected"
    assert ps.install(1, prof, T0, transaction_id="7") == "Accepted"
    # Only for its transaction; after it ends the profile is gone.
    assert ps.limit_kw(1, T0, transaction_id="9") == 200.0
    ps.end_transaction(1)
    assert ps.limit_kw(1, T0, transaction_id="7") == 200.0


def test_max_profile_only_on_connector_zero_and_composite_is_the_min():
    ps = ProfileSet(DC)
    cpmax = p16(1, "ChargePointMaxProfile", 0, [(0, 60000.0)])
    assert ps.install(1, cpmax, T0) == "Rejected"
    assert ps.install(0, cpmax, T0) == "Accepted"
    assert ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 100000.0)]), T0) == "Accepted"
    assert ps.limit_kw(1, T0, transaction_id="1") == 60.0  # max profile lower
    ps.install(1, p16(3, "TxProfile", 1, [(0, 30000.0)]), T0, transaction_id="1")
    assert ps.limit_kw(1, T0, transaction_id="1") == 30.0  # tx lower
    assert ps.limit_kw(0, T0) == 60.0  # the charger as a whole


def test_tx_default_on_zero_applies_to_all_connectors_and_specific_overrides():
    ps = ProfileSet(AC, max_stack_level=3)
    ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 16.0, 1)], unit="A"), T0)
    assert ps.limit_kw(1, T0, transaction_id="1") == pytest.approx(16 * 220 / 1000)
    assert ps.limit_kw(2, T0, transaction_id="2") == pytest.approx(16 * 220 / 1000)
    ps.install(2, p16(4, "TxDefaultProfile", 0, [(0, 10.0, 1)], unit="A"), T0)
    assert ps.limit_kw(2, T0, transaction_id="2") == pytest.approx(10 * 220 / 1000)
    assert ps.limit_kw(1, T0, transaction_id="1") == pytest.approx(16 * 220 / 1000)


def test_tx_profile_wins_over_default_even_at_a_lower_stack_level():
    ps = ProfileSet(DC)
    ps.install(0, p16(2, "TxDefaultProfile", 5, [(0, 10000.0)]), T0)
    ps.install(1, p16(3, "TxProfile", 1, [(0, 90000.0)]), T0, transaction_id="1")
    assert ps.limit_kw(1, T0, transaction_id="1") == 90.0


def test_highest_stack_level_in_force_wins_and_falls_back_when_it_ends():
    ps = ProfileSet(DC)
    ps.install(1, p16(3, "TxProfile", 1, [(0, 90000.0)]), T0, transaction_id="1")
    ps.install(1, p16(4, "TxProfile", 2, [(0, 40000.0)], duration=900), T0, transaction_id="1")
    assert ps.limit_kw(1, T0 + timedelta(minutes=10), transaction_id="1") == 40.0
    assert ps.limit_kw(1, T0 + timedelta(minutes=20), transaction_id="1") == 90.0
    # A Tx profile whose duration ended falls back to the TxDefault profile.
    ps2 = ProfileSet(DC)
    ps2.install(0, p16(2, "TxDefaultProfile", 0, [(0, 25000.0)]), T0)
    ps2.install(1, p16(3, "TxProfile", 1, [(0, 90000.0)], duration=600), T0, transaction_id="1")
    assert ps2.limit_kw(1, T0 + timedelta(minutes=5), transaction_id="1") == 90.0
    assert ps2.limit_kw(1, T0 + timedelta(minutes=11), transaction_id="1") == 25.0


def test_same_stack_and_purpose_replaces_and_same_id_replaces():
    ps = ProfileSet(DC)
    ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 25000.0)]), T0)
    ps.install(0, p16(9, "TxDefaultProfile", 0, [(0, 35000.0)]), T0)
    assert len(ps.profiles) == 1 and ps.limit_kw(1, T0, transaction_id="1") == 35.0
    ps.install(0, p16(9, "TxDefaultProfile", 1, [(0, 45000.0)]), T0)
    assert len(ps.profiles) == 1 and ps.limit_kw(1, T0, transaction_id="1") == 45.0


def test_valid_from_and_valid_to():
    ps = ProfileSet(DC)
    ps.install(
        0,
        p16(
            2,
            "TxDefaultProfile",
            0,
            [(0, 25000.0)],
            valid_from=(T0 + timedelta(hours=1)).isoformat(),
            valid_to=(T0 + timedelta(hours=2)).isoformat(),
        ),
        T0,
    )
    at = lambda h: ps.limit_kw(1, T0 + timedelta(hours=h), transaction_id="1")  # noqa: E731
    assert at(0.5) == 200.0 and at(1.5) == 25.0 and at(2.0) == 200.0


def test_relative_profile_starts_with_the_transaction():
    ps = ProfileSet(DC)
    prof = p16(3, "TxProfile", 1, [(0, 10000.0), (1800, 50000.0)], kind="Relative", start=None)
    tx_start = T0 - timedelta(minutes=20)
    ps.install(1, prof, T0, transaction_id="1")
    kw = lambda t: ps.limit_kw(1, t, transaction_id="1", transaction_start=tx_start)  # noqa: E731
    assert kw(T0) == 10.0
    assert kw(T0 + timedelta(minutes=10)) == 50.0


def test_recurring_daily_profile_repeats_every_day():
    ps = ProfileSet(DC)
    midnight = T0  # the anchor
    prof = p16(
        1,
        "ChargePointMaxProfile",
        0,
        [(0, 100000.0), (8 * 3600, 50000.0), (20 * 3600, 100000.0)],
        kind="Recurring",
        start=midnight,
        recurrency_kind="Daily",
    )
    assert ps.install(0, prof, T0) == "Accepted"
    for day in range(3):
        base = midnight + timedelta(days=day)
        assert ps.limit_kw(1, base + timedelta(hours=2), transaction_id="1") == 100.0
        assert ps.limit_kw(1, base + timedelta(hours=12), transaction_id="1") == 50.0
        assert ps.limit_kw(1, base + timedelta(hours=21), transaction_id="1") == 100.0


def test_amps_times_phases_times_voltage_with_default_three_phases():
    three = Electrical(hardware_max_kw=22.0, phases=3, voltage_v=230.0)
    p = parse_profile(0, p16(1, "TxDefaultProfile", 0, [(0, 16.0)], unit="A"))
    assert profile_value(p, T0, three) == pytest.approx(16 * 3 * 230 / 1000)
    # A single-phase charger cannot draw on three phases.
    assert profile_value(p, T0, AC) == pytest.approx(16 * 220 / 1000)
    p1 = parse_profile(0, p16(1, "TxDefaultProfile", 0, [(0, 16.0, 1)], unit="A"))
    assert profile_value(p1, T0, three) == pytest.approx(16 * 230 / 1000)


def test_v201_profile_shape_and_camel_case():
    ps = ProfileSet(DC)
    prof = {
        "id": 11,
        "stackLevel": 0,
        "chargingProfilePurpose": "ChargingStationMaxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "startSchedule": "2026-06-15T00:00:00Z",
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 120000.0}],
            }
        ],
    }
    assert ps.install(0, prof, T0) == "Accepted"
    assert ps.limit_kw(1, T0, transaction_id="abc") == 120.0
    tx = {
        "id": 12,
        "stack_level": 1,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Absolute",
        "transaction_id": "abc",
        "charging_schedule": [
            {
                "id": 2,
                "start_schedule": "2026-06-15T00:00:00Z",
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 70000.0}],
            }
        ],
    }
    assert ps.install(1, tx, T0, transaction_id="abc") == "Accepted"
    assert ps.limit_kw(1, T0, transaction_id="abc") == 70.0


def test_checks_stack_level_periods_and_units():
    ps = ProfileSet(DC, max_stack_level=1, max_periods=2, allowed_units=("W",))
    assert ps.install(0, p16(2, "TxDefaultProfile", 2, [(0, 1.0)]), T0) == "Rejected"
    assert (
        ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 1.0), (1, 2.0), (2, 3.0)]), T0)
        == "Rejected"
    )
    assert ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 16.0)], unit="A"), T0) == "Rejected"
    assert ps.install(0, {"garbage": 1}, T0) == "Rejected"


def test_clear_by_id_or_criteria():
    ps = ProfileSet(DC)
    ps.install(0, p16(1, "ChargePointMaxProfile", 0, [(0, 60000.0)]), T0)
    ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 25000.0)]), T0)
    assert ps.clear(profile_id=99) is False
    assert ps.clear(purpose="TxDefaultProfile") is True
    assert ps.limit_kw(1, T0, transaction_id="1") == 60.0
    assert ps.clear(profile_id=1) is True
    assert ps.limit_kw(1, T0, transaction_id="1") == 200.0


def test_composite_schedule_lists_the_changes():
    ps = ProfileSet(DC)
    ps.install(0, p16(2, "TxDefaultProfile", 0, [(0, 100000.0)]), T0)
    ps.install(
        1,
        p16(3, "TxProfile", 1, [(0, 50000.0), (600, 80000.0)], duration=1800),
        T0,
        transaction_id="1",
    )
    out = ps.composite_schedule(1, T0 + timedelta(seconds=300), 3600, "W", transaction_id="1")
    assert out["unit"] == "W"
    assert out["periods"] == [(0, 50000.0), (300, 80000.0), (1500, 100000.0)]
    amps = ProfileSet(AC).composite_schedule(1, T0, 600, "A")
    assert amps["periods"] == [(0, round(7000 / 220, 1))]
