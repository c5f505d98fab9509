"""The simulated clock wakes sleepers in time order without real waiting."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from megastation.core.clock import ScaledClock
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


def test_scaled_clock_stands_still_while_held(monkeypatch):
    # The demo holds its 1440x clock while the controller solves: a 50 ms solve is
    # more than a station minute at that speed, and nothing at 1x. (Wall time faked.)
    from megastation.core import clock as clock_module

    wall = [100.0]
    monkeypatch.setattr(clock_module.time, "monotonic", lambda: wall[0])
    c = clock_module.ScaledClock(T0, 1440)
    wall[0] += 1.0
    assert c.now() == T0 + timedelta(minutes=24)
    with c.hold():
        wall[0] += 0.5
        with c.hold():  # nested: one hold
            wall[0] += 0.5
        assert c.now() == T0 + timedelta(minutes=24)
        wall[0] += 0.5
    assert c.now() == T0 + timedelta(minutes=24)  # resumes where it stopped
    wall[0] += 0.25
    assert c.now() == T0 + timedelta(minutes=30)


def test_scaled_clock_created_held_starts_at_release(monkeypatch):
    # The demo's chargers boot while station time stands at ``start``. (Wall time faked.)
    from megastation.core import clock as clock_module

    wall = [100.0]
    monkeypatch.setattr(clock_module.time, "monotonic", lambda: wall[0])
    c = clock_module.ScaledClock(T0, 1440, held=True)
    wall[0] += 5.0
    assert c.now() == T0
    with c.hold():  # a hold inside the initial one changes nothing
        wall[0] += 1.0
    assert c.now() == T0
    c.release()
    assert c.now() == T0
    wall[0] += 1.0
    assert c.now() == T0 + timedelta(minutes=24)
    c.release()  # twice: no-op
    assert c.now() == T0 + timedelta(minutes=24)


async def test_scaled_clock_sleep_begun_while_held_waits_for_release():
    c = ScaledClock(T0, 1e6, held=True)
    sleeper = asyncio.create_task(c.sleep(1.0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not sleeper.done()
    c.release()
    await asyncio.wait_for(sleeper, 2.0)
