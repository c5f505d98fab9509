"""`[web]` in the station file, `megastation users`, and `serve` starting the console."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import ConfigError, parse_station
from megastation.store import Store
from megastation.store import web as wr
from ocpp_central.auth import verify_password

TIMEOUT_S = 60.0


def run(db: Path, *args: str, input: str | None = None):
    result = CliRunner().invoke(main, ["--db", str(db), *args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


def test_web_section_defaults_and_bad_values(seed_path):
    data = tomllib.loads(seed_path.read_text())
    st = parse_station(data, "s.toml")
    assert (st.web.host, st.web.port) == ("127.0.0.1", 8080)
    data.pop("web")
    assert parse_station(data, "s.toml").web.host == "127.0.0.1"  # loopback unless configured
    for key, value in (("port", 70000), ("port", "x"), ("session_hours", 0), ("colour", 1)):
        bad = tomllib.loads(seed_path.read_text())
        bad["web"][key] = value
        with pytest.raises(ConfigError, match=rf"s\.toml: web\.{key}"):
            parse_station(bad, "s.toml")


def test_users_add_list_token_remove(tmp_path):
    db = tmp_path / "m.db"
    r = run(db, "users", "add", "alice", "--role", "operator", "--password", "long enough")
    assert r.exit_code == 0 and "alice: operator (added)" in r.output
    r = run(db, "users", "add", "vic", "--role", "viewer", input="pw-viewer-1\npw-viewer-1\n")
    assert r.exit_code == 0, r.output
    r = run(db, "users", "token", "alice", "--label", "grafana")
    assert r.exit_code == 0 and r.output.startswith("ms_")
    listing = run(db, "users").output
    assert "alice  operator  tokens 1" in listing and "vic  viewer  tokens 0" in listing
    store = Store(db)
    try:
        assert verify_password("long enough", wr.get_user(store, "alice")["password_hash"])
    finally:
        store.close()
    r = run(db, "users", "add", "alice", "--role", "viewer", "--password", "another one")
    assert "alice: viewer (updated)" in r.output
    assert run(db, "users", "remove", "vic").exit_code == 0
    r = run(db, "users", "remove", "vic")
    assert r.exit_code == 1 and "no user 'vic'" in r.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("users", "add", "x", "--role", "admin", "--password", "long enough"), "--role"),
        (("users", "add", "x", "--role", "viewer", "--password", "short"), "--password"),
        (("users", "add", "a b", "--role", "viewer", "--password", "long enough"), "NAME"),
        (("users", "token", "nobody"), "no user 'nobody'"),
    ],
)
def test_users_bad_input_is_named(tmp_path, args, words):
    r = run(tmp_path / "m.db", *args)
    assert r.exit_code != 0 and words in r.output


@pytest.mark.slow
def test_serve_starts_the_console_beside_the_ocpp_server(tmp_path):
    env = {**os.environ, "MEGASTATION_DB": str(tmp_path / "m.db")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from megastation.cli import main; main()", "serve", "--port", "0",
         "--web-port", "0"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT_S
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"console on (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        assert url, "serve did not log the console URL"
        with urllib.request.urlopen(url + "healthz", timeout=10) as r:
            assert r.read() == b"ok\n"
        with urllib.request.urlopen(url + "login", timeout=10) as r:
            assert b"megastation" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT_S)
