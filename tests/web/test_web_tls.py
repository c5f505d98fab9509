"""The console over TLS, from the OCPP server's [server] tls_cert / tls_key."""

from __future__ import annotations

import ssl

import httpx
import trustme

from megastation.core.config import load_station
from megastation.web.app import WebServer
from megastation.web.auth import add_user
from tests.web.conftest import PASSWORD


async def test_the_console_serves_https_with_a_secure_cookie(tmp_path, seed_path, store, clock):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    text = seed_path.read_text(encoding="utf-8").replace(
        "[server]\n", '[server]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n', 1
    )
    (tmp_path / "station.toml").write_text(text, encoding="utf-8")
    station = load_station(tmp_path / "station.toml")
    add_user(store, "alice", "operator", PASSWORD)
    web = await WebServer(station, store, clock, port=0).start()
    try:
        assert web.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(ctx)
        async with httpx.AsyncClient(base_url=web.url, verify=ctx, timeout=10) as c:
            r = await c.post("/login", data={"name": "alice", "password": PASSWORD})
            assert r.status_code == 303
            assert "secure" in r.headers["set-cookie"].lower()
            assert (await c.get("/api/v1/me")).json()["name"] == "alice"
        async with httpx.AsyncClient(base_url=web.url.replace("https", "http"), timeout=10) as c:
            try:
                await c.get("/healthz")
                plain = True
            except httpx.HTTPError:
                plain = False
        assert not plain  # no plain-HTTP answers on the TLS port
    finally:
        await web.stop()
