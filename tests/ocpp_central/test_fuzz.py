"""Fuzz the live central system with generated frames (issue #13, item 8).

Per OCPP version, at least 10,000 frames drawn by hypothesis go to a live server on
127.0.0.1 over one charger's connection: valid-looking CALLs whose values are replaced by
wrong types, huge and tiny numbers, non-finite strings and odd unicode; deep nesting;
unknown actions; CALLRESULTs and CALLERRORs nobody asked for and unknown message types;
raw text with ``NaN`` / ``Infinity`` / ``1e400`` literals, binary and non-JSON frames.
Meanwhile a bystander charger on its own connection keeps sending MeterValues.

Checked: the fuzzed connection stays open and answers a Heartbeat after every batch; no
CALL is answered ``InternalError`` (a handler crash); the bystander gets every answer and
every one of its samples is stored; no non-finite number is stored anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import threading
import time
from typing import Any

import pytest
import websockets
import websockets.sync.client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megastation.core.clock import SimClock
from megastation.store import Store, records
from ocpp_central.server import CentralSystem
from tests.conftest import T0
from tests.ocpp_clients import url

FRAMES_PER_BATCH = 100
BATCHES = 101  # > 10,000 frames per version
# the bystander waits this long for each answer [s]: a bound, not a pace (the fuzzer floods
# the same server; on a loaded 2-core machine 5 s can run out)
BYSTANDER_ANSWER_S = 30.0
TS = "2026-06-15T00:00:00Z"

TEMPLATES = {
    "1.6": {
        "BootNotification": {"chargePointVendor": "v", "chargePointModel": "m"},
        "Heartbeat": {},
        "Authorize": {"idTag": "TAG"},
        "StatusNotification": {"connectorId": 1, "errorCode": "NoError", "status": "Available",
                               "timestamp": TS},
        "StartTransaction": {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": TS},
        "StopTransaction": {"transactionId": 1, "meterStop": 1000, "timestamp": TS,
                            "transactionData": [{"timestamp": TS, "sampledValue": [
                                {"value": "10", "measurand": "Energy.Active.Import.Register"}]}]},
        "MeterValues": {"connectorId": 1, "transactionId": 1, "meterValue": [
            {"timestamp": TS, "sampledValue": [
                {"value": "1.5", "measurand": "Power.Active.Import", "unit": "kW"},
                {"value": "50", "measurand": "SoC", "location": "EV"}]}]},
        "DataTransfer": {"vendorId": "x", "messageId": "m", "data": "d"},
        "FirmwareStatusNotification": {"status": "Idle"},
    },
    "2.0.1": {
        "BootNotification": {"chargingStation": {"model": "m", "vendorName": "v"},
                             "reason": "PowerUp"},
        "Heartbeat": {},
        "Authorize": {"idToken": {"idToken": "TAG", "type": "ISO14443"}},
        "StatusNotification": {"timestamp": TS, "connectorStatus": "Available", "evseId": 1,
                               "connectorId": 1},
        "TransactionEvent": {"eventType": "Started", "timestamp": TS, "triggerReason": "CablePluggedIn",
                             "seqNo": 0, "transactionInfo": {"transactionId": "t1"},
                             "evse": {"id": 1}, "meterValue": [{"timestamp": TS, "sampledValue": [
                                 {"value": 10.0, "unitOfMeasure": {"unit": "kWh", "multiplier": 0}}]}]},
        "MeterValues": {"evseId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [
            {"value": 1.5, "measurand": "Power.Active.Import"}]}]},
        "NotifyEVChargingNeeds": {"evseId": 1, "chargingNeeds": {
            "requestedEnergyTransfer": "DC", "departureTime": TS,
            "dcChargingParameters": {"evMaxCurrent": 100, "evMaxVoltage": 400, "evMaxPower": 5e4,
                                     "energyAmount": 3e4}}},
        "DataTransfer": {"vendorId": "x", "messageId": "m", "data": {"a": [1, 2]}},
        "SecurityEventNotification": {"type": "x", "timestamp": TS},
    },
}  # fmt: skip

ODD_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=12
) | st.sampled_from(["\ud800", "\udfff", "\x00", "\u202e", "𝔘𝔫𝔦", "é" * 40, "\ufeff"])
NASTY_STRINGS = st.sampled_from(
    ["inf", "-inf", "Infinity", "nan", "NaN", "1e400", "-1e400", "1e-400", "0x10", "", " ",
     "9" * 400, "2026-13-45T25:61:00Z", "yesterday", "2026-06-15T00:00:00+99:00"]
)  # fmt: skip
NUMBERS = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -1, 2**31, 2**53, 2**53 + 1, 1e308, -1e308, 5e-324, 1e-300])
)
LEAVES = NUMBERS | NASTY_STRINGS | ODD_TEXT | st.none() | st.booleans()
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=8,
)


FIXED_NASTY: list[Any] = [
    "inf", "-inf", "Infinity", "nan", "NaN", "1e400", "-1e400", "1e-400", "0x10", "", " ",
    "9" * 400, "2026-13-45T25:61:00Z", "yesterday", "2026-06-15T00:00:00+99:00", "\ud800",
    "\udfff", "\x00", "\u202e", "\ufeff", "é" * 40, 0, -1, 2**31, 2**53, 2**53 + 1, 2**70,
    1e308, -1e308, 5e-324, 1e-300, None, True, False, [], {}, [[[]]], {"a": {"b": [1]}},
]  # fmt: skip


def mutate(data: Any, rnd: random.Random, pool: list[Any]) -> Any:
    """Each leaf (and sometimes a whole branch) replaced with some probability."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            if rnd.random() < 0.1:
                continue  # a required field goes missing
            out[k] = mutate(v, rnd, pool)
        if rnd.random() < 0.1:
            out[str(rnd.choice(pool))] = rnd.choice(pool)  # an unknown field
        return out
    if isinstance(data, list):
        return [mutate(v, rnd, pool) for v in data]
    return rnd.choice(pool) if rnd.random() < 0.3 else data


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def make_frame(version: str, kind: int, rnd: random.Random, pool: list[Any]) -> str | bytes:
    """One frame as sent on the wire (text, sometimes bytes)."""
    uid = rnd.choice([f"u{rnd.randrange(10**6)}", "", "x" * 37, str(rnd.choice(pool))[:40]])
    actions = list(TEMPLATES[version])
    action = rnd.choice(actions)
    template = TEMPLATES[version][action]
    if kind <= 11:  # valid-looking CALL with mutated values
        text = json.dumps([2, uid, action, mutate(template, rnd, pool)])
    elif kind == 12:  # unknown / other version's action
        other = rnd.choice(["FlyToTheMoon", "TransactionEvent", "StartTransaction",
                            "Get15118EVCertificate", "", str(rnd.choice(pool))])  # fmt: skip
        text = json.dumps([2, uid, other, rnd.choice([{}, template, rnd.choice(pool)])])
    elif kind == 13:  # answers nobody asked for, unknown message types, bad shapes
        text = json.dumps(
            rnd.choice([[3, uid, {}], [4, uid, "GenericError", "x", {}], [5, uid], [2], [],
                        [2, uid, "Heartbeat"], [True, uid, "Heartbeat", {}],
                        [2.0, uid, "Heartbeat", {}], {"a": 1}, "text", 17])
        )  # fmt: skip
    elif kind == 14:  # non-finite or out-of-range literals in the raw text
        text = json.dumps([2, uid, action, template])
        literal = rnd.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" + "0" * 40])
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        i = rnd.choice(digits) if digits else len(text)
        text = text[:i] + literal + text[i + 1 :]
    elif kind == 15:  # deep nesting
        depth = rnd.choice([33, 100, 1000, 20000])
        text = f'[2, "deep", "DataTransfer", {{"vendorId": "x", "data": {nest(depth)}}}]'
    elif kind == 16:  # not JSON at all
        text = rnd.choice(["[2,", "{", "]", "null", "[2, 'u', 'H', {}]", str(rnd.choice(pool))])
    elif kind == 17:  # binary frame (utf-8 or not)
        body = json.dumps([2, uid, action, template]).encode()
        return rnd.choice([body, b"\xff\xfe" + body, b"\x00"])
    else:  # a valid CALL as is
        text = json.dumps([2, uid, action, template])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot go in a text frame: binary then
        return text.encode("utf-8", "surrogatepass")
    return text


