"""The OCPP profile builder on values where each rule shows: fail-safe caps that bind,
stack levels the charger allows, one TxProfile per connector, three-phase AC, a plan
that starts later. Payloads are read back by the independent charger model
(:mod:`megastation.sim.composite`), which applies OCPP 1.6's install and replace rules."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from megastation.core.config import Charger
from megastation.core.schedules import KwSchedule, failsafe_limits_kw
from megastation.sim.composite import Electrical, ProfileSet
from ocpp_central.profiles import (
    BACKDATE_S,
    ChargerCaps,
    caps_from_config_keys,
    failsafe_profiles,
    quantised,
    tx_profile,
)
from tests.conftest import T0

AC3 = ChargerCaps("1.6", "AC", phases=3, voltage_v=230.0)
DC16 = ChargerCaps("1.6", "DC")
DC201 = ChargerCaps("2.0.1", "DC")


def _profile(payload: dict) -> dict:
    return payload.get("csChargingProfiles") or payload["chargingProfile"]


def _sched(payload: dict) -> dict:
    s = _profile(payload)["chargingSchedule"]
    return s[0] if isinstance(s, list) else s


# --------------------------------------------------------------------------- fail-safe caps


def test_charger_share_is_capped_at_its_own_maximum():
    # 1,000 kW grid, 40 kW base load: 960 kW for 150 kW of chargers. Pro rata would give
    # 320 and 640 kW; each charger gets at most what it can draw.
    chargers = [Charger("A", "DC", 50.0), Charger("B", "DC", 100.0)]
    fs = failsafe_limits_kw(chargers, 1000.0, 40.0)
    assert fs["A"].charger_kw == pytest.approx(50.0)
    assert fs["B"].charger_kw == pytest.approx(100.0)
    assert fs["A"].connector_kw == pytest.approx(50.0)
    # Two connectors without a connector maximum: the charger's 100 kW split, 50 each
    # (uncapped, each connector could take the charger's whole 100 kW).
    fs = failsafe_limits_kw([Charger("C", "DC", 100.0, connectors=2)], 1000.0, 0.0)
    assert (fs["C"].charger_kw, fs["C"].connector_kw) == pytest.approx((100.0, 50.0))


def test_connector_share_is_capped_at_the_connector_maximum():
    # A 100 kW charger with two 40 kW connectors on a large grid: 40 per connector, 80 in all.
    chargers = [Charger("A", "DC", 100.0, connectors=2, connector_max_power_kw=40.0)]
    fs = failsafe_limits_kw(chargers, 1000.0, 0.0)
    assert fs["A"].connector_kw == pytest.approx(40.0)
    assert fs["A"].charger_kw == pytest.approx(80.0)
    assert fs["A"].max_kw == pytest.approx(100.0)


def test_grid_limit_minus_base_load_is_shared_pro_rata_and_split_per_connector():
    # 250 kW grid, 50 kW base: 200 kW for 100 + 300 kW of chargers -> 50 and 150 kW;
    # the 300 kW charger has 3 connectors -> 50 kW each.
    chargers = [Charger("A", "DC", 100.0), Charger("B", "DC", 300.0, connectors=3)]
    fs = failsafe_limits_kw(chargers, 250.0, 50.0)
    assert fs["A"].charger_kw == pytest.approx(50.0)
    assert fs["B"].charger_kw == pytest.approx(150.0)
    assert fs["B"].connector_kw == pytest.approx(50.0)
    # The station maximum: no charger above what the grid can give (200), nor its own max.
    assert fs["A"].max_kw == pytest.approx(100.0)
    assert fs["B"].max_kw == pytest.approx(200.0)


def test_base_load_above_the_grid_limit_leaves_nothing():
    fs = failsafe_limits_kw([Charger("A", "AC", 22.0)], 10.0, 15.0)
    assert fs["A"] == type(fs["A"])(charger_kw=0.0, connector_kw=0.0, max_kw=0.0)


def test_failsafe_profiles_carry_the_binding_caps():
    # A three-phase AC charger (2 x 11 kW) on a 15 kW grid with 3 kW base load:
    # station max 12 kW, default 6 kW per connector -> 17.3 A and 8.6 A per phase.
    c = Charger("A", "AC", 22.0, connectors=2, connector_max_power_kw=11.0)
    fs = failsafe_limits_kw([c], 15.0, 3.0)["A"]
    assert (fs.max_kw, fs.connector_kw, fs.charger_kw) == pytest.approx((12.0, 6.0, 12.0))
    mx, default = failsafe_profiles(AC3, fs, T0)
    assert mx["connectorId"] == 0 and default["connectorId"] == 0
    for req, limit_a, purpose in (
        (mx, 17.3, "ChargePointMaxProfile"),
        (default, 8.6, "TxDefaultProfile"),
    ):
        prof = _profile(req)
        assert prof["chargingProfilePurpose"] == purpose
        period = _sched(req)["chargingSchedulePeriod"]
        assert period == [{"startPeriod": 0, "limit": limit_a, "numberPhases": 3}]
        assert "duration" not in _sched(req)
        assert _sched(req)["startSchedule"] == "2026-06-14T23:59:00Z"
    # Read by a charger: each connector draws at most 6 kW, the charger at most 12.
    ps = ProfileSet(Electrical(hardware_max_kw=11.0, phases=3), charger_max_kw=22.0)
    for req in (mx, default):
        assert ps.install(0, _profile(req), T0) == "Accepted"
    assert ps.limit_kw(1, T0, transaction_id="7") == pytest.approx(8.6 * 690 / 1000)
    assert ps.limit_kw(0, T0) == pytest.approx(17.3 * 690 / 1000)
    # 2.0.1 names the station maximum differently and uses EVSE 0.
    mx201, _ = failsafe_profiles(DC201, fs, T0)
    assert mx201["evseId"] == 0
    assert mx201["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    assert _sched(mx201)["chargingSchedulePeriod"][0]["limit"] == 12000.0


def test_failsafe_profiles_distinct_ids_and_not_above_tx_stack_level():
    fs = failsafe_limits_kw([Charger("A", "DC", 100.0)], 80.0, 0.0)["A"]
    mx, default = failsafe_profiles(DC16, fs, T0)
    ids = {_profile(mx)["chargingProfileId"], _profile(default)["chargingProfileId"]}
    assert len(ids) == 2
    tx, _ = tx_profile(
        DC16, connector_id=1, transaction_id=5, schedule=KwSchedule.regular(T0, 900, [30.0]), now=T0
    )
    assert _profile(tx)["chargingProfileId"] not in ids
    assert _profile(tx)["stackLevel"] >= _profile(default)["stackLevel"]


# --------------------------------------------------------------------------- stack levels


@pytest.mark.parametrize(
    ("keys", "stack", "periods", "units"),
    [
        ({}, 8, 24, ("A", "W")),
        ({"ChargeProfileMaxStackLevel": "3", "ChargingScheduleMaxPeriods": "6"}, 3, 6, ("A", "W")),
        ({"ChargeProfileMaxStackLevel": "x", "ChargingScheduleMaxPeriods": ""}, 8, 24, ("A", "W")),
        ({"ChargeProfileMaxStackLevel": "0"}, 1, 24, ("A", "W")),
        ({"ChargingScheduleAllowedChargingRateUnit": "Current"}, 8, 24, ("A", "W")),
        ({"ChargingScheduleAllowedChargingRateUnit": "w"}, 8, 24, ("W",)),
        ({"ChargingScheduleAllowedChargingRateUnit": "A; W"}, 8, 24, ("A", "W")),
        ({"ChargingScheduleAllowedChargingRateUnit": "A"}, 8, 24, ("A",)),
    ],
)
def test_configuration_keys_are_parsed(keys, stack, periods, units):
    caps = caps_from_config_keys(keys, ocpp_version="1.6", kind="AC", phases=1, voltage_v=220.0)
    assert (caps.max_stack_level, caps.max_periods, caps.allowed_units) == (stack, periods, units)
    assert (caps.ocpp_version, caps.kind, caps.phases, caps.voltage_v) == ("1.6", "AC", 1, 220.0)


def test_stack_level_never_above_what_the_charger_allows():
    caps = ChargerCaps("1.6", "DC", max_stack_level=0)
    sched = KwSchedule.regular(T0, 900, [30.0])
    tx, _ = tx_profile(caps, connector_id=1, transaction_id=5, schedule=sched, now=T0)
    assert _profile(tx)["stackLevel"] == 0
    for req in failsafe_profiles(
        caps, failsafe_limits_kw([Charger("A", "DC", 50.0)], 40, 0)["A"], T0
    ):
        assert _profile(req)["stackLevel"] == 0
    # A charger that allows level 0 only accepts them all.
    ps = ProfileSet(Electrical(hardware_max_kw=50.0), max_stack_level=0)
    assert ps.install(1, _profile(tx), T0, transaction_id="5") == "Accepted"
    assert ChargerCaps("1.6", "DC").max_stack_level == 8
    tx8, _ = tx_profile(DC16, connector_id=1, transaction_id=5, schedule=sched, now=T0)
    assert _profile(tx8)["stackLevel"] == 1


# --------------------------------------------------------------------------- identity and shape


@pytest.mark.parametrize("caps", [DC16, DC201], ids=["1.6", "2.0.1"])
def test_each_connector_keeps_its_own_tx_profile_on_the_charger(caps):
    # Two sessions on one charger: a 1.6 charger replaces a profile with the same id,
    # so one id for both would leave connector 1 at its default.
    ps = ProfileSet(Electrical(hardware_max_kw=100.0), charger_max_kw=200.0)
    for conn, kw in ((1, 30.0), (2, 70.0)):
        req, _ = tx_profile(
            caps, connector_id=conn, transaction_id=40 + conn,
            schedule=KwSchedule.regular(T0, 900, [kw] * 4), now=T0,
        )  # fmt: skip
        key = "connectorId" if caps.ocpp_version == "1.6" else "evseId"
        assert req[key] == conn
        assert ps.install(conn, _profile(req), T0, transaction_id=str(40 + conn)) == "Accepted"
    assert ps.limit_kw(1, T0, transaction_id="41") == pytest.approx(30.0)
    assert ps.limit_kw(2, T0, transaction_id="42") == pytest.approx(70.0)


def test_tx_profile_carries_the_transaction_id():
    sched = KwSchedule.regular(T0, 900, [30.0])
    tx16, _ = tx_profile(DC16, connector_id=2, transaction_id="17", schedule=sched, now=T0)
    assert tx16["csChargingProfiles"]["transactionId"] == 17  # 1.6: an integer
    tx201, _ = tx_profile(DC201, connector_id=2, transaction_id=17, schedule=sched, now=T0)
    assert tx201["chargingProfile"]["transactionId"] == "17"  # 2.0.1: a string
    # A charger refuses a TxProfile for another transaction than the one it runs.
    ps = ProfileSet(Electrical(hardware_max_kw=100.0))
    assert ps.install(2, tx16["csChargingProfiles"], T0, transaction_id="18") == "Rejected"
    assert ps.install(2, tx16["csChargingProfiles"], T0, transaction_id="17") == "Accepted"


def test_plan_that_starts_later_begins_with_zero():
    # Plan from T0 + 30 min; now T0: nothing allowed until then (no gap to the default).
    sched = KwSchedule.regular(T0 + timedelta(minutes=30), 900, [40.0, 20.0])
    req, q = tx_profile(DC16, connector_id=1, transaction_id=1, schedule=sched, now=T0)
    s = _sched(req)
    assert s["startSchedule"] == "2026-06-14T23:59:00Z"
    assert s["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 0.0},
        {"startPeriod": 30 * 60 + BACKDATE_S, "limit": 40000.0},
        {"startPeriod": 45 * 60 + BACKDATE_S, "limit": 20000.0},
    ]
    assert s["duration"] == 60 * 60 + BACKDATE_S
    assert q.limits_kw == (0.0, 40.0, 20.0)
    ps = ProfileSet(Electrical(hardware_max_kw=100.0))
    ps.install(1, _profile(req), T0, transaction_id="1")
    assert ps.limit_kw(1, T0 + timedelta(minutes=10), transaction_id="1") == 0.0
    assert ps.limit_kw(1, T0 + timedelta(minutes=31), transaction_id="1") == pytest.approx(40.0)


def test_plan_started_earlier_is_backdated_and_past_periods_dropped():
    sched = KwSchedule.regular(T0 - timedelta(minutes=20), 900, [10.0, 40.0, 20.0])
    q = quantised(DC16, sched, T0)
    assert q.starts[0] == T0 - timedelta(seconds=BACKDATE_S)
    assert q.limits_kw == (40.0, 20.0)
    assert q.end == T0 + timedelta(minutes=25)


def test_max_periods_cut_the_horizon_and_the_leading_zero_counts():
    caps = ChargerCaps("1.6", "DC", max_periods=3)
    sched = KwSchedule.regular(T0 + timedelta(minutes=15), 900, [10.0, 20.0, 30.0, 40.0])
    q = quantised(caps, sched, T0)
    assert q.limits_kw == (0.0, 10.0, 20.0)
    assert q.end == T0 + timedelta(minutes=45)  # the charger falls back after the cut
    q = quantised(
        ChargerCaps("1.6", "DC", max_periods=2), KwSchedule.regular(T0, 900, [1, 2, 3]), T0
    )
    assert q.limits_kw == (1.0, 2.0) and q.end == T0 + timedelta(minutes=30)


def test_three_phase_ac_converts_kw_to_amps_per_phase():
    # 22 kW on 3 x 230 V = 31.88 A per phase -> 31.8 A (rounded down); 11 kW -> 15.9 A.
    sched = KwSchedule.regular(T0, 900, [22.0, 11.0, 4.0])
    req, q = tx_profile(AC3, connector_id=1, transaction_id=1, schedule=sched, now=T0)
    periods = _sched(req)["chargingSchedulePeriod"]
    assert _sched(req)["chargingRateUnit"] == "A"
    assert [p["limit"] for p in periods] == [31.8, 15.9, 0.0]  # 4 kW = 5.8 A < 6 A
    assert all(p["numberPhases"] == 3 for p in periods)
    assert q.limits_kw == pytest.approx([31.8 * 0.69, 15.9 * 0.69, 0.0])
    assert AC3.to_kw(31.8) == pytest.approx(21.942)
    assert AC3.quantise_kw(22.0) <= 22.0
    # The charger reads it back as the same power.
    ps = ProfileSet(Electrical(hardware_max_kw=22.0, phases=3, voltage_v=230.0))
    ps.install(1, _profile(req), T0, transaction_id="1")
    assert ps.limit_kw(1, T0, transaction_id="1") == pytest.approx(21.942)


def test_units_follow_what_the_charger_allows():
    assert ChargerCaps("1.6", "AC", allowed_units=("W",)).unit == "W"
    assert ChargerCaps("1.6", "DC", allowed_units=("A",)).unit == "A"
    assert ChargerCaps("1.6", "DC", allowed_units=()).unit == "W"
    w_ac = ChargerCaps("1.6", "AC", phases=3, allowed_units=("W",))
    assert w_ac.to_limit(3.0) == 3000.0  # no 6 A floor on a power limit
    assert w_ac.to_kw(3000.0) == 3.0
    assert DC16.to_limit(12.34567) == 12345.6
    assert DC16.to_limit(-5.0) == 0.0
    single = ChargerCaps("1.6", "AC", phases=1, voltage_v=220.0)
    assert single.to_limit(1.32) == 6.0  # exactly 6 A is allowed
    assert single.to_limit(1.3) == 0.0


def test_tx_profile_of_a_schedule_already_over_is_refused():
    sched = KwSchedule.regular(T0 - timedelta(hours=1), 900, [10.0])
    with pytest.raises(ValueError, match="ends before now"):
        tx_profile(DC16, connector_id=1, transaction_id=1, schedule=sched, now=T0)


# --------------------------------------------------------------------------- edges


def test_small_dc_power_is_sent_not_zeroed():
    req, _ = tx_profile(
        DC16, connector_id=1, transaction_id=1, schedule=KwSchedule.regular(T0, 900, [0.5]), now=T0
    )
    assert _sched(req)["chargingSchedulePeriod"][0]["limit"] == 500.0


def test_units_with_semicolons_and_unknown_names():
    caps = caps_from_config_keys(
        {"ChargingScheduleAllowedChargingRateUnit": "W; Foo"},
        ocpp_version="1.6", kind="AC", phases=3, voltage_v=230.0,
    )  # fmt: skip
    assert caps.allowed_units == ("W",)


def test_now_in_the_last_period_and_on_a_boundary():
    s = KwSchedule.regular(T0 - timedelta(minutes=30), 600, [10.0, 20.0, 30.0])
    q = quantised(DC16, s, T0 - timedelta(minutes=5))
    assert q.limits_kw == (30.0,) and q.starts == (T0 - timedelta(minutes=6),)
    # Exactly at a boundary: the period that just ended is not sent.
    q = quantised(DC16, s, T0 - timedelta(minutes=10))
    assert q.limits_kw == (30.0,)


def test_exactly_max_periods_are_all_sent():
    caps = ChargerCaps("1.6", "DC", max_periods=3)
    s = KwSchedule.regular(T0, 900, [10.0, 20.0, 30.0])
    q = quantised(caps, s, T0)
    assert q.limits_kw == (10.0, 20.0, 30.0) and q.end == s.end


def test_schedule_over_is_refused_with_its_reason():
    s = KwSchedule.regular(T0 - timedelta(hours=1), 900, [10.0])
    with pytest.raises(ValueError, match=r"^schedule: ends before now$"):
        quantised(DC16, s, T0)


def _deadband(prev, new, now=T0, **kw):
    from ocpp_central.profiles import within_deadband

    args = dict(deadband_kw=1.0, refresh_before_s=600)
    args.update(kw)
    return within_deadband(prev, new, now, **args)


def test_deadband_edges():
    a = KwSchedule.regular(T0, 900, [50.0] * 4)
    assert _deadband(a, a, refresh_before_s=7200) is True  # same end, horizon beyond it
    assert _deadband(a, KwSchedule.regular(T0, 900, [51.0] * 4)) is True  # exactly the band
    assert _deadband(a, KwSchedule.regular(T0, 900, [51.5] * 4)) is False
    # The charger's profile ends in 5 min, refresh wanted 10 min ahead: send anew.
    short = KwSchedule.regular(T0 - timedelta(minutes=10), 900, [50.0])
    assert _deadband(short, a) is False
    # The old profile only starts later: nothing to compare now.
    late = KwSchedule.regular(T0 + timedelta(minutes=5), 900, [50.0] * 4)
    assert _deadband(late, a) is False
    # The lease of the old plan ends within the refresh window (or exactly at it).
    assert _deadband(a, a, previous_until=T0 + timedelta(minutes=5)) is False
    assert _deadband(a, a, previous_until=T0 + timedelta(minutes=10)) is True
    # Beyond the new plan's lease the two may differ: only the common part counts.
    longer = KwSchedule.regular(T0, 900, [50.0, 50.0, 80.0, 80.0])
    assert _deadband(a, longer, until=T0 + timedelta(minutes=30)) is True
    assert _deadband(longer, a, until=T0 + timedelta(minutes=30)) is True


def test_ocpp_time_is_utc_whatever_the_host_zone(monkeypatch):
    import time

    from ocpp_central.profiles import ocpp_time

    monkeypatch.setenv("TZ", "Asia/Seoul")
    time.tzset()
    try:
        seoul = T0.astimezone(timezone(timedelta(hours=9))).replace(microsecond=999)
        assert ocpp_time(seoul) == "2026-06-15T00:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()
