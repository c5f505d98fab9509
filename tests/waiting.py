"""Waiting on real sockets: poll a condition with a bounded timeout, never a fixed sleep.

Timeouts scale with ``MEGASTATION_TEST_TIMEOUT_FACTOR`` (default 1) for slow machines, as
websockets' own tests do.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

TIMEOUT_FACTOR = float(os.environ.get("MEGASTATION_TEST_TIMEOUT_FACTOR", "1"))
POLL_S = 0.005


async def wait_until(condition: Callable[[], object], what: str = "", *, timeout_s: float = 5.0):
    """Return ``condition()``'s first truthy value; AssertionError after ``timeout_s`` [s]."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s * TIMEOUT_FACTOR
    while True:
        value = condition()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(
                f"not within {timeout_s * TIMEOUT_FACTOR:g} s: {what or condition}"
            )
        await asyncio.sleep(POLL_S)


def command_settled(store, command_id: int) -> bool:
    """True once a queued operator command is no longer pending or sent."""
    from megastation.store import commands

    return commands.get_command(store, command_id)["status"] not in ("pending", "sent")