@st.composite
def batches(draw, version: str, size: int = FRAMES_PER_BATCH) -> list[str | bytes]:
    """``size`` frames: hypothesis draws each frame's kind and a seed for its details, and a
    pool of odd values (numbers, strings, unicode, nested containers) per batch."""
    pool = draw(st.lists(VALUES, min_size=12, max_size=12)) + FIXED_NASTY
    raw = draw(st.binary(min_size=5 * size, max_size=5 * size))  # kind byte + 4 seed bytes
    return [
        make_frame(version, raw[i] % 20, random.Random(raw[i + 1 : i + 5]), pool)
        for i in range(0, 5 * size, 5)
    ]


class LiveServer:
    """A central system on 127.0.0.1 in its own thread (the fuzzer uses a sync client)."""

    def __init__(self, station, store: Store, clock: SimClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cs = CentralSystem(station, store, clock, response_timeout_s=2)
        self.bystander_sent = 0
        self.bystander_answered = 0
        self.bystander_errors: list[Any] = []
        self._stop = asyncio.Event()
        self._bystander: Any = None

    def run(self, coro, timeout_s: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self, bystander_id: str, version: str) -> None:
        self.thread.start()
        self.run(self.cs.start("127.0.0.1", 0))
        self._bystander = asyncio.run_coroutine_threadsafe(
            self._bystander_loop(bystander_id, version), self.loop
        )

    async def _bystander_loop(self, charger_id: str, version: str) -> None:
        proto = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
        async with websockets.connect(url(self.cs.port, charger_id), subprotocols=[proto]) as ws:
            await ws.send(json.dumps([2, "b-start", "StartTransaction", {
                "connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": TS}]
                if version == "1.6" else
                [2, "b-start", "TransactionEvent", {
                    "eventType": "Started", "timestamp": TS, "triggerReason": "CablePluggedIn",
                    "seqNo": 0, "transactionInfo": {"transactionId": "bystander"},
                    "evse": {"id": 1}}]))  # fmt: skip
            first = json.loads(await asyncio.wait_for(ws.recv(), BYSTANDER_ANSWER_S))
            tx = first[2].get("transactionId") if version == "1.6" else None
            n = 0
            while not self._stop.is_set():
                n += 1
                ts = f"2026-06-15T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
                if version == "1.6":
                    frame = [2, f"b{n}", "MeterValues", {"connectorId": 1, "transactionId": tx,
                             "meterValue": [{"timestamp": ts, "sampledValue": [
                                 {"value": str(n * 10), "unit": "Wh"}]}]}]  # fmt: skip
                else:
                    frame = [2, f"b{n}", "MeterValues", {"evseId": 1, "meterValue": [
                        {"timestamp": ts, "sampledValue": [{"value": n * 10.0}]}]}]  # fmt: skip
                self.bystander_sent += 1
                await ws.send(json.dumps(frame))
                answer = json.loads(await asyncio.wait_for(ws.recv(), BYSTANDER_ANSWER_S))
                if answer[:2] == [3, f"b{n}"]:
                    self.bystander_answered += 1
                else:
                    self.bystander_errors.append(answer)
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._bystander.result(10)
        self.run(self.cs.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def non_finite_values(store: Store) -> list[str]:
    """Stored REAL values that are not finite, and JSON columns with non-finite numbers."""
    bad = []
    tables = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for t in tables:
        for _, col, _ctype, *_ in store.conn.execute(f"PRAGMA table_info({t})"):
            n = store.conn.execute(
                f"SELECT COUNT(*) FROM {t} WHERE typeof({col}) = 'real' AND "
                f"NOT ({col} BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308)"
            ).fetchone()[0]
            if n:
                bad.append(f"{t}.{col}: {n}")
            if t != "message_log" and col.endswith("payload"):  # JSON kept by the store
                for (text,) in store.conn.execute(f"SELECT {col} FROM {t} WHERE {col} IS NOT NULL"):
                    try:
                        json.loads(
                            text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
                        )
                    except ValueError as e:
                        bad.append(f"{t}.{col}: {e}")
    return bad


@pytest.mark.slow
@pytest.mark.parametrize(
    ("version", "fuzzed", "bystander"),
    [("1.6", "GJDG-AC-01", "GJDG-AC-02"), ("2.0.1", "GJDG-AC-03", "GJDG-DC-01")],
)
def test_fuzzed_frames_never_crash_or_store_non_finite(
    station, tmp_path, caplog, version, fuzzed, bystander
):
    clock = SimClock(T0)
    store = Store(tmp_path / "fuzz.db", clock)
    records.set_id_token(store, "TAG")
    server = LiveServer(station, store, clock)
    server.start(bystander, version)
    proto = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    counts = {"frames": 0, "internal_errors": []}
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        ws = stack.enter_context(
            websockets.sync.client.connect(
                url(server.cs.port, fuzzed), subprotocols=[proto], max_size=None
            )
        )

        @settings(
            max_examples=BATCHES, deadline=None, database=None, derandomize=False,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(batches(version))
        def batch(sent: list[str | bytes]) -> None:
            for frame in sent:
                ws.send(frame)
            counts["frames"] += len(sent)
            sentinel = f"sentinel-{counts['frames']}"
            ws.send(json.dumps([2, sentinel, "Heartbeat", {}]))
            while True:  # everything the batch got, up to the sentinel's answer
                msg = json.loads(ws.recv(timeout=20))
                if msg[0] == 4 and msg[2] == "InternalError":
                    counts["internal_errors"].append(msg)
                if msg[0] == 3 and msg[1] == sentinel:
                    break
                if msg[0] == 2:  # a call from the server (none expected here): answer it
                    ws.send(json.dumps([4, msg[1], "NotImplemented", "", {}]))

        batch()
    took = time.monotonic() - t0
    assert counts["frames"] >= 10_000
    assert not counts["internal_errors"], counts["internal_errors"][:5]
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes[:5]]
    assert server.bystander_errors == [] and server.bystander_answered == server.bystander_sent
    assert server.bystander_sent > 10
    # every bystander sample is stored (energy register in kWh: n * 10 Wh)
    stored = store.conn.execute(
        "SELECT COUNT(*) FROM meter_samples WHERE charger_id = ? AND measurand = ?",
        (bystander, records.ENERGY_REGISTER),
    ).fetchone()[0]
    assert stored == server.bystander_sent
    assert non_finite_values(store) == []
    assert math.isfinite(took)
    print(f"{version}: {counts['frames']} frames in {took:.1f} s; bystander {stored} samples")
    store.close()
