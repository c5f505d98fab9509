"""`serve` with ``[weather]``: the feed runs beside the central system and the
controller plans with the fetched forecast (issue #12)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from megastation.app.serve import serve
from megastation.core.config import WeatherFeedConfig
from megastation.store.forecasts import latest_weather, load_issued
from tests.conftest import T0
from tests.control.test_weather_feed import TIMEOUT_S, Provider


async def test_serve_runs_the_weather_feed(station, store, clock):
    provider = Provider()
    try:
        cfg = WeatherFeedConfig(url=provider.url, timeout_s=2.0)
        st = dataclasses.replace(station, weather=cfg)
        task = asyncio.create_task(serve(st, store, clock, "127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        end = loop.time() + TIMEOUT_S
        while latest_weather(store, before=clock.now()) is None:
            assert not task.done(), task.exception()
            assert loop.time() < end, "no weather forecast stored"
            await asyncio.sleep(0.02)
        assert provider.queries  # fetched from the configured URL
        issued = load_issued(store, T0, T0.replace(hour=23))
        assert len(issued) and (issued["issued_at"] == T0).all()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        provider.close()
