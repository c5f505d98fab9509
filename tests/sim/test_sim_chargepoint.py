"""Simulated charge points over real WebSockets against the real central system.

Uses the ``central`` fixture (ocpp_central.server.CentralSystem on 127.0.0.1, port 0)
and the SimClock: time moves only when every simulated charger waits on it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from megastation.core.fleet import CarVisit
from megastation.sim.chargepoint import Fleet, drive_sim_clock
from megastation.store import records
from tests.conftest import T0


def visit(charger_id: str, *, minutes: float = 20, needs: bool = False, token: str) -> CarVisit:
    return CarVisit(
        charger_id=charger_id,
        connector_id=1,
        arrival=T0 + timedelta(minutes=1),
        departure=T0 + timedelta(minutes=1 + minutes),
        energy_wanted_kwh=60.0,
        car_model="Hyundai Ioniq 5 Long Range",
        battery_kwh=84.0,
        car_max_power_kw=257.0,
        soc_arrival_frac=0.2,
        sends_charging_needs=needs,
        id_token=token,
    )


def small_station(station, ids):
    return replace(station, chargers=tuple(c for c in station.chargers if c.id in ids))


@pytest.fixture
def url(central) -> str:
    return f"ws://127.0.0.1:{central.port}"


async def test_a_16_and_a_201_visit_end_up_as_transactions_in_the_store(
    station, store, clock, central, url
):
    for tag in ("TAG16", "TAG201"):
        records.set_id_token(store, tag)
    st = small_station(station, {"GJDG-DC-03", "GJDG-DC-01"})  # 1.6 100 kW, 2.0.1 200 kW
    visits = [
        visit("GJDG-DC-03", token="TAG16"),
        visit("GJDG-DC-01", token="TAG201", needs=True),
    ]
    fleet = Fleet(st, visits, url, clock, meter_interval_s=60, tick_s=10)
    await drive_sim_clock(fleet, clock, T0 + timedelta(minutes=25), step_s=10)

    recs = {r.charger_id: r for r in fleet.records}
    assert set(recs) == {"GJDG-DC-03", "GJDG-DC-01"}
    # 20 minutes at the charger's max (100 kW; the 200 kW one reaches the car's 60 kWh wish).
    assert recs["GJDG-DC-03"].energy_kwh == pytest.approx(100 * 20 / 60, rel=0.02)
    assert recs["GJDG-DC-01"].energy_kwh == pytest.approx(60.0, rel=0.01)
    assert all(r.reason == "EVDisconnected" for r in recs.values())

    txs = {t["charger_id"]: t for t in records.list_transactions(store)}
    assert set(txs) == {"GJDG-DC-03", "GJDG-DC-01"}
    for cid, tx in txs.items():
        assert tx["state"] == "closed"
        assert tx["energy_kwh"] == pytest.approx(recs[cid].energy_kwh, abs=0.01)
        assert tx["id_token"] == recs[cid].id_token
    assert txs["GJDG-DC-01"]["ocpp_version"] == "2.0.1"
    needs = store.conn.execute(
        "SELECT charger_id, requested_energy_kwh, departure_time FROM charging_needs"
    ).fetchall()
    assert [n[0] for n in needs] == ["GJDG-DC-01"]
    assert needs[0][1] == pytest.approx(60.0, abs=0.01)
    # Meter samples arrived every minute with power and SoC.
    samples = records.list_meter_samples(store)
    assert {s["charger_id"] for s in samples} == {"GJDG-DC-03", "GJDG-DC-01"}
    assert any(s["measurand"] == "SoC" for s in samples)
    assert fleet.total_power_kw() == 0.0  # everyone has left


async def test_chargers_obey_a_profile_and_answer_configuration_queries(
    station, store, clock, central, url
):
    records.set_id_token(store, "TAG16")
    records.set_id_token(store, "TAG201")
    st = small_station(station, {"GJDG-DC-03", "GJDG-AC-03"})  # 1.6 DC, 2.0.1 AC
    visits = [
        visit("GJDG-DC-03", token="TAG16"),
        replace(visit("GJDG-AC-03", token="TAG201"), car_max_power_kw=10.5),
    ]
    fleet = Fleet(st, visits, url, clock, meter_interval_s=60, tick_s=10)
    answers: dict[str, object] = {}
    start = T0 - timedelta(minutes=1)

    async def controller() -> None:
        now = clock.now()
        if now >= T0 + timedelta(minutes=2) and "set16" not in answers:
            tx16 = next(iter(fleet.chargepoints["GJDG-DC-03"].connectors.values())).tx_id
            answers["set16"] = await central.call(
                "GJDG-DC-03",
                "SetChargingProfile",
                {
                    "connector_id": 1,
                    "cs_charging_profiles": {
                        "charging_profile_id": 101,
                        "transaction_id": int(tx16),
                        "stack_level": 1,
                        "charging_profile_purpose": "TxProfile",
                        "charging_profile_kind": "Absolute",
                        "charging_schedule": {
                            "start_schedule": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "charging_rate_unit": "W",
                            "charging_schedule_period": [{"start_period": 0, "limit": 30000.0}],
                        },
                    },
                },
            )
            answers["set201"] = await central.call(
                "GJDG-AC-03",
                "SetChargingProfile",
                {
                    "evse_id": 0,
                    "charging_profile": {
                        "id": 7,
                        "stack_level": 0,
                        "charging_profile_purpose": "TxDefaultProfile",
                        "charging_profile_kind": "Absolute",
                        "charging_schedule": [
                            {
                                "id": 1,
                                "start_schedule": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "charging_rate_unit": "A",
                                "charging_schedule_period": [
                                    {"start_period": 0, "limit": 10.0, "number_phases": 1}
                                ],
                            }
                        ],
                    },
                },
            )
            answers["config"] = await central.call(
                "GJDG-DC-03",
                "GetConfiguration",
                {"key": ["ChargingScheduleAllowedChargingRateUnit", "ChargeProfileMaxStackLevel"]},
            )
            answers["vars"] = await central.call(
                "GJDG-AC-03",
                "GetVariables",
                {
                    "get_variable_data": [
                        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": n}}
                        for n in ("RateUnit", "PeriodsPerSchedule")
                    ]
                },
            )
            answers["composite"] = await central.call(
                "GJDG-DC-03", "GetCompositeSchedule", {"connector_id": 1, "duration": 600}
            )
        if now >= T0 + timedelta(minutes=5) and "power" not in answers:
            answers["power"] = fleet.power_kw()

    await drive_sim_clock(fleet, clock, T0 + timedelta(minutes=6), step_s=10, settle=controller)
    assert answers["set16"].ok and answers["set201"].ok
    power = answers["power"]
    assert power[("GJDG-DC-03", 1)] == pytest.approx(30.0)
    assert power[("GJDG-AC-03", 1)] == pytest.approx(10 * 220 / 1000)
    assert power[("GJDG-AC-03", 2)] == 0.0
    keys = {k["key"]: k["value"] for k in answers["config"].response["configuration_key"]}
    assert keys == {
        "ChargingScheduleAllowedChargingRateUnit": "Power",
        "ChargeProfileMaxStackLevel": "8",
    }
    values = [r["attribute_value"] for r in answers["vars"].response["get_variable_result"]]
    assert values == ["A", "48"]
    sched = answers["composite"].response["charging_schedule"]
    assert sched["charging_rate_unit"] == "W"
    assert sched["charging_schedule_period"][0]["limit"] == 30000.0


async def test_a_generated_fleet_runs_the_whole_seed_station(station, store, clock, central, url):
    from megastation.core.fleet import generate_visits

    end = T0 + timedelta(hours=2)
    visits = generate_visits(station, T0, end, seed=4)
    for v in visits:
        records.set_id_token(store, v.id_token)
    done = [v for v in visits if v.departure <= end]
    assert len(done) >= 3
    fleet = Fleet(station, visits, url, clock, meter_interval_s=300, tick_s=30)
    peak = {"kw": 0.0}

    async def watch() -> None:
        peak["kw"] = max(peak["kw"], fleet.total_power_kw())

    await drive_sim_clock(fleet, clock, end, step_s=30, settle=watch)
    assert len(fleet.records) == len(done)
    stored = records.list_transactions(store, state="closed")
    assert len(stored) == len(done)
    assert sum(t["energy_kwh"] for t in stored) == pytest.approx(
        sum(r.energy_kwh for r in fleet.records), abs=0.05
    )
    for r in fleet.records:
        v = next(v for v in done if v.id_token == r.id_token)
        assert r.energy_kwh <= v.energy_wanted_kwh + 1e-3
    assert 0 < peak["kw"] <= sum(c.max_power_kw for c in station.chargers)


async def test_remote_stop_trigger_and_availability(station, store, clock, central, url):
    records.set_id_token(store, "TAG16")
    records.set_id_token(store, "TAG201")
    st = small_station(station, {"GJDG-DC-03", "GJDG-DC-01"})
    visits = [visit("GJDG-DC-03", token="TAG16"), visit("GJDG-DC-01", token="TAG201")]
    fleet = Fleet(st, visits, url, clock, meter_interval_s=60, tick_s=10)
    out: dict[str, object] = {}

    async def operator() -> None:
        if clock.now() >= T0 + timedelta(minutes=3) and "stop16" not in out:
            cps = fleet.chargepoints
            tx16 = cps["GJDG-DC-03"].connectors[1].tx_id
            tx201 = cps["GJDG-DC-01"].connectors[1].tx_id
            out["stop16"] = await central.call(
                "GJDG-DC-03", "RemoteStopTransaction", {"transaction_id": int(tx16)}
            )
            out["stop201"] = await central.call(
                "GJDG-DC-01", "RequestStopTransaction", {"transaction_id": tx201}
            )
            out["trigger"] = await central.call(
                "GJDG-DC-03", "TriggerMessage", {"requested_message": "Heartbeat"}
            )
            out["avail"] = await central.call(
                "GJDG-DC-01",
                "ChangeAvailability",
                {"operational_status": "Inoperative", "evse": {"id": 1}},
            )
            out["reset"] = await central.call("GJDG-DC-03", "Reset", {"type": "Soft"})

    await drive_sim_clock(fleet, clock, T0 + timedelta(minutes=6), step_s=10, settle=operator)
    for key in ("stop16", "stop201", "trigger", "reset"):
        assert out[key].ok, (key, out[key])
    assert out["avail"].response["status"] == "Scheduled"  # a car is still plugged in
    assert {r.reason for r in fleet.records} == {"Remote"}
    txs = records.list_transactions(store, state="closed")
    assert len(txs) == 2
    # Two minutes of charging at each charger's max (100 kW and 200 kW), then stopped.
    energy = {t["charger_id"]: t["energy_kwh"] for t in txs}
    assert energy["GJDG-DC-03"] == pytest.approx(100 * 2 / 60, rel=0.01)
    assert energy["GJDG-DC-01"] == pytest.approx(200 * 2 / 60, rel=0.01)
    assert fleet.total_power_kw() == 0.0
