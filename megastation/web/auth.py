"""Who is asking: login sessions (a cookie), API tokens (``Authorization: Bearer``), CSRF.

- A login makes a random session id, sent as an ``HttpOnly; SameSite=Strict`` cookie
  (``Secure`` under TLS) and kept in the store as its SHA-256, with a CSRF token.
- Every state change made with the cookie must carry that CSRF token in the
  ``X-CSRF-Token`` header (or a ``csrf_token`` form field): a page of another site
  cannot read it, so it cannot act in the operator's name.
- Scripts use an API token (``megastation users token NAME``) as a bearer token; no
  cookie is involved, so no CSRF token is needed.
- ``viewer`` accounts read; only ``operator`` accounts act.

Passwords are scrypt-hashed like chargers' (:mod:`ocpp_central.auth`). Session expiry
runs on the wall clock (a demo's accelerated station clock must not log people out).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.requests import Request

from megastation.store import Store
from megastation.store import web as wr
from ocpp_central.auth import hash_password, verify_password

COOKIE = "megastation_session"
CSRF_HEADER = "X-CSRF-Token"
MIN_PASSWORD_LEN = 8


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def wall_now() -> datetime:
    """Real time, for login expiry (never the station's possibly accelerated clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str  # account name
    role: str  # viewer | operator
    via: str  # console (session cookie) | token (bearer)
    csrf_token: str | None = None  # the session's CSRF token (cookie logins only)

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


def add_user(store: Store, name: str, role: str, password: str) -> bool:
    """Create or update an account; True when new. Raises ValueError naming the field."""
    if not name or not name.strip() or any(c.isspace() for c in name):
        raise ValueError(f"NAME: must be non-empty without spaces, got {name!r}")
    if len(password) < MIN_PASSWORD_LEN:
        raise ValueError(f"--password: at least {MIN_PASSWORD_LEN} characters")
    return wr.set_user(store, name, role, hash_password(password), store.now())


def new_api_token(store: Store, name: str, label: str | None = None) -> str:
    """A new API token for ``name`` (shown once; only its hash is kept)."""
    if wr.get_user(store, name) is None:
        raise LookupError(f"no user {name!r}")
    token = "ms_" + secrets.token_urlsafe(32)
    wr.add_api_token(store, name, token_hash(token), label, store.now())
    return token


async def login(store: Store, name: str, password: str, hours: float) -> tuple[str, str] | None:
    """Check the password (off the event loop: scrypt takes ~30 ms); on success open a
    session and return ``(cookie value, csrf token)``."""
    user = wr.get_user(store, name)
    stored = user["password_hash"] if user else _dummy_hash()  # same work for unknown names
    ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, stored)
    if not ok or user is None:
        return None
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = wall_now()
    wr.create_session(store, name, token_hash(sid), csrf, now, now + timedelta(hours=hours))
    return sid, csrf


def logout(store: Store, request: Request) -> None:
    sid = request.cookies.get(COOKIE)
    if sid:
        wr.delete_session(store, token_hash(sid))


def principal(store: Store, request: Request) -> Principal | None:
    """The caller of ``request``: a bearer token first, else the session cookie."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        user = wr.token_user(store, token_hash(header[7:].strip()))
        return Principal(user["name"], user["role"], "token") if user else None
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    user = wr.session_user(store, token_hash(sid), wall_now())
    if user is None:
        return None
    return Principal(user["name"], user["role"], "console", user["csrf_token"])


def csrf_ok(p: Principal, request: Request, form_token: str | None = None) -> bool:
    """Whether a state change by ``p`` carries its CSRF token (bearer tokens need none)."""
    if p.via == "token":
        return True
    given = request.headers.get(CSRF_HEADER) or form_token or ""
    return bool(p.csrf_token) and hmac.compare_digest(given, p.csrf_token)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))
