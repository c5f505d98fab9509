"""What an operator types at the CLI: wrong charger, action or payload refused before
anything is queued; commands that nobody sends end (expired) instead of pending forever;
chargers of the station file usable before the server ever ran; one `status --json`
object; empty --from/--to ranges refused naming --to."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call_result as r16
from ocpp.v16.enums import Action as A16

from megastation.cli import main
from megastation.store import Store, commands, records
from ocpp_central.auth import verify_password
from tests.ocpp_clients import connect_charger


def run(db: Path, *args: str, input: str | None = None):
    result = CliRunner().invoke(main, ["--db", str(db), *args], input=input)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result


def set_version(db: Path, charger_id: str, version: str) -> None:
    s = Store(db)
    with s.conn:
        s.conn.execute("UPDATE chargers SET ocpp_version = ? WHERE id = ?", (version, charger_id))
    s.close()


def queued(db: Path) -> list[dict]:
    return json.loads(run(db, "command", "--json").output)


# --------------------------------------------------------------------------- command send


@pytest.mark.parametrize(
    ("args", "argument", "message"),
    [
        (("NOPE", "Reset", '{"type": "Soft"}'), "CHARGER_ID", "no charger 'NOPE'"),
        (("GJDG-AC-1", "Reset", '{"type": "Soft"}'), "CHARGER_ID", "did you mean 'GJDG-AC-01'"),
        (("GJDG-AC-01", "Frobnicate", "{}"), "ACTION", "'Frobnicate' is not a command"),
        (("GJDG-AC-01", "Rest", '{"type": "Soft"}'), "ACTION", "did you mean 'Reset'"),
        (("GJDG-AC-01", "Reset", "{}"), "PAYLOAD", "'type' is a required property"),
        (("GJDG-AC-01", "Reset", '{"type": "Sofft"}'), "PAYLOAD", "'Sofft' is not one of"),
        (("GJDG-AC-01", "Reset", "[1]"), "PAYLOAD", "must be a JSON object"),
        (("GJDG-AC-01", "Reset", "{type}"), "PAYLOAD", "not JSON"),
    ],
)
def test_command_send_refuses_what_the_server_could_only_fail(db_path, args, argument, message):
    result = run(db_path, "command", "send", *args)
    assert result.exit_code == 2, result.output
    assert argument in result.output and message in result.output, result.output
    assert "queued" not in result.output
    assert queued(db_path) == []


def test_command_send_checks_the_chargers_own_version(db_path):
    run(db_path, "chargers")  # the station file's chargers are in the store
    set_version(db_path, "GJDG-AC-01", "1.6")
    set_version(db_path, "GJDG-AC-03", "2.0.1")
    # Valid in 2.0.1 only: refused for the 1.6 charger, by its schema.
    result = run(db_path, "command", "send", "GJDG-AC-01", "Reset", '{"type": "Immediate"}')
    assert result.exit_code == 2 and "PAYLOAD" in result.output
    assert "'Immediate' is not one of ['Hard', 'Soft']" in result.output
    # A 1.6 action for a 2.0.1 charger.
    result = run(db_path, "command", "send", "GJDG-AC-03", "ChangeConfiguration", "{}")
    assert result.exit_code == 2 and "ACTION" in result.output and "OCPP 2.0.1" in result.output
    # Field names as the operator writes them (snake_case).
    result = run(
        db_path, "command", "send", "GJDG-AC-01", "GetCompositeSchedule", '{"duration": 1}'
    )
    assert "'connector_id' is a required property" in result.output
    assert queued(db_path) == []


def test_command_nobody_sends_ends_pending_with_exit_1_then_expires(db_path):
    result = run(
        db_path, "command", "send", "GJDG-AC-01", "Reset", '{"type": "Soft"}', "--wait", "0.3"
    )
    assert result.exit_code == 1
    assert "still pending after 0.3 s" in result.output and "megastation serve" in result.output
    result = run(
        db_path,
        "command",
        "send",
        "GJDG-AC-01",
        "Reset",
        '{"type": "Soft"}',
        "--wait",
        "2",
        "--expire-after",
        "0.2",
    )
    assert result.exit_code == 1
    assert "expired (no server sent it before" in result.output, result.output
    rows = queued(db_path)
    assert [r["status"] for r in rows] == ["expired", "pending"]
    assert rows[0]["finished_at"] is not None
    # --wait 0 queues and returns.
    result = run(
        db_path, "command", "send", "GJDG-AC-01", "Reset", '{"type": "Soft"}', "--wait", "0"
    )
    assert result.exit_code == 0 and result.output.strip().endswith("queued")


async def test_server_does_not_send_an_expired_command(central, store, clock):
    resets = []

    class CP(CP16):
        @on(A16.reset)
        def on_reset(self, type, **kw):
            resets.append(type)
            return r16.Reset(status="Accepted")

    async with connect_charger(central.port, "GJDG-AC-01", "1.6", cp_class=CP):
        old = commands.enqueue_command(
            store, "GJDG-AC-01", "Reset", {"type": "Hard"}, expires_after_s=30
        )
        clock.set(clock.now() + timedelta(seconds=31))  # nobody polled for that long
        fresh = commands.enqueue_command(store, "GJDG-AC-01", "Reset", {"type": "Soft"})
        await central.process_pending_commands()
        for _ in range(300):
            if commands.get_command(store, fresh)["status"] not in commands.OPEN_STATUSES:
                break
            await asyncio.sleep(0.01)
    assert commands.get_command(store, old)["status"] == commands.EXPIRED
    assert commands.get_command(store, fresh)["status"] == commands.ACCEPTED
    assert resets == ["Soft"]


# --------------------------------------------------------------------------- chargers, tags


def test_set_password_looks_the_charger_up_before_prompting(db_path):
    result = run(db_path, "chargers", "set-password", "NOPE", input="secret-pw\nsecret-pw\n")
    assert result.exit_code == 1
    assert "no charger 'NOPE'" in result.output and "Password" not in result.output


def test_set_password_works_before_the_server_ever_started(db_path, station):
    result = run(db_path, "chargers", "set-password", "GJDG-AC-01", input="secret-pw\nsecret-pw\n")
    assert result.exit_code == 0, result.output
    assert "GJDG-AC-01: password set" in result.output
    store = Store(db_path)
    try:
        records.register_station_chargers(store, station)  # what `serve` does at start
        stored = records.get_charger(store, "GJDG-AC-01")["password_hash"]
        assert verify_password("secret-pw", stored)
        assert len(records.list_chargers(store)) == len(station.chargers)
    finally:
        store.close()
    short = run(db_path, "chargers", "set-password", "GJDG-AC-01", "--password", "short")
    assert short.exit_code == 2 and "--password" in short.output


def test_station_chargers_sync_is_idempotent_and_keeps_connection_state(store, station):
    records.sync_station_chargers(store, station)
    records.set_connected(store, "GJDG-AC-01", True, store.now())
    records.accept_charger(store, "GJDG-AC-01")
    before = records.list_chargers(store)
    records.sync_station_chargers(store, station)  # the CLI, while the server runs
    assert records.list_chargers(store) == before
    assert records.get_charger(store, "GJDG-AC-01")["connected"]
    records.register_station_chargers(store, station)  # the server (re)starts
    assert not records.get_charger(store, "GJDG-AC-01")["connected"]


def test_removing_an_unknown_tag_says_so(db_path):
    result = run(db_path, "tags", "remove", "NOPE")
    assert result.exit_code == 1 and "no tag 'NOPE'" in result.output
    assert run(db_path, "tags", "add", "CARD-1").exit_code == 0
    result = run(db_path, "tags", "remove", "CARD-1")
    assert result.exit_code == 0 and "CARD-1: removed" in result.output
    assert run(db_path, "tags", "remove", "CARD-1").exit_code == 1


# --------------------------------------------------------------------------- status


def test_status_json_is_one_object_with_connectors_and_control(db_path, station):
    data = json.loads(run(db_path, "status", "--json").output)
    assert set(data) == {"connectors", "control"}
    assert {r["charger_id"] for r in data["connectors"]} == {c.id for c in station.chargers}
    assert {
        "charger_id",
        "connected",
        "registration",
        "connector_id",
        "status",
        "transaction_id",
        "energy_kwh",
    } <= set(data["connectors"][0])
    control = data["control"]
    assert control["grid_limit_kw"] == station.site.grid_import_limit_kw
    assert control["policy"] == station.site.policy and control["plan"] is None
    assert run(db_path, "limit", "--grid-kw", "250").exit_code == 0
    assert json.loads(run(db_path, "status", "--json").output)["control"]["grid_limit_kw"] == 250
    # control-status --json is the same section on its own; the table shows it too.
    alone = json.loads(run(db_path, "control-status", "--json").output)
    assert alone["grid_limit_kw"] == 250 and set(alone) == set(control)
    table = run(db_path, "status").output
    assert "GJDG-DC-01" in table and "grid limit 250 kW" in table


# --------------------------------------------------------------------------- --from / --to


@pytest.mark.parametrize(
    "command",
    [
        ("sessions",),
        ("export", "sessions", "-o", "{out}"),
        ("export", "meter-values", "-o", "{out}"),
        ("export", "energy-flows", "-o", "{out}"),
        ("export", "daily", "-o", "{out}"),
        ("export", "sessions-by-source", "-o", "{out}"),
        ("export", "dispatch", "-o", "{out}"),
    ],
)
@pytest.mark.parametrize("to", ["2026-06-01", "2026-06-15"])
def test_an_empty_from_to_range_is_refused_naming_to(db_path, tmp_path, command, to):
    out = tmp_path / "x.csv"
    args = [a.format(out=out) for a in command]
    result = run(db_path, *args, "--from", "2026-06-15", "--to", to)
    assert result.exit_code == 2, result.output
    assert "--to" in result.output and "is not after --from 2026-06-15" in result.output
    assert not out.exists()
    ok = run(db_path, *args, "--from", "2026-06-01", "--to", "2026-06-15")
    assert ok.exit_code == 0, ok.output


def test_forecast_start_is_parsed_like_every_other_time(db_path, tmp_path):
    naive, aware = tmp_path / "a.csv", tmp_path / "b.csv"
    for start, out in (("2026-07-02", naive), ("2026-07-02T00:00+09:00", aware)):
        result = run(db_path, "forecast", "--start", start, "--hours", "1", "-o", str(out))
        assert result.exit_code == 0, result.output
    assert naive.read_text() == aware.read_text()
    assert naive.read_text().splitlines()[1].startswith("2026-07-02T00:00:00+09:00")
    bad = run(db_path, "forecast", "--start", "02/07/2026", "-o", str(naive))
    assert bad.exit_code == 2 and "--start" in bad.output and "not an ISO date" in bad.output
