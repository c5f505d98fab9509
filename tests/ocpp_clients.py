"""OCPP client charge points for tests: the ``ocpp`` library's 1.6 and 2.0.1 clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import websockets
from ocpp.v16 import ChargePoint as CP16
from ocpp.v201 import ChargePoint as CP201

RESPONSE_TIMEOUT_S = 3.0  # one factor for the client side of every OCPP test


def url(
    port: int,
    charger_id: str,
    *,
    password: str | None = None,
    prefix: str = "/ocpp",
    scheme: str = "ws",
) -> str:
    auth = f"{quote(charger_id, safe='')}:{quote(password, safe='')}@" if password else ""
    return f"{scheme}://{auth}127.0.0.1:{port}{prefix}/{quote(charger_id, safe='')}"


@contextlib.asynccontextmanager
async def connect_charger(
    port: int,
    charger_id: str,
    version: str = "1.6",
    *,
    password: str | None = None,
    cp_class: type | None = None,
    ssl: ssl_module.SSLContext | None = None,
    **cp_kwargs: Any,
) -> AsyncIterator[Any]:
    """Open a WebSocket to the central system and run an ``ocpp`` client charge point on it.

    ``cp_class`` may be a subclass of ``ocpp.v16.ChargePoint`` / ``ocpp.v201.ChargePoint``
    with ``@on`` handlers for server-initiated calls. With ``ssl`` (a client context that
    trusts the server's certificate) it connects over ``wss://``.
    """
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    cls = cp_class or (CP16 if version == "1.6" else CP201)
    uri = url(port, charger_id, password=password, scheme="wss" if ssl else "ws")
    ws = await websockets.connect(uri, subprotocols=[subprotocol], ssl=ssl)
    cp = cls(charger_id, ws, response_timeout=RESPONSE_TIMEOUT_S, **cp_kwargs)
    task = asyncio.create_task(cp.start())
    try:
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await task
        await ws.close()
