"""Random frames thrown at a connection: every CALL gets exactly one answer, no crash."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megastation.core.clock import SimClock
from megastation.core.config import load_station, seeds_dir
from megastation.store import Store
from ocpp_central.server import CentralSystem
from tests.conftest import T0
from tests.ocpp_clients import url

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
actions = st.sampled_from(
    [
        "Heartbeat",
        "BootNotification",
        "StartTransaction",
        "MeterValues",
        "StopTransaction",
        "StatusNotification",
        "TransactionEvent",
        "Authorize",
        "Nope",
        "",
    ]
)
calls = st.builds(
    lambda uid, a, p: json.dumps([2, uid, a, p]),
    st.text(min_size=1, max_size=10),
    actions,
    st.dictionaries(
        st.sampled_from(
            [
                "connectorId",
                "idTag",
                "meterStart",
                "timestamp",
                "meterValue",
                "status",
                "errorCode",
                "transactionId",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
frames = st.one_of(
    calls,
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.builds(
        lambda t, rest: json.dumps([t, *rest]),
        st.integers(-1, 6),
        st.lists(json_values, max_size=4),
    ),
)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batch=st.lists(frames, min_size=1, max_size=12), proto=st.sampled_from(["ocpp1.6", "ocpp2.0.1"])
)
def test_random_frames_never_break_the_connection(tmp_path_factory, batch, proto):
    async def scenario() -> None:
        store = Store(tmp_path_factory.mktemp("db") / "m.db", SimClock(T0))
        cs = CentralSystem(
            load_station(seeds_dir() / "gwangju-donggu.toml"),
            store,
            SimClock(T0),
            response_timeout_s=1,
        )
        await cs.start("127.0.0.1", 0)
        try:
            async with websockets.connect(url(cs.port, "GJDG-AC-01"), subprotocols=[proto]) as ws:
                for frame in batch:
                    await ws.send(frame)
                    try:
                        msg = json.loads(frame)
                    except ValueError:
                        msg = None
                    is_answer = (
                        isinstance(msg, list)
                        and len(msg) >= 1
                        and msg[0] in (3, 4)
                        and not isinstance(msg[0], bool)
                    )
                    if is_answer and _well_formed_answer(msg):
                        continue  # a CALLRESULT/CALLERROR is not answered
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 3))
                    assert answer[0] in (3, 4)
                await ws.send('[2,"last","Heartbeat",{}]')
                assert json.loads(await asyncio.wait_for(ws.recv(), 3))[:2] == [3, "last"]
        finally:
            await cs.close()
            store.close()

    asyncio.run(scenario())


def _well_formed_answer(msg: list) -> bool:
    if msg[0] == 3:
        return len(msg) == 3 and isinstance(msg[1], str) and isinstance(msg[2], dict)
    return len(msg) == 5 and isinstance(msg[1], str)
