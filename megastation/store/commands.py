"""Server-to-charger commands: the durable command table and command outcomes.

An operator (or any process) queues a command with :func:`enqueue_command`; the
running central system picks pending rows up, sends them, and records the outcome
(accepted, rejected, timeout, offline, error) with the charger's response.
Payloads are snake_case dicts in the charger's OCPP version. A queued command that
no server picks up before its ``expires_at`` ends ``expired`` (:func:`expire_pending`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from megastation.store import Store, dumps, iso

# Outcome statuses.
ACCEPTED = "accepted"
REJECTED = "rejected"
TIMEOUT = "timeout"
OFFLINE = "offline"
ERROR = "error"
EXPIRED = "expired"  # queued, but no server sent it before it expired
INTERRUPTED = "interrupted"  # sent, but the server stopped before the charger answered
OPEN_STATUSES = ("pending", "sent")

# How long an operator's queued command may wait for a server to send it [s].
DEFAULT_EXPIRY_S = 300.0

# The calls a central system initiates, per OCPP version (OCPP 1.6 core profiles and
# OCPP 2.0.1 CSMS -> charging station messages): what `command send` accepts.
SERVER_ACTIONS: dict[str, frozenset[str]] = {
    "1.6": frozenset(
        {
            "CancelReservation",
            "ChangeAvailability",
            "ChangeConfiguration",
            "ClearCache",
            "ClearChargingProfile",
            "DataTransfer",
            "GetCompositeSchedule",
            "GetConfiguration",
            "GetDiagnostics",
            "GetLocalListVersion",
            "RemoteStartTransaction",
            "RemoteStopTransaction",
            "ReserveNow",
            "Reset",
            "SendLocalList",
            "SetChargingProfile",
            "TriggerMessage",
            "UnlockConnector",
            "UpdateFirmware",
        }
    ),
    "2.0.1": frozenset(
        {
            "CancelReservation",
            "CertificateSigned",
            "ChangeAvailability",
            "ClearCache",
            "ClearChargingProfile",
            "ClearDisplayMessage",
            "ClearVariableMonitoring",
            "CostUpdated",
            "CustomerInformation",
            "DataTransfer",
            "DeleteCertificate",
            "GetBaseReport",
            "GetChargingProfiles",
            "GetCompositeSchedule",
            "GetDisplayMessages",
            "GetInstalledCertificateIds",
            "GetLocalListVersion",
            "GetLog",
            "GetMonitoringReport",
            "GetReport",
            "GetTransactionStatus",
            "GetVariables",
            "InstallCertificate",
            "PublishFirmware",
            "RequestStartTransaction",
            "RequestStopTransaction",
            "ReserveNow",
            "Reset",
            "SendLocalList",
            "SetChargingProfile",
            "SetDisplayMessage",
            "SetMonitoringBase",
            "SetMonitoringLevel",
            "SetNetworkProfile",
            "SetVariableMonitoring",
            "SetVariables",
            "TriggerMessage",
            "UnlockConnector",
            "UnpublishFirmware",
            "UpdateFirmware",
        }
    ),
}


def server_actions(ocpp_version: str | None) -> frozenset[str]:
    """The actions a server may send to a charger of ``ocpp_version`` (None: not yet
    known, the union of both versions)."""
    if ocpp_version in SERVER_ACTIONS:
        return SERVER_ACTIONS[ocpp_version]
    return SERVER_ACTIONS["1.6"] | SERVER_ACTIONS["2.0.1"]


def versions_with_action(action: str, ocpp_version: str | None) -> list[str]:
    """The OCPP versions whose schema a payload for ``action`` must be checked against:
    the charger's version when known, else every version that has the action."""
    if ocpp_version in SERVER_ACTIONS:
        return [ocpp_version] if action in SERVER_ACTIONS[ocpp_version] else []
    return [v for v, actions in SERVER_ACTIONS.items() if action in actions]


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one call to a charger.

    ``status`` is accepted (the charger answered and did not refuse), rejected (it
    answered with a refusal such as ``Rejected`` / ``NotSupported``), timeout,
    offline (not connected) or error (a CALLERROR, or a payload that fails the schema).
    """

    status: str
    response: dict[str, Any] = field(default_factory=dict)  # snake_case CALLRESULT payload
    error: str | None = None  # CALLERROR code and description, or why it failed
    command_id: int | None = None  # row in the command table, when it came from there

    @property
    def ok(self) -> bool:
        return self.status == ACCEPTED


# Response "status" values that mean the charger refused.
_REFUSALS = {"Rejected", "NotSupported", "NotImplemented", "UnknownConnector", "Unknown", "Failed"}


# Per-item results (2.0.1 Get/SetVariables): the command is refused when no item succeeded.
_ITEM_RESULTS = {
    "get_variable_result": {"Accepted"},
    "set_variable_result": {"Accepted", "RebootRequired"},
}


def outcome_from_response(response: dict[str, Any]) -> CommandOutcome:
    """Accepted unless the charger refused: a refusal ``status``, no variable read or set,
    or (1.6 GetConfiguration) only unknown keys."""
    status = response.get("status")
    if isinstance(status, str) and status in _REFUSALS:
        return CommandOutcome(REJECTED, response)
    for key, ok in _ITEM_RESULTS.items():
        items = response.get(key)
        if items and not any(i.get("attribute_status") in ok for i in items):
            return CommandOutcome(REJECTED, response)
    if response.get("unknown_key") and not response.get("configuration_key"):
        return CommandOutcome(REJECTED, response)
    return CommandOutcome(ACCEPTED, response)


def enqueue_command(
    store: Store,
    charger_id: str,
    action: str,
    payload: dict[str, Any],
    *,
    source: str = "operator",
    expires_after_s: float | None = DEFAULT_EXPIRY_S,
) -> int:
    """Queue a command for the running server; return its id.

    A server that finds it still pending ``expires_after_s`` [s] after now (None:
    never) marks it ``expired`` instead of sending it.
    """
    now = store.now()
    expires_at = None if expires_after_s is None else now + timedelta(seconds=expires_after_s)
    with store.conn:
        cur = store.conn.execute(
            "INSERT INTO commands (charger_id, action, payload, source, status, created_at, "
            "expires_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (
                charger_id,
                action,
                dumps(payload),
                source,
                iso(now),
                iso(expires_at) if expires_at else None,
            ),
        )
    return cur.lastrowid


def expire_pending(store: Store, now: datetime | None = None) -> list[int]:
    """Mark pending commands past their ``expires_at`` as expired; return their ids."""
    now_iso = iso(now or store.now())
    with store.conn:
        rows = store.conn.execute(
            "SELECT id, expires_at FROM commands WHERE status = 'pending' "
            "AND expires_at IS NOT NULL AND expires_at <= ?",
            (now_iso,),
        ).fetchall()
        store.conn.executemany(
            "UPDATE commands SET status = ?, error = ?, finished_at = ? "
            "WHERE id = ? AND status = 'pending'",
            [
                (EXPIRED, f"no server sent it before {expires}", now_iso, cid)
                for cid, expires in rows
            ],
        )
    return [r[0] for r in rows]


def claim_pending_commands(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Mark pending commands as sent and return them (id, charger_id, action, payload).

    Commands past their expiry are marked expired first and never sent.
    """
    expire_pending(store)
    now = iso(store.now())
    with store.conn:
        rows = store.conn.execute(
            "SELECT id, charger_id, action, payload FROM commands WHERE status = 'pending' "
            "ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        if rows:
            store.conn.executemany(
                "UPDATE commands SET status = 'sent', sent_at = ? WHERE id = ? AND status = 'pending'",
                [(now, r[0]) for r in rows],
            )
    return [dict(id=r[0], charger_id=r[1], action=r[2], payload=json.loads(r[3])) for r in rows]


def interrupt_sent(
    store: Store, ids: list[int] | None = None, *, reason: str, now: datetime | None = None
) -> list[int]:
    """Resolve commands left ``sent`` (all, or ``ids``) as ``interrupted``; return their ids.

    At server start every ``sent`` command is one a previous server (stopped or killed)
    never saw answered; at a clean stop, the ones still in flight.
    """
    where, args = "status = 'sent'", []
    if ids is not None:
        if not ids:
            return []
        where += f" AND id IN ({', '.join('?' * len(ids))})"
        args = list(ids)
    with store.conn:
        rows = [r[0] for r in store.conn.execute(f"SELECT id FROM commands WHERE {where}", args)]
        store.conn.executemany(
            "UPDATE commands SET status = ?, error = ?, finished_at = ? "
            "WHERE id = ? AND status = 'sent'",
            [(INTERRUPTED, reason, iso(now or store.now()), cid) for cid in rows],
        )
    return rows


def finish_command(store: Store, command_id: int, outcome: CommandOutcome) -> None:
    with store.conn:
        store.conn.execute(
            "UPDATE commands SET status = ?, response = ?, error = ?, finished_at = ? WHERE id = ?",
            (
                outcome.status,
                dumps(outcome.response) if outcome.response else None,
                outcome.error,
                iso(store.now()),
                command_id,
            ),
        )


def record_command(
    store: Store,
    charger_id: str,
    action: str,
    payload: dict[str, Any],
    outcome: CommandOutcome,
    *,
    source: str,
    sent_at: datetime,
) -> int:
    """Record a command sent directly (not through the queue) with its outcome."""
    with store.conn:
        cur = store.conn.execute(
            "INSERT INTO commands (charger_id, action, payload, source, status, response, error, "
            "created_at, sent_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                charger_id,
                action,
                dumps(payload),
                source,
                outcome.status,
                dumps(outcome.response) if outcome.response else None,
                outcome.error,
                iso(sent_at),
                iso(sent_at),
                iso(store.now()),
            ),
        )
    return cur.lastrowid


