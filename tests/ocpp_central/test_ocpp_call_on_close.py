"""A call pending when the charger hangs up ends as `offline`, with no stray exception."""

from __future__ import annotations

import asyncio
import gc

from websockets.protocol import State

from megastation.store import commands
from ocpp_central.server import CentralSystem
from tests.ocpp_central.test_ocpp_faults import ask, raw
from tests.waiting import wait_until


async def test_call_in_flight_when_charger_hangs_up_is_offline_without_warning(
    central: CentralSystem,
):
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        ws = await raw(central)
        await ask(ws, [2, "1", "Heartbeat", {}])
        # The charger starts the closing handshake but does not read on: the server's
        # connection stays CLOSING, so the call below waits in its send until TCP closes.
        ws.protocol.send_close(1000)
        ws.send_data()
        ws.transport.pause_reading()
        session = central.sessions["GJDG-AC-01"]
        await wait_until(lambda: session.ws.protocol.state is State.CLOSING, "server CLOSING")
        task = asyncio.create_task(central.call("GJDG-AC-01", "Reset", {"type": "Soft"}))
        # The call is in flight (its answer awaited), and stays so while the charger
        # does not read.
        await wait_until(lambda: session._pending is not None, "Reset in flight")
        assert not task.done()
        ws.transport.resume_reading()  # now it reads the server's close and hangs up
        outcome = await asyncio.wait_for(task, 5)
        assert outcome.status == commands.OFFLINE
        await wait_until(lambda: not central.is_connected("GJDG-AC-01"), "disconnected")
        gc.collect()  # an unretrieved future exception is reported when it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert [c.get("message") for c in errors] == []
