"""DataTransfer from chargers: known vendors reach their handler, others get UnknownVendorId."""

from __future__ import annotations

import json
import tomllib

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from megastation.core.config import ConfigError, parse_station
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import connect_charger


async def test_data_transfer_by_vendor(station, store, clock):
    seen = []

    def kepco(charger_id, message_id, data):
        seen.append((charger_id, message_id, data))
        if message_id != "Tariff":
            return "UnknownMessageId", None
        return "Accepted", data if isinstance(data, str) else {"echoKey": data["someKey"]}

    cs = CentralSystem(station, store, clock, data_transfer={"kr.kepco": kepco})
    await cs.start("127.0.0.1", 0)
    try:
        async with connect_charger(cs.port, "GJDG-AC-01", "1.6") as cp:
            r = await cp.call(call16.DataTransfer(vendor_id="x", data="y"), suppress=False)
            assert r.status == "UnknownVendorId"
            r = await cp.call(
                call16.DataTransfer(vendor_id="kr.kepco", message_id="Tariff", data="A1"),
                suppress=False,
            )
            assert (r.status, r.data) == ("Accepted", "A1")
            r = await cp.call(
                call16.DataTransfer(vendor_id="kr.kepco", message_id="Other"), suppress=False
            )
            assert r.status == "UnknownMessageId"
        async with connect_charger(cs.port, "GJDG-AC-03", "2.0.1") as cp:
            r = await cp.call(call201.DataTransfer(vendor_id="x"), suppress=False)
            assert r.status == "UnknownVendorId"
            r = await cp.call(
                call201.DataTransfer(
                    vendor_id="kr.kepco", message_id="Tariff", data={"someKey": 1}
                ),
                suppress=False,
            )
            assert r.status == "Accepted"
    finally:
        await cs.close()
    # vendor data reaches the handler with its keys as sent (camelCase, not re-cased)
    assert seen[-1] == ("GJDG-AC-03", "Tariff", {"someKey": 1})
    assert seen[0] == ("GJDG-AC-01", "Tariff", "A1")


def with_server(station_data: dict, **server: object) -> dict:
    return {**station_data, "server": {**station_data.get("server", {}), **server}}


async def test_configured_vendors_are_accepted_and_logged_as_sent(seed_path, store, clock):
    data = tomllib.loads(seed_path.read_text(encoding="utf-8"))
    station = parse_station(with_server(data, data_transfer_vendors=["kr.kepco", "com.acme"]))
    assert station.server.data_transfer_vendors == ("kr.kepco", "com.acme")
    sent16 = '{"tariffId": "A1", "nested": {"someKey": [1, 2.5]}}'
    sent201 = {"tariffId": "A1", "nested": {"someKey": [1, 2.5]}}
    cs = CentralSystem(station, store, clock, validate_responses=True)
    await cs.start("127.0.0.1", 0)
    try:
        async with connect_charger(cs.port, "GJDG-AC-01", "1.6") as cp:
            r = await cp.call(
                call16.DataTransfer(vendor_id="kr.kepco", message_id="Tariff", data=sent16),
                suppress=False,
            )
            assert r.status == "Accepted"
            r = await cp.call(call16.DataTransfer(vendor_id="kr.other", data="x"), suppress=False)
            assert r.status == "UnknownVendorId"
        async with connect_charger(cs.port, "GJDG-AC-03", "2.0.1") as cp:
            r = await cp.call(
                call201.DataTransfer(vendor_id="com.acme", message_id="Tariff", data=sent201),
                suppress=False,
            )
            assert r.status == "Accepted"
            r = await cp.call(call201.DataTransfer(vendor_id="kr.other"), suppress=False)
            assert r.status == "UnknownVendorId"
    finally:
        await cs.close()
    rows = store.conn.execute(
        "SELECT charger_id, payload FROM message_log "
        "WHERE direction = 'in' AND action = 'DataTransfer' ORDER BY rowid"
    ).fetchall()
    by_vendor = {
        json.loads(p)[3]["vendorId"]: (cid, json.loads(p)[3].get("data")) for cid, p in rows
    }
    assert by_vendor["kr.kepco"] == ("GJDG-AC-01", sent16)
    # the ocpp client sends camelCase keys; the log keeps them as they came
    assert by_vendor["com.acme"] == ("GJDG-AC-03", sent201)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("kr.kepco", r"server\.data_transfer_vendors: must be a list of vendor ids"),
        (["kr.kepco", 7], r"server\.data_transfer_vendors\[1\]: must be a non-empty string"),
        (["kr.kepco", " "], r"server\.data_transfer_vendors\[1\]: must be a non-empty string"),
        (["a", "a"], r"server\.data_transfer_vendors\[1\]: duplicate vendor id 'a'"),
        (["v" * 256], r"server\.data_transfer_vendors\[0\]: must be at most 255 characters"),
    ],
)
def test_bad_vendor_lists_name_the_field(seed_path, value, message):
    data = tomllib.loads(seed_path.read_text(encoding="utf-8"))
    with pytest.raises(ConfigError, match=r"^x\.toml: " + message):
        parse_station(with_server(data, data_transfer_vendors=value), "x.toml")
