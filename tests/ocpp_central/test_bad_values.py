"""Numbers a charger must not be able to slip into the store (issue #13, item 1).

Non-finite or absurd numbers are refused at the edge: JSON that is not JSON (``NaN``,
``Infinity``) or a number no charger can mean (``1e400``, integers beyond 2**53) gets a
CALLERROR for the whole frame; a sampled value of ``"inf"`` (1.6 sends strings) is
dropped and logged while the rest of the message is kept. The controller survives such
values already in a store written before these checks, and a failing cycle shows in
``control-status`` / ``status``.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import timedelta

import pytest
import websockets
from click.testing import CliRunner

from megastation.cli import main
from megastation.control.controller import Controller
from megastation.sim.gateway import DirectGateway
from megastation.store import Store, iso, records
from megastation.store import control as cr
from ocpp_central.server import CentralSystem
from tests.conftest import T0
from tests.control.test_control_loop import make_controller, start_tx
from tests.ocpp_clients import url

TS = "2026-06-15T00:01:00Z"


async def raw(central: CentralSystem, charger_id: str, proto: str):
    return await websockets.connect(url(central.port, charger_id), subprotocols=[proto])


async def ask(ws, frame: str | list) -> list:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), 3))


def strict_loads(text: str):
    def no(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=no)


def non_finite_values(store: Store) -> int:
    """Stored REAL values that are not finite, over every table and column."""
    n = 0
    tables = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for t in tables:
        cols = [r[1] for r in store.conn.execute(f"PRAGMA table_info({t})")]
        for c in cols:
            n += store.conn.execute(
                f"SELECT COUNT(*) FROM {t} WHERE typeof({c}) = 'real' AND "
                f"NOT ({c} BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308)"
            ).fetchone()[0]
    return n


async def test_non_finite_sampled_values_are_dropped_and_the_rest_kept(central, store):
    records.start_transaction(
        store, "GJDG-AC-01", connector_id=1, id_token="T", auth_status="Accepted",
        meter_start_wh=0.0, ts=T0,
    )  # fmt: skip
    ws = await raw(central, "GJDG-AC-01", "ocpp1.6")
    async with ws:
        values = ["inf", "1e400", "nan", "-Infinity", "12.5"]
        sampled = [{"value": v, "measurand": "Power.Active.Import", "unit": "kW"} for v in values]
        sampled.append({"value": "250", "measurand": "SoC", "location": "EV"})  # > 100 %
        answer = await ask(
            ws,
            [2, "m1", "MeterValues", {"connectorId": 1, "meterValue": [
                {"timestamp": TS, "sampledValue": sampled}]}],
        )  # fmt: skip
        assert answer == [3, "m1", {}]
    rows = store.conn.execute("SELECT value FROM meter_samples").fetchall()
    assert rows == [(12.5,)]
    assert non_finite_values(store) == 0


@pytest.mark.parametrize(
    ("proto", "number", "code"),
    [
        ("ocpp2.0.1", "1e400", "PropertyConstraintViolation"),
        ("ocpp2.0.1", "NaN", "FormatViolation"),
        ("ocpp2.0.1", "-Infinity", "FormatViolation"),
        ("ocpp1.6", "Infinity", "FormationViolation"),
        ("ocpp1.6", "1" + "0" * 30, "PropertyConstraintViolation"),
    ],
)
async def test_non_finite_json_numbers_get_call_errors(central, store, proto, number, code):
    cid = "GJDG-AC-03" if proto == "ocpp2.0.1" else "GJDG-AC-01"
    ws = await raw(central, cid, proto)
    async with ws:
        if proto == "ocpp2.0.1":
            frame = (
                '[2, "n1", "MeterValues", {"evseId": 1, "meterValue": [{"timestamp": "' + TS
                + '", "sampledValue": [{"value": ' + number + "}]}]}]"
            )  # fmt: skip
        else:
            frame = (
                '[2, "n1", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": '
                + number + ', "timestamp": "' + TS + '"}]'
            )  # fmt: skip
        answer = await ask(ws, frame)
        assert answer[0] == 4 and answer[1] == "n1" and answer[2] == code, answer
        ok = await ask(ws, [2, "after", "Heartbeat", {}])
        assert ok[0] == 3
    assert store.conn.execute("SELECT COUNT(*) FROM meter_samples").fetchone()[0] == 0
    assert store.conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] == 0


async def test_out_of_range_meter_start_and_charging_needs_are_refused(central, store):
    ws = await raw(central, "GJDG-AC-01", "ocpp1.6")
    async with ws:
        answer = await ask(
            ws,
            [2, "s1", "StartTransaction", {"connectorId": 1, "idTag": "T",
                                           "meterStart": 10**13, "timestamp": TS}],
        )  # fmt: skip
        assert answer[:3] == [4, "s1", "PropertyConstraintViolation"]
        assert "meterStart" in answer[3]
    ws = await raw(central, "GJDG-AC-03", "ocpp2.0.1")
    async with ws:
        answer = await ask(
            ws,
            [2, "c1", "NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": {
                "requestedEnergyTransfer": "DC",
                "dcChargingParameters": {"evMaxCurrent": 100, "evMaxVoltage": 400,
                                         "evMaxPower": -5e3}}}],
        )  # fmt: skip
        assert answer[:3] == [4, "c1", "PropertyConstraintViolation"]
        assert "evMaxPower" in answer[3]
    assert store.conn.execute("SELECT COUNT(*) FROM charging_needs").fetchone()[0] == 0


async def test_bad_timestamp_is_a_format_error_not_internal(central, store):
    ws = await raw(central, "GJDG-AC-01", "ocpp1.6")
    async with ws:
        answer = await ask(
            ws,
            [2, "t1", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0,
                                           "timestamp": "2026-13-45T25:00:00Z"}],
        )  # fmt: skip
        assert answer[:3] == [4, "t1", "FormationViolation"], answer
        assert "timestamp" in answer[3] and "Traceback" not in answer[3]
    ws = await raw(central, "GJDG-AC-03", "ocpp2.0.1")
    async with ws:
        answer = await ask(
            ws,
            [2, "t2", "StatusNotification", {"timestamp": "yesterday", "connectorStatus":
                                             "Available", "evseId": 1, "connectorId": 1}],
        )  # fmt: skip
        assert answer[:3] == [4, "t2", "FormatViolation"], answer


@pytest.mark.parametrize(
    ("proto", "frame", "code"),
    [
        ("ocpp1.6", [2, "e1", "StartTransaction", {"connectorId": 1, "idTag": "T",
                                                   "meterStart": 0, "timestamp": ""}],
         "FormationViolation"),
        ("ocpp1.6", [2, "e2", "StopTransaction", {"transactionId": 1, "meterStop": 10,
                                                  "timestamp": ""}], "FormationViolation"),
        ("ocpp2.0.1", [2, "e3", "TransactionEvent", {
            "eventType": "Started", "timestamp": "", "triggerReason": "CablePluggedIn",
            "seqNo": 0, "transactionInfo": {"transactionId": "tx-e3"}, "evse": {"id": 1}}],
         "FormatViolation"),
    ],
)  # fmt: skip
async def test_empty_required_timestamp_is_a_format_error_not_internal(
    central, store, proto, frame, code
):
    """The schemas let an empty date-time string through; the fuzzer found that
    StartTransaction then failed inside the store (InternalError)."""
    ws = await raw(central, "GJDG-AC-01" if proto == "ocpp1.6" else "GJDG-AC-03", proto)
    async with ws:
        answer = await ask(ws, frame)
        assert answer[:3] == [4, frame[1], code], answer
        assert "timestamp" in answer[3]
        ok = await ask(ws, [2, "after", "Heartbeat", {}])
        assert ok[0] == 3
    assert store.conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] == 0


@pytest.mark.parametrize("depth", [40, 30_000])
async def test_deeply_nested_json_gets_a_call_error_and_the_connection_stays(central, depth):
    ws = await raw(central, "GJDG-AC-01", "ocpp1.6")
    async with ws:
        data = "[" * depth + "]" * depth
        frame = '[2, "d1", "DataTransfer", {"vendorId": "X", "data": ' + json.dumps(data) + "}]"
        # nested inside a string is fine (not nesting); nested as JSON is refused
        frame_nested = '[2, "d2", "DataTransfer", {"vendorId": "X", "data": ' + data + "}]"
        answer = await ask(ws, frame)
        assert answer[0] == 3
        answer = await ask(ws, frame_nested)
        assert answer[0] == 4 and answer[2] == "FormationViolation", answer[:3]
        ok = await ask(ws, [2, "after", "Heartbeat", {}])
        assert ok[0] == 3


async def test_unknown_and_unsupported_actions_use_the_ocpp_j_codes(central):
    # OCPP-J 1.6 table 7 / 2.0.1 part 4 §4.3: NotImplemented = "Requested Action is not
    # known by receiver"; NotSupported = "recognized but not supported"
    ws = await raw(central, "GJDG-AC-03", "ocpp2.0.1")
    async with ws:
        unknown = await ask(ws, [2, "u1", "FlyToTheMoon", {}])
        assert unknown[2] == "NotImplemented"
        known = await ask(
            ws,
            [2, "u2", "Get15118EVCertificate", {"iso15118SchemaVersion": "x",
                                                "action": "Install", "exiRequest": "y"}],
        )  # fmt: skip
        assert known[2] == "NotSupported"


# --------------------------------------------------------------------------- the controller


def poison_store(store: Store) -> int:
    """What a store written before the edge checks can hold: Inf in flows and samples."""
    tx = start_tx(store, "GJDG-DC-01", 1, T0)
    for k in range(4):  # a whole 15-minute window earlier this month
        store.conn.execute(
            "INSERT INTO energy_flows (ts, step_s, pv_kw, ev_kw, battery_charge_kw, "
            "battery_discharge_kw, grid_import_kw, grid_export_kw) VALUES (?, 300, 0, 0, 0, 0, ?, 0)",
            (iso(T0 - timedelta(hours=2) + timedelta(minutes=5 * k)), math.inf),
        )
    store.conn.execute(
        "INSERT INTO meter_samples (charger_id, connector_id, transaction_id, ts, measurand, "
        "phase, location, context, value, unit, received_at) VALUES "
        "('GJDG-DC-01', 1, ?, ?, 'Power.Active.Import', '', '', '', ?, 'kW', ?)",
        (tx, iso(T0), math.inf, iso(T0)),
    )
    store.conn.execute("UPDATE transactions SET energy_kwh = ? WHERE id = ?", (math.inf, tx))
    store.conn.commit()
    return tx


async def test_controller_survives_non_finite_values_in_the_store(station, store, clock):
    records.register_station_chargers(store, station)
    poison_store(store)
    gw = DirectGateway(station, store, clock)
    ctl, _, _ = make_controller(station, store, clock, gw)
    res = await ctl.cycle("test")
    assert res.status == "optimal"
    warnings = cr.latest_plan(store)["inputs"]["warnings"]
    assert any("energy_flows" in w for w in warnings), warnings
    assert any("energy_kwh" in w for w in warnings), warnings
    out = CliRunner().invoke(
        main, ["--db", str(store.path), "control-status", "--json"], catch_exceptions=False
    )
    data = strict_loads(out.output)
    assert data["plan"]["warnings"] == warnings
    out = CliRunner().invoke(main, ["--db", str(store.path), "status", "--json"])
    assert out.exit_code == 0, out.output
    strict_loads(out.output)  # no Infinity anywhere


class _FailingController(Controller):
    def _peak_so_far(self, now):  # a bug that makes every cycle fail
        return math.inf


async def test_a_failing_cycle_shows_in_control_status_until_one_succeeds(station, store, clock):
    records.register_station_chargers(store, station)
    gw = DirectGateway(station, store, clock)
    good, _, _ = make_controller(station, store, clock, gw)
    await good.cycle("first")
    bad = _FailingController(
        station, store, clock, gateway=gw, battery=good.battery, pv_meter=good.pv_meter,
        forecaster=good.forecaster,
    )  # fmt: skip
    with pytest.raises(ValueError, match="peak_so_far_kw"):
        await asyncio.wait_for(bad.run(), 10)
    err = cr.cycle_error(store)
    assert err["count"] == 1 and "peak_so_far_kw" in err["error"]
    assert err["since"] == iso(clock.now())
    runner = CliRunner()
    out = runner.invoke(main, ["--db", str(store.path), "control-status"])
    assert "CONTROL CYCLES FAILING since" in out.output and "peak_so_far_kw" in out.output
    out = runner.invoke(main, ["--db", str(store.path), "status", "--json"])
    assert "peak_so_far_kw" in strict_loads(out.output)["control"]["cycle_error"]["error"]
    # the next good cycle of a running loop clears it
    task = asyncio.create_task(good.run())
    try:
        for _ in range(200):
            if cr.cycle_error(store) is None:
                break
            await asyncio.sleep(0.01)
        assert cr.cycle_error(store) is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_json_output_is_strict():
    from megastation.store import json_text

    assert json_text({"a": math.inf, "b": [math.nan, 1.5], "c": (2.0, -math.inf)}) == (
        '{"a": null, "b": [null, 1.5], "c": [2.0, null]}'
    )
    from megastation.store import dumps

    assert dumps({"x": math.inf}) == '{"x":null}'


async def test_an_unpaired_surrogate_is_a_format_error_and_the_batch_survives(central, store):
    ws = await raw(central, "GJDG-AC-01", "ocpp1.6")
    other = await raw(central, "GJDG-AC-02", "ocpp1.6")
    async with ws, other:
        # both in one group commit; the bad one used to fail the whole batch (its log row)
        await ws.send(r'[2, "x1", "Authorize", {"idTag": "\ud800"}]')
        await other.send(json.dumps([2, "ok", "Heartbeat", {}]))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert answer[0] == 4 and answer[2] == "FormationViolation", answer
        assert json.loads(await asyncio.wait_for(other.recv(), 3))[:2] == [3, "ok"]
        ok = await ask(ws, [2, "after", "Heartbeat", {}])
        assert ok[0] == 3
