"""What the web console and HTTP API keep in the store (05xx tables): accounts, login
sessions, script tokens and the audit log of operator actions.

Secrets are never stored: a login session's cookie value and an API token are kept
as their SHA-256 (they are long random strings, so a plain hash suffices); passwords
as scrypt hashes (:mod:`ocpp_central.auth`, the same as chargers'). Times are UTC ISO
text in the store, tz-aware here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from megastation.store import Store, dumps, iso

ROLES = ("viewer", "operator")  # viewer: read only; operator: may also act


# --------------------------------------------------------------------------- users


def set_user(store: Store, name: str, role: str, password_hash: str, now: datetime) -> bool:
    """Add the account ``name`` or replace its role and password; True when it is new."""
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    with store.conn:
        new = (
            store.conn.execute("SELECT 1 FROM web_users WHERE name = ?", (name,)).fetchone() is None
        )
        store.conn.execute(
            "INSERT INTO web_users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET role = excluded.role, "
            "password_hash = excluded.password_hash",
            (name, role, password_hash, iso(now)),
        )
        if not new:  # a new password ends the account's open logins
            store.conn.execute("DELETE FROM web_sessions WHERE user_name = ?", (name,))
    return new


def get_user(store: Store, name: str) -> dict[str, Any] | None:
    row = store.conn.execute(
        "SELECT name, role, password_hash, created_at FROM web_users WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("name", "role", "password_hash", "created_at"), row, strict=True))


def list_users(store: Store) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT u.name, u.role, u.created_at, "
        "(SELECT COUNT(*) FROM web_api_tokens t WHERE t.user_name = u.name) "
        "FROM web_users u ORDER BY u.name"
    ).fetchall()
    return [dict(zip(("name", "role", "created_at", "api_tokens"), r, strict=True)) for r in rows]


def remove_user(store: Store, name: str) -> bool:
    with store.conn:
        cur = store.conn.execute("DELETE FROM web_users WHERE name = ?", (name,))
    return cur.rowcount > 0


# --------------------------------------------------------------------------- login sessions


def create_session(
    store: Store, user_name: str, token_hash: str, csrf_token: str, now: datetime, expires: datetime
) -> None:
    with store.conn:
        store.conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (iso(now),))
        store.conn.execute(
            "INSERT INTO web_sessions (token_hash, user_name, csrf_token, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (token_hash, user_name, csrf_token, iso(now), iso(expires)),
        )


def session_user(store: Store, token_hash: str, now: datetime) -> dict[str, Any] | None:
    """The user of a live login session: ``name``, ``role``, ``csrf_token``; else None."""
    row = store.conn.execute(
        "SELECT u.name, u.role, s.csrf_token FROM web_sessions s "
        "JOIN web_users u ON u.name = s.user_name WHERE s.token_hash = ? AND s.expires_at > ?",
        (token_hash, iso(now)),
    ).fetchone()
    return dict(zip(("name", "role", "csrf_token"), row, strict=True)) if row else None


def delete_session(store: Store, token_hash: str) -> None:
    with store.conn:
        store.conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))


# --------------------------------------------------------------------------- API tokens


def add_api_token(
    store: Store, user_name: str, token_hash: str, label: str | None, now: datetime
) -> None:
    with store.conn:
        store.conn.execute(
            "INSERT INTO web_api_tokens (token_hash, user_name, label, created_at) "
            "VALUES (?, ?, ?, ?)",
            (token_hash, user_name, label, iso(now)),
        )


def token_user(store: Store, token_hash: str) -> dict[str, Any] | None:
    """The user of an API token: ``name``, ``role``; else None."""
    row = store.conn.execute(
        "SELECT u.name, u.role FROM web_api_tokens t JOIN web_users u ON u.name = t.user_name "
        "WHERE t.token_hash = ?",
        (token_hash,),
    ).fetchone()
    return dict(zip(("name", "role"), row, strict=True)) if row else None


def revoke_api_tokens(store: Store, user_name: str) -> int:
    with store.conn:
        cur = store.conn.execute("DELETE FROM web_api_tokens WHERE user_name = ?", (user_name,))
    return cur.rowcount


# --------------------------------------------------------------------------- audit log


def record_action(
    store: Store,
    *,
    user_name: str,
    via: str,
    action: str,
    params: dict[str, Any],
    outcome: str,
    detail: str | None = None,
) -> int:
    """One operator action from the console or the API, with who did it."""
    with store.conn:
        cur = store.conn.execute(
            "INSERT INTO web_audit (time, user_name, via, action, params, outcome, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iso(store.now()), user_name, via, action, dumps(params), outcome, detail),
        )
    return int(cur.lastrowid)


def list_actions(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT id, time, user_name, via, action, params, outcome, detail FROM web_audit "
        "ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    keys = ("id", "time", "user_name", "via", "action", "params", "outcome", "detail")
    out = []
    for r in rows:
        d = dict(zip(keys, r, strict=True))
        d["params"] = json.loads(d["params"])
        out.append(d)
    return out


# --------------------------------------------------------------------------- read models


def plans_since(store: Store, since: datetime, limit: int = 500) -> list[dict[str, Any]]:
    """Plans made at or after ``since`` (oldest first): time, reason, limit, planned import."""
    rows = store.conn.execute(
        "SELECT id, created_at, reason, policy, grid_limit_kw, status, solve_ms, cycle_ms, "
        "grid_import_kw, json_extract(first_step, '$.grid_import_kw') FROM control_plans "
        "WHERE created_at >= ? ORDER BY id LIMIT ?",
        (iso(since), limit),
    ).fetchall()
    keys = (
        "id", "time", "reason", "policy", "grid_limit_kw", "status", "solve_ms", "cycle_ms",
        "grid_import_kw", "planned_grid_import_kw",
    )  # fmt: skip
    return [dict(zip(keys, r, strict=True)) for r in rows]


def plan_count(store: Store) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM control_plans").fetchone()[0])


def latest_pv_forecast(store: Store) -> dict[str, Any] | None:
    """The latest issued PV forecast: ``issued_at``, ``start`` (ISO UTC), ``step_min``,
    ``p50_kw``, ``p10_kw``, ``p90_kw`` (lists) — one row, for the console's band."""
    row = store.conn.execute(
        "SELECT issued_at, start, step_min, p50_kw, p10_kw, p90_kw FROM pv_forecasts "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    keys = ("issued_at", "start", "step_min", "p50_kw", "p10_kw", "p90_kw")
    out = dict(zip(keys, row, strict=True))
    for k in ("p50_kw", "p10_kw", "p90_kw"):
        out[k] = json.loads(out[k])
    return out


def charger_states(store: Store) -> list[dict[str, Any]]:
    """Each charger's ``id``, ``registration`` and ``connected`` (the overview's few
    columns; :func:`megastation.store.records.list_chargers` has them all)."""
    rows = store.conn.execute("SELECT id, registration, connected FROM chargers ORDER BY id")
    return [{"id": i, "registration": r, "connected": c} for i, r, c in rows]
