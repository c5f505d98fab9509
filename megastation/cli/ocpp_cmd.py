"""Operator commands over the OCPP store: chargers, sessions, status, tags, commands, exports."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from megastation.cli import main
from megastation.cli.common import (
    Context,
    export_group,
    output_option,
    parse_range,
    parse_when,
    pass_ctx,
    range_options,
)
from megastation.reports import sessions as session_export
from megastation.store import commands, json_text, records

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _chargers_synced(ctx: Context) -> None:
    """Bring the station file's chargers into the store (the source of truth) first."""
    records.sync_station_chargers(ctx.store, ctx.station)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _emit(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json_text(rows, indent=2))
    else:
        _table(rows, columns)


# --------------------------------------------------------------------------- chargers


@main.group("chargers", invoke_without_command=True)
@json_option
@click.pass_context
def chargers_group(click_ctx: click.Context, as_json: bool) -> None:
    """Chargers known to the station (lists them without a subcommand)."""
    if click_ctx.invoked_subcommand is None:
        ctx: Context = click_ctx.obj
        _chargers_synced(ctx)
        rows = records.list_chargers(ctx.store)
        for r in rows:
            r.pop("password_hash", None)
            r.pop("boot_payload", None)
        _emit(
            rows,
            [
                "id",
                "registration",
                "ocpp_version",
                "vendor",
                "model",
                "firmware_version",
                "connected",
                "last_seen_at",
            ],
            as_json,
        )


@chargers_group.command("set-password")
@click.argument("charger_id")
@click.option("--password", help="The new password (prompted twice when left out).")
@pass_ctx
def set_password(ctx: Context, charger_id: str, password: str | None) -> None:
    """Set the HTTP Basic password a charger must present (security profile 1/2)."""
    from ocpp_central.auth import hash_password  # lazy: ocpp_central is for the server

    _chargers_synced(ctx)
    if records.get_charger(ctx.store, charger_id) is None:  # before asking for a password
        raise click.ClickException(f"no charger {charger_id!r}")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.BadParameter("at least 8 characters", param_hint="--password")
    if not records.set_password_hash(ctx.store, charger_id, hash_password(password)):
        raise click.ClickException(f"no charger {charger_id!r}")
    click.echo(f"{charger_id}: password set")


@chargers_group.command("accept")
@click.argument("charger_id")
@click.option("--kind", type=click.Choice(["AC", "DC"], case_sensitive=False), help="[default: AC]")
@click.option(
    "--max-power-kw",
    type=click.FloatRange(0.1, 1e4),
    help="The charger's power [kW; default: the station's smallest charger of its kind].",
)
@click.option("--connectors", type=click.IntRange(1, 64), help="[default: as --max-power-kw]")
@pass_ctx
def accept(
    ctx: Context,
    charger_id: str,
    kind: str | None,
    max_power_kw: float | None,
    connectors: int | None,
) -> None:
    """Accept an auto-registered (Pending) charger.

    The control loop then steers it like a charger of the station file (fail-safe and
    charging profiles, its sessions in the plan), rated as given here or like the
    station's smallest charger of its kind.
    """
    _chargers_synced(ctx)
    if max_power_kw is not None and not math.isfinite(max_power_kw):
        raise click.BadParameter("must be finite", param_hint="--max-power-kw")
    if not records.accept_charger(
        ctx.store, charger_id, kind=kind, max_power_kw=max_power_kw, connectors=connectors
    ):
        raise click.ClickException(f"no charger {charger_id!r}")
    click.echo(f"{charger_id}: Accepted (it is told at its next BootNotification)")


# --------------------------------------------------------------------------- sessions / status


@main.command("sessions")
@click.option("--from", "start", help="Sessions starting at or after (ISO; local if no zone).")
@click.option("--to", "end", help="Sessions starting before (ISO; local if no zone).")
@click.option("--charger", help="Only this charger.")
@json_option
@pass_ctx
def sessions(
    ctx: Context, start: str | None, end: str | None, charger: str | None, as_json: bool
) -> None:
    """Charging sessions (transactions) with their energy in kWh."""
    rows = session_export.session_rows(ctx.store, *parse_range(start, end, ctx.station))
    if charger:
        rows = [r for r in rows if r["charger_id"] == charger]
    _emit(
        rows,
        [
            "transaction_id",
            "charger_id",
            "connector_id",
            "id_token",
            "start_time_utc",
            "stop_time_utc",
            "energy_kwh",
            "stop_reason",
            "state",
        ],
        as_json,
    )


