"""Security profile 2: OCPP over TLS (wss://) with HTTP Basic auth, on real sockets.

A throw-away CA and server certificate for 127.0.0.1 are made with ``trustme``; the
station file names them as ``[server] tls_cert`` / ``tls_key`` (relative to the file).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
import websockets
from click.testing import CliRunner
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from megastation.cli import main
from megastation.core.config import ConfigError, Station, load_station
from megastation.store import records
from ocpp_central.auth import hash_password
from ocpp_central.server import CentralSystem
from tests.ocpp_clients import connect_charger, url

PASSWORD = "s3cret:pw"


def station_file(tmp_path: Path, seed_path: Path, server_lines: str) -> Path:
    """The seed station with extra ``[server]`` lines, written beside the test's files."""
    text = seed_path.read_text(encoding="utf-8").replace(
        "[server]\n", f"[server]\n{server_lines}", 1
    )
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_station(tmp_path: Path, seed_path: Path, ca: trustme.CA) -> Station:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    path = station_file(tmp_path, seed_path, 'tls_cert = "cert.pem"\ntls_key = "key.pem"\n')
    return load_station(path)


@pytest.fixture
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


async def test_boot_over_wss_with_basic_auth_and_refusals(
    tls_station: Station, store, clock, client_ssl: ssl.SSLContext
):
    assert tls_station.server.tls_cert == str(Path(tls_station.source).parent / "cert.pem")
    cs = CentralSystem(tls_station, store, clock, response_timeout_s=2, validate_responses=True)
    await cs.start("127.0.0.1", 0)  # registers the station's chargers
    try:
        for charger_id in ("GJDG-DC-04", "GJDG-AC-03"):
            assert records.set_password_hash(store, charger_id, hash_password(PASSWORD))
        async with connect_charger(
            cs.port, "GJDG-DC-04", "1.6", password=PASSWORD, ssl=client_ssl
        ) as cp:
            boot = await cp.call(
                call16.BootNotification(
                    charge_point_model="EVAR-100", charge_point_vendor="Chaevi"
                ),
                suppress=False,
            )
            assert boot.status == "Accepted"
            assert cs.is_connected("GJDG-DC-04")
        async with connect_charger(
            cs.port, "GJDG-AC-03", "2.0.1", password=PASSWORD, ssl=client_ssl
        ) as cp:
            boot = await cp.call(
                call201.BootNotification(
                    charging_station={"model": "AC7", "vendor_name": "SK Signet"},
                    reason="PowerUp",
                ),
                suppress=False,
            )
            assert boot.status == "Accepted"
        assert records.get_charger(store, "GJDG-DC-04")["vendor"] == "Chaevi"

        # wrong password over TLS: the TLS handshake succeeds, HTTP Basic auth does not
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(
                url(cs.port, "GJDG-DC-04", password="wrong", scheme="wss"),
                subprotocols=["ocpp1.6"],
                ssl=client_ssl,
            )
        assert info.value.response.status_code == 401

        # plain ws:// to the TLS port never gets a WebSocket
        with pytest.raises((websockets.InvalidHandshake, OSError, EOFError)):
            await websockets.connect(
                url(cs.port, "GJDG-DC-04", password=PASSWORD),
                subprotocols=["ocpp1.6"],
                open_timeout=3,
            )
        assert not cs.is_connected("GJDG-DC-04")
    finally:
        await cs.close()


def test_missing_tls_files_are_named_at_load_and_at_serve(tmp_path: Path, seed_path: Path):
    path = station_file(tmp_path, seed_path, 'tls_cert = "nope.pem"\ntls_key = "key.pem"\n')
    with pytest.raises(
        ConfigError, match=r"station\.toml: server\.tls_cert: no such file: .*nope\.pem"
    ):
        load_station(path)
    (tmp_path / "nope.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"server\.tls_key: no such file: .*key\.pem"):
        load_station(path)
    result = CliRunner().invoke(
        main, ["--config", str(path), "--db", str(tmp_path / "db.sqlite"), "serve", "--port", "0"]
    )
    assert result.exit_code == 1
    assert "server.tls_key: no such file" in result.output
    assert "Traceback" not in result.output


def test_unloadable_tls_files_are_named_at_serve(tmp_path: Path, seed_path: Path, ca: trustme.CA):
    db = str(tmp_path / "db.sqlite")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    one, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("localhost")
    one.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    other.private_key_pem.write_to_path(tmp_path / "other-key.pem")
    for lines, field in (
        ('tls_cert = "garbage.pem"\ntls_key = "other-key.pem"\n', "server.tls_cert"),
        ('tls_cert = "cert.pem"\ntls_key = "garbage.pem"\n', "server.tls_key"),
        ('tls_cert = "cert.pem"\ntls_key = "other-key.pem"\n', "server.tls_key"),  # not its key
    ):
        path = station_file(tmp_path, seed_path, lines)
        result = CliRunner().invoke(
            main, ["--config", str(path), "--db", db, "serve", "--port", "0"]
        )
        assert result.exit_code == 1, result.output
        assert f"station.toml: {field}: cannot load" in result.output
        assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
