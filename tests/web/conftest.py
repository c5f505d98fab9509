"""Fixtures of the web tests: the console and API served beside a real central system."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from megastation.web.app import WebServer
from megastation.web.auth import add_user, new_api_token

PASSWORD = "correct horse"


@pytest.fixture
def notified() -> list:
    """Events the web app sent to the controller's sink (OperatorChanged)."""
    return []


@pytest.fixture
async def web(station, store, clock, central, notified):
    """The web server on 127.0.0.1 (free port) beside the ``central`` fixture's server,
    with an operator ``alice`` and a viewer ``vic`` (password :data:`PASSWORD`)."""
    add_user(store, "alice", "operator", PASSWORD)
    add_user(store, "vic", "viewer", PASSWORD)
    w = WebServer(station, store, clock, central=central, notify=notified.append, port=0, cache_s=0)
    await w.start()
    yield w
    await w.stop()


@pytest.fixture
async def client(web):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}", timeout=10) as c:
        yield c


async def login(client: httpx.AsyncClient, name: str) -> str:
    """Log ``client`` in (cookie kept); return the session's CSRF token."""
    r = await client.post("/login", data={"name": name, "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    me = await client.get("/api/v1/me")
    assert me.status_code == 200
    return me.json()["csrf_token"]


def bearer(store: Any, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_api_token(store, name)}"}