# Sections that other command modules append to `status`: key -> (data, print).
_STATUS_SECTIONS: dict[str, tuple[Callable[[Context], Any], Callable[[Any], None]]] = {}


def add_status_section(
    key: str, data: Callable[[Context], Any], show: Callable[[Any], None]
) -> None:
    """Append a section to `megastation status`: ``data(ctx)`` gives its plain data (under
    ``key`` in `status --json`), ``show(data)`` prints it after the connector table."""
    _STATUS_SECTIONS[key] = (data, show)


STATUS_COLUMNS = [
    "charger_id",
    "connected",
    "registration",
    "connector_id",
    "status",
    "error_code",
    "transaction_id",
    "energy_kwh",
    "power_kw",
    "soc_frac",
]


def connector_status_rows(ctx: Context) -> list[dict[str, Any]]:
    """One row per charger and connector (a charger without status yet: one row, None)."""
    store = ctx.store
    _chargers_synced(ctx)
    chargers = {c["id"]: c for c in records.list_chargers(store)}
    conns = records.connector_statuses(store)
    open_tx = {(t.charger_id, t.connector_id): t for t in records.open_transactions(store)}
    rows = []
    for cid, c in chargers.items():
        mine = [x for x in conns if x["charger_id"] == cid] or [
            {"connector_id": None, "status": None, "error_code": None}
        ]
        for x in mine:
            t = open_tx.get((cid, x["connector_id"]))
            rows.append(
                {
                    "charger_id": cid,
                    "connected": bool(c["connected"]),
                    "registration": c["registration"],
                    "connector_id": x["connector_id"],
                    "status": x["status"],
                    "error_code": x["error_code"],
                    "transaction_id": t.transaction_id if t else None,
                    "energy_kwh": round(t.energy_kwh, 3) if t else None,
                    "power_kw": t.power_kw if t else None,
                    "soc_frac": t.soc_frac if t else None,
                }
            )
    return rows


@main.command("status")
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """What is connected, each connector's status and the sessions in progress.

    With --json one object: {"connectors": [one row per charger and connector], and one
    key per further section, e.g. "control": the control loop's last decision}.
    """
    rows = connector_status_rows(ctx)
    sections = {key: data(ctx) for key, (data, _show) in _STATUS_SECTIONS.items()}
    if as_json:
        click.echo(json_text({"connectors": rows, **sections}, indent=2))
        return
    _table(rows, [c for c in STATUS_COLUMNS if c != "registration"])
    for key, (_data, show) in _STATUS_SECTIONS.items():
        show(sections[key])


# --------------------------------------------------------------------------- tags


@main.group("tags", invoke_without_command=True)
@json_option
@click.pass_context
def tags_group(click_ctx: click.Context, as_json: bool) -> None:
    """Id tokens (RFID cards, app tokens) and their status (lists them without a subcommand)."""
    if click_ctx.invoked_subcommand is None:
        _emit(
            records.list_id_tokens(click_ctx.obj.store),
            ["id_token", "status", "expiry", "parent_id_token", "note"],
            as_json,
        )


@tags_group.command("add")
@click.argument("id_token")
@click.option(
    "--status",
    type=click.Choice(records.ID_TOKEN_STATUSES),
    default="Accepted",
    show_default=True,
    help="Authorisation status.",
)
@click.option("--expiry", help="Expiry (ISO; local if no zone).")
@click.option("--parent", help="Parent (group) id token.")
@click.option("--note", help="Free text, e.g. the owner.")
@pass_ctx
def tags_add(
    ctx: Context,
    id_token: str,
    status: str,
    expiry: str | None,
    parent: str | None,
    note: str | None,
) -> None:
    """Add or update an id token."""
    records.set_id_token(
        ctx.store,
        id_token,
        status,
        expiry=parse_when(expiry, ctx.station, option="--expiry"),
        parent_id_token=parent,
        note=note,
    )
    click.echo(f"{id_token}: {status}")


@tags_group.command("block")
@click.argument("id_token")
@pass_ctx
def tags_block(ctx: Context, id_token: str) -> None:
    """Block an id token."""
    records.set_id_token(ctx.store, id_token, "Blocked")
    click.echo(f"{id_token}: Blocked")


@tags_group.command("remove")
@click.argument("id_token")
@pass_ctx
def tags_remove(ctx: Context, id_token: str) -> None:
    """Remove an id token (it becomes Invalid)."""
    if not records.remove_id_token(ctx.store, id_token):
        raise click.ClickException(f"no tag {id_token!r}")
    click.echo(f"{id_token}: removed")