def get_command(store: Store, command_id: int) -> dict[str, Any] | None:
    row = store.conn.execute(
        "SELECT id, charger_id, action, payload, source, status, response, error, created_at, "
        "sent_at, finished_at, expires_at FROM commands WHERE id = ?",
        (command_id,),
    ).fetchone()
    return _command(row) if row else None


def list_commands(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT id, charger_id, action, payload, source, status, response, error, created_at, "
        "sent_at, finished_at, expires_at FROM commands ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [_command(r) for r in rows]


def _command(r: tuple) -> dict[str, Any]:
    return dict(
        id=r[0],
        charger_id=r[1],
        action=r[2],
        payload=json.loads(r[3]),
        source=r[4],
        status=r[5],
        response=json.loads(r[6]) if r[6] else None,
        error=r[7],
        created_at=r[8],
        sent_at=r[9],
        finished_at=r[10],
        expires_at=r[11],
    )


# --------------------------------------------------------------------------- checks before queueing


class CommandError(ValueError):
    """A command that cannot be queued; ``argument`` names what is wrong
    (``CHARGER_ID``, ``ACTION`` or ``PAYLOAD``)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument
        self.message = message


PayloadCheck = Callable[[str, dict[str, Any], str], "str | None"]
"""``check(action, payload, ocpp_version)``: why a snake_case payload fails the action's
request schema, None when it passes (:func:`ocpp_central.protocol.payload_problem`)."""


def check_command(
    store: Store,
    charger_id: str,
    action: str,
    payload: dict[str, Any],
    *,
    payload_problem: PayloadCheck,
) -> None:
    """Refuse, before queueing, a command the server could only fail.

    The charger must be in the store (sync the station file first, see
    :func:`megastation.store.records.sync_station_chargers`); the action must be one a server
    sends to a charger of its OCPP version (either version while it has not booted);
    the snake_case payload must pass the ``ocpp`` library's request schema of that
    version (of at least one version while it is not known). Raises :class:`CommandError`.
    """
    import difflib

    row = store.conn.execute(
        "SELECT ocpp_version FROM chargers WHERE id = ?", (charger_id,)
    ).fetchone()
    if row is None:
        known = [r[0] for r in store.conn.execute("SELECT id FROM chargers ORDER BY id")]
        hint = difflib.get_close_matches(charger_id, known, n=1)
        raise CommandError(
            "CHARGER_ID",
            f"no charger {charger_id!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + (f" (known: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})")
            if known
            else f"no charger {charger_id!r} (none known)",
        )
    version = row[0]
    actions = server_actions(version)
    if action not in actions:
        hint = difflib.get_close_matches(action, actions, n=1)
        where = f"OCPP {version}" if version in SERVER_ACTIONS else "OCPP 1.6 or 2.0.1"
        raise CommandError(
            "ACTION",
            f"{action!r} is not a command a server sends to a charger in {where}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (one of: {', '.join(sorted(actions))})",
        )
    problems = []
    for v in versions_with_action(action, version):
        problem = payload_problem(action, payload, v)
        if problem is None:
            return
        problems.append(f"OCPP {v}: {problem}" if version not in SERVER_ACTIONS else problem)
    raise CommandError("PAYLOAD", "; ".join(problems))
