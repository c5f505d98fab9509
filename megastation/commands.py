"""Server-to-charger commands: the durable command table and command outcomes.

An operator (or any process) queues a command with :func:`enqueue_command`; the
running central system picks pending rows up, sends them, and records the outcome
(accepted, rejected, timeout, offline, error) with the charger's response.
Payloads are snake_case dicts in the charger's OCPP version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from megastation.store import Store, dumps, iso

# Outcome statuses.
ACCEPTED = "accepted"
REJECTED = "rejected"
TIMEOUT = "timeout"
OFFLINE = "offline"
ERROR = "error"
FINAL_STATUSES = (ACCEPTED, REJECTED, TIMEOUT, OFFLINE, ERROR)


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
) -> int:
    """Queue a command for the running server; return its id."""
    with store.conn:
        cur = store.conn.execute(
            "INSERT INTO commands (charger_id, action, payload, source, status, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?)",
            (charger_id, action, dumps(payload), source, iso(store.now())),
        )
    return cur.lastrowid


def claim_pending_commands(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Mark pending commands as sent and return them (id, charger_id, action, payload)."""
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
        "sent_at, finished_at FROM commands WHERE id = ?",
        (command_id,),
    ).fetchone()
    return _command(row) if row else None


def list_commands(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT id, charger_id, action, payload, source, status, response, error, created_at, "
        "sent_at, finished_at FROM commands ORDER BY id DESC LIMIT ?",
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
    )
