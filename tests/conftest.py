"""Shared fixtures: a fixed clock, a temporary SQLite file, the seed station."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from megastation.core.clock import SimClock
from megastation.core.config import Station, load_station, seeds_dir
from megastation.store import Store

# 2026-06-15 00:00 UTC is 09:00 in Seoul, a summer morning.
T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)


@pytest.fixture
def seed_path() -> Path:
    return seeds_dir() / "gwangju-donggu.toml"


@pytest.fixture
def station(seed_path: Path) -> Station:
    return load_station(seed_path)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "megastation.db"


@pytest.fixture
def store(db_path: Path, clock: SimClock) -> Store:
    s = Store(db_path, clock)
    yield s
    s.close()


# --------------------------------------------------------------------------- OCPP central system


@pytest.fixture
def ocpp_events() -> list:
    """Domain events the `central` fixture's server published, in order."""
    return []


@pytest.fixture
async def central(station: Station, store: Store, clock: SimClock, ocpp_events: list):
    """A CentralSystem on 127.0.0.1 (free port, `central.port`) with the seed station.

    Connect chargers with ``tests.ocpp_clients.connect_charger(central.port, id, version)``.
    """
    from ocpp_central.server import CentralSystem

    cs = CentralSystem(
        station,
        store,
        clock,
        on_event=ocpp_events.append,
        response_timeout_s=2,
        validate_responses=True,
    )
    await cs.start("127.0.0.1", 0)
    yield cs
    await cs.close()
