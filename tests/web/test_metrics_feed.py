"""/metrics (Prometheus text format, base units) and the NGSI-LD data hub feed."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from megastation.store import records
from megastation.web.ngsi import CONTEXT, ENTITY_TYPE
from tests.conftest import T0
from tests.ocpp_clients import connect_charger


async def scrape(client) -> dict[str, dict[tuple, float]]:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_parse_and_move_when_a_charger_sends_meter_values(client, store, central):
    from ocpp.v16 import call

    before = await scrape(client)
    assert before["megastation_chargers_connected"][()] == 0
    assert before["megastation_grid_import_limit_watts"][()] == 400_000
    for name in (
        "megastation_plans_total", "megastation_ocpp_callerrors_total",
        "megastation_ev_energy_today_joules", "megastation_device_faults",
        "megastation_ev_power_watts",
    ):  # fmt: skip
        assert name in before, name
    records.set_id_token(store, "TAG1")
    async with connect_charger(central.port, "GJDG-DC-03", "1.6") as cp:
        await cp.call(call.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        tx = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=0, timestamp=T0.isoformat()
            )
        )
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx.transaction_id,
                meter_value=[
                    {
                        "timestamp": T0.replace(minute=10).isoformat(),
                        "sampled_value": [
                            {
                                "value": "5000",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                            {"value": "42000", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    }
                ],
            )
        )
        await cp.call(call.Heartbeat())
        after = await scrape(client)
        assert after["megastation_chargers_connected"][()] == 1
    mv = after["megastation_ocpp_calls_received_total"][(("action", "MeterValues"),)]
    assert mv == 1
    assert after["megastation_ev_power_watts"][()] == 42_000
    key = (("charger", "GJDG-DC-03"), ("connector", "1"))
    assert after["megastation_connector_power_watts"][key] == 42_000
    assert after["megastation_session_energy_joules"][key] == 5 * 3.6e6


async def test_callerrors_are_counted(client, central):
    import websockets

    async with websockets.connect(
        f"ws://127.0.0.1:{central.port}/ocpp/GJDG-AC-01", subprotocols=["ocpp1.6"]
    ) as ws:
        await ws.send('[2,"u1","NoSuchAction",{}]')
        await ws.recv()
        m = await scrape(client)
    assert m["megastation_ocpp_callerrors_total"][(("direction", "out"),)] == 1


async def test_the_data_hub_feed_is_an_ngsi_ld_ev_charging_station_without_personal_data(
    client, store, central
):
    from ocpp.v16 import call

    records.set_id_token(store, "SECRET-CARD")
    async with connect_charger(central.port, "GJDG-DC-03", "1.6") as cp:
        await cp.call(call.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        await cp.call(
            call.StatusNotification(connector_id=1, error_code="NoError", status="Available")
        )
        await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="SECRET-CARD", meter_start=0, timestamp=T0.isoformat()
            )
        )
        r = await client.get("/ngsi-ld/v1/entities?type=EVChargingStation")
    assert r.status_code == 200 and r.headers["content-type"] == "application/ld+json"
    (e,) = r.json()
    assert e["type"] == ENTITY_TYPE and e["id"].startswith("urn:ngsi-ld:EVChargingStation:")
    assert e["@context"] == CONTEXT
    assert e["location"]["value"] == {"type": "Point", "coordinates": [126.923, 35.146]}
    assert e["capacity"]["value"] == 10 and e["availableCapacity"]["value"] == 0
    assert e["status"]["value"] == ["withIncidence"]  # one charger of seven online
    assert e["connectorsCharging"]["value"] == 1
    assert e["energyDeliveredToday"]["unitCode"] == "KWH"
    assert e["socketType"]["value"] == ["CCS1", "Type1"]
    assert "SECRET-CARD" not in r.text and "transaction" not in r.text.lower()
    one = await client.get("/ngsi-ld/v1/entities/" + e["id"])
    assert one.json()["id"] == e["id"]
    assert (await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:x")).status_code == 404
    assert (await client.get("/ngsi-ld/v1/entities")).status_code == 400
    assert (await client.get("/ngsi-ld/v1/entities?type=Other")).json() == []
