"""DataTransfer from chargers: known vendors reach their handler, others get UnknownVendorId."""

from __future__ import annotations

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

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