# --------------------------------------------------------------------------- commands


@main.group("command", invoke_without_command=True)
@json_option
@click.pass_context
def command_group(click_ctx: click.Context, as_json: bool) -> None:
    """Commands to chargers and their outcomes (lists recent ones without a subcommand)."""
    if click_ctx.invoked_subcommand is None:
        commands.expire_pending(click_ctx.obj.store)
        _emit(
            commands.list_commands(click_ctx.obj.store),
            [
                "id",
                "charger_id",
                "action",
                "source",
                "status",
                "error",
                "created_at",
                "finished_at",
            ],
            as_json,
        )


@command_group.command("send")
@click.argument("charger_id")
@click.argument("action")
@click.argument("payload", default="{}")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the outcome (0: queue and return).",
)
@click.option(
    "--expire-after",
    "expire_s",
    type=click.FloatRange(min=0, min_open=True),
    default=commands.DEFAULT_EXPIRY_S,
    show_default=True,
    help="Seconds the command may wait for a server to send it; then it is expired.",
)
@pass_ctx
def command_send(
    ctx: Context, charger_id: str, action: str, payload: str, wait_s: float, expire_s: float
) -> None:
    """Queue ACTION (e.g. Reset) for CHARGER_ID with a snake_case JSON PAYLOAD.

    The charger, the action (one a server sends in the charger's OCPP version, either
    version before its first boot) and the payload (the OCPP request schema) are checked
    before anything is queued. The running `megastation serve` picks it up and records
    the outcome: accepted, rejected, timeout, offline or error; a command no server sent
    within --expire-after seconds ends expired. Exit code 0 only when accepted (or with
    --wait 0, queued); 1 for any other outcome, including still pending or sent when the
    wait ends. Example: megastation command send GJDG-AC-01 Reset '{"type": "Soft"}'
    """
    try:
        body = json.loads(payload)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="PAYLOAD") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must be a JSON object", param_hint="PAYLOAD")
    _chargers_synced(ctx)
    try:
        from ocpp_central.protocol import payload_problem  # lazy: the ocpp schemas

        commands.check_command(ctx.store, charger_id, action, body, payload_problem=payload_problem)
    except commands.CommandError as e:
        raise click.BadParameter(e.message, param_hint=e.argument) from None
    cid = commands.enqueue_command(ctx.store, charger_id, action, body, expires_after_s=expire_s)
    click.echo(f"command {cid} queued")
    if wait_s == 0:
        return
    deadline = time.monotonic() + wait_s
    row = commands.get_command(ctx.store, cid)
    while row["status"] in commands.OPEN_STATUSES and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        commands.expire_pending(ctx.store)
        row = commands.get_command(ctx.store, cid)
    if row["status"] == "pending":
        click.echo(
            f"command {cid}: still pending after {wait_s:g} s: no server picked it up "
            f"(is `megastation serve` running?); it expires at {row['expires_at']}",
            err=True,
        )
        raise SystemExit(1)
    if row["status"] == "sent":
        click.echo(
            f"command {cid}: sent, no outcome after {wait_s:g} s (see `megastation command` later)",
            err=True,
        )
        raise SystemExit(1)
    click.echo(
        f"command {cid}: {row['status']}"
        + (f" {json_text(row['response'])}" if row["response"] else "")
        + (f" ({row['error']})" if row["error"] else "")
    )
    if row["status"] != commands.ACCEPTED:
        raise SystemExit(1)


# --------------------------------------------------------------------------- exports


_export = export_group()


@_export.command("sessions")
@output_option
@range_options
@pass_ctx
def export_sessions(ctx: Context, output: Path, start: str | None, end: str | None) -> None:
    """Charging sessions to CSV (energy_kwh, meter_start_wh, ...)."""
    n = session_export.export_sessions(ctx.store, output, *parse_range(start, end, ctx.station))
    click.echo(f"{output}: {n} sessions")


@_export.command("meter-values")
@output_option
@range_options
@pass_ctx
def export_meter_values(ctx: Context, output: Path, start: str | None, end: str | None) -> None:
    """Meter values to CSV (power_kw, energy_register_kwh, soc_percent, ...)."""
    n = session_export.export_meter_values(ctx.store, output, *parse_range(start, end, ctx.station))
    click.echo(f"{output}: {n} rows")
