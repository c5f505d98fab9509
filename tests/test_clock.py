"""The simulated clock wakes sleepers in time order without real waiting."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.conftest import T0


async def test_sim_clock_wakes_sleepers_in_order(clock):
    woke = []

    async def sleeper(name, seconds):
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 120), ("a", 60), ("c", 3600))]
    await asyncio.sleep(0)
    await clock.advance(90)
    assert woke == [("a", T0 + timedelta(seconds=60))]
    await clock.advance(7200)
    assert [n for n, _ in woke] == ["a", "b", "c"]
    assert clock.now() == T0 + timedelta(seconds=7290)
    await asyncio.gather(*tasks)
