"""Modbus TCP devices served in the test process (see sunspec_server.py)."""

from __future__ import annotations

import pytest

from tests.devices.sunspec_server import BatteryServer, InverterServer, MeterServer


@pytest.fixture
async def servers():
    """Start servers with ``await servers(ServerObject)``; all are stopped at the end."""
    started = []

    async def start(server):
        await server.start()
        started.append(server)
        return server

    yield start
    for s in started:
        await s.stop()


@pytest.fixture
async def battery_server(servers, clock):
    return await servers(BatteryServer(clock, capacity_kwh=500, max_kw=250, soc_frac=0.5))


@pytest.fixture
async def inverter_server(servers):
    return await servers(InverterServer(lambda: 80.0))


@pytest.fixture
async def meter_server(servers):
    return await servers(MeterServer(lambda: 20.0))
