"""HTTP API v1 (``/api/v1``): the console's data and actions as JSON, for the console's
own page and for scripts (``Authorization: Bearer <token>``).

Every endpoint is declared once in :data:`ENDPOINTS`; the routes and the OpenAPI
document (:func:`openapi`, served at ``/api/v1/openapi.json`` and committed as
``docs/openapi.json``) are both made from it. Errors are JSON
``{"error": {"field": <name or null>, "message": <text>}}``: 400 bad JSON, 401 not
logged in, 403 not allowed (viewer, missing CSRF token), 404 unknown id, 409 conflict,
422 a field's value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from megastation.web.actions import Actions, ApiError, parse_time
from megastation.web.auth import CSRF_HEADER, Principal, csrf_ok, principal
from megastation.web.views import Views

PREFIX = "/api/v1"
SSE_LOOP_SHARE = 0.01  # an event stream's overview pushes take at most this share of the loop


@dataclass
class Api:
    """What the handlers work on."""

    views: Views
    actions: Actions
    sse_interval_s: float = 2.0  # live overview push interval [s, wall]
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set: event streams end


Handler = Callable[[Api, Request, Principal], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below /api/v1, Starlette syntax ({id:int})
    handler: Handler
    summary: str
    acts: bool = False  # changes state: operator only, CSRF with a cookie
    body: dict[str, Any] | None = None  # JSON schema of the request body
    params: tuple[tuple[str, str, str], ...] = ()  # query (name, type, description)
    stream: bool = False  # text/event-stream
    tags: tuple[str, ...] = field(default=("station",))


def error(status: int, message: str, field_name: str | None = None) -> JSONResponse:
    return JSONResponse(ApiError(status, message, field_name).body(), status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"request body is not JSON: {e}", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "body")
    return body


def _range(request: Request, api: Api):
    st = api.views.station
    start = parse_time(request.query_params.get("from"), st, "from")
    end = parse_time(request.query_params.get("to"), st, "to")
    if start is not None and end is not None and end <= start:
        raise ApiError(422, "must be after from (the range is [from, to))", "to")
    return start, end


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "50")
    try:
        n = int(text)
    except ValueError:
        raise ApiError(422, f"must be a whole number, got {text!r}", "limit") from None
    if not 1 <= n <= 1000:
        raise ApiError(422, f"must be 1..1000, got {n}", "limit")
    return n


# --------------------------------------------------------------------------- handlers


async def me(api: Api, request: Request, p: Principal) -> Any:
    return {"name": p.name, "role": p.role, "via": p.via, "csrf_token": p.csrf_token}


async def overview(api: Api, request: Request, p: Principal) -> Any:
    return api.views.overview()


async def connectors(api: Api, request: Request, p: Principal) -> Any:
    return api.views.connectors()


async def flows(api: Api, request: Request, p: Principal) -> Any:
    day = request.query_params.get("day")
    if day is not None:
        try:
            from datetime import date

            date.fromisoformat(day)
        except ValueError:
            raise ApiError(422, f"not an ISO date (YYYY-MM-DD): {day!r}", "day") from None
    return api.views.day_flows(day)


async def sessions(api: Api, request: Request, p: Principal) -> Any:
    return api.views.sessions(*_range(request, api))


async def chargers(api: Api, request: Request, p: Principal) -> Any:
    return api.views.chargers()


async def command_list(api: Api, request: Request, p: Principal) -> Any:
    return api.views.commands(_limit(request))


async def command_one(api: Api, request: Request, p: Principal) -> Any:
    row = api.views.command(request.path_params["command_id"])
    if row is None:
        raise ApiError(404, f"no command {request.path_params['command_id']}", "command_id")
    return row


async def id_tokens(api: Api, request: Request, p: Principal) -> Any:
    return api.views.id_tokens()


async def audit(api: Api, request: Request, p: Principal) -> Any:
    return api.views.actions(_limit(request))


async def set_grid_limit(api: Api, request: Request, p: Principal) -> Any:
    return api.actions.grid_limit(p, await _json_body(request))


async def set_policy(api: Api, request: Request, p: Principal) -> Any:
    return api.actions.policy(p, await _json_body(request))


async def session_needs(api: Api, request: Request, p: Principal) -> Any:
    return api.actions.session_needs(
        p, request.path_params["session_id"], await _json_body(request)
    )


async def session_stop(api: Api, request: Request, p: Principal) -> Any:
    await _json_body(request)
    return api.actions.remote_stop(p, request.path_params["session_id"])


async def charger_accept(api: Api, request: Request, p: Principal) -> Any:
    await _json_body(request)
    return api.actions.accept(p, request.path_params["charger_id"])


async def charger_reset(api: Api, request: Request, p: Principal) -> Any:
    return api.actions.reset(p, request.path_params["charger_id"], await _json_body(request))


async def events(api: Api, request: Request, p: Principal) -> Any:
    """Server-sent events: ``overview`` (the overview object) every ``sse_interval_s``."""

    async def stream():
        last_plan = None
        while not api.closing.is_set():
            t0 = time.perf_counter()
            ov = api.views.overview()
            yield f"event: overview\ndata: {api.views.overview_json()}\n\n"
            # a large station's overview costs more: push it less often, so the console
            # takes at most SSE_LOOP_SHARE of the event loop the chargers share
            wait_s = max(api.sse_interval_s, (time.perf_counter() - t0) / SSE_LOOP_SHARE)
            plan = (ov.get("plan") or {}).get("id")
            if plan != last_plan:  # the console refreshes its chart
                last_plan = plan
                yield f"event: plan\ndata: {json.dumps({'id': plan})}\n\n"
            with contextlib.suppress(TimeoutError):  # wakes at once when the server stops
                await asyncio.wait_for(api.closing.wait(), wait_s)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --------------------------------------------------------------------------- table

_TIME = {"type": "string", "description": "ISO 8601 date or date-time; station local if no zone"}
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/me", me, "The caller: name, role, and the CSRF token of a console login.",
             tags=("account",)),
    Endpoint("GET", "/overview", overview,
             "Connectors, PV now vs forecast, battery, grid import vs limit, today's figures, "
             "policy and the latest plan."),
    Endpoint("GET", "/connectors", connectors,
             "Every connector: status, car power, limit in force, SoC, session energy."),
    Endpoint("GET", "/flows", flows,
             "A day's energy flows (per dispatch step) and the latest plan's horizon.",
             params=(("day", "string", "site-local date YYYY-MM-DD; default today"),)),
    Endpoint("GET", "/sessions", sessions, "Sessions with energy by source (newest first).",
             params=(("from", "string", "start at or after (ISO)"),
                     ("to", "string", "start before (ISO)"))),
    Endpoint("GET", "/chargers", chargers,
             "Chargers: boot data, connection, registration, last heartbeat."),
    Endpoint("GET", "/commands", command_list, "Commands sent to chargers and their outcomes.",
             params=(("limit", "integer", "rows, 1..1000 (default 50)"),)),
    Endpoint("GET", "/commands/{command_id:int}", command_one, "One command and its outcome."),
    Endpoint("GET", "/id-tokens", id_tokens, "Id tokens (RFID cards) and their status."),
    Endpoint("GET", "/actions", audit, "Operator actions taken here, with who did them.",
             params=(("limit", "integer", "rows, 1..1000 (default 50)"),)),
    Endpoint("GET", "/events", events,
             "Server-sent events: `overview` every few seconds, `plan` when a new plan is made.",
             stream=True),
    Endpoint("POST", "/grid-limit", set_grid_limit,
             "Set the grid import limit (optionally until a time), or clear it "
             "(CLI: megastation limit).", acts=True,
             body={"type": "object", "properties": {
                 "grid_kw": {"type": "number", "minimum": 0},
                 "until": _TIME,
                 "force": {"type": "boolean", "description": "allow above the connection"},
                 "clear": {"type": "boolean", "description": "back to the configured limit"}}}),
    Endpoint("POST", "/policy", set_policy, "Set the dispatch policy (CLI: megastation policy).",
             acts=True, body={"type": "object", "required": ["policy"], "properties": {
                 "policy": {"type": "string", "enum": ["re100", "cost"]}}}),
    Endpoint("POST", "/sessions/{session_id:int}/needs", session_needs,
             "Override a session's departure and/or energy (CLI: megastation session).",
             acts=True, body={"type": "object", "properties": {
                 "departure": _TIME, "energy_kwh": {"type": "number", "minimum": 0}}}),
    Endpoint("POST", "/sessions/{session_id:int}/stop", session_stop,
             "Ask the charger to stop an open session (RemoteStop/RequestStopTransaction; "
             "queued as a command).", acts=True),
    Endpoint("POST", "/chargers/{charger_id}/accept", charger_accept,
             "Accept a Pending charger (CLI: megastation chargers accept).", acts=True),
    Endpoint("POST", "/chargers/{charger_id}/reset", charger_reset,
             "Reset a charger (queued as a command; CLI: megastation command send ID Reset).",
             acts=True, body={"type": "object", "properties": {
                 "type": {"type": "string", "enum": ["Soft", "Hard"], "default": "Soft"}}}),
)  # fmt: skip


def _route(api: Api, ep: Endpoint) -> Route:
    async def endpoint(request: Request) -> Response:
        p = principal(api.views.store, request)
        if p is None:
            return error(401, "log in, or give an API token as 'Authorization: Bearer ...'")
        if ep.acts:
            if not p.can_act:
                return error(403, f"{p.name} is a viewer: viewer accounts are read-only")
            if not csrf_ok(p, request):
                return error(403, "missing or wrong CSRF token", CSRF_HEADER)
        try:
            result = await ep.handler(api, request, p)
        except ApiError as e:
            return JSONResponse(e.body(), status_code=e.status)
        if ep.acts:
            api.views.invalidate()  # the next overview shows the change
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=202 if "command_id" in (result or {}) else 200)

    return Route(PREFIX + ep.path, endpoint, methods=[ep.method], name=ep.handler.__name__)


def routes(api: Api) -> list[Route]:
    return [_route(api, ep) for ep in ENDPOINTS]


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ENDPOINTS`."""
    err = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        path = PREFIX + ep.path.replace(":int}", "}")
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": ep.handler.__name__,
            "tags": list(ep.tags),
            "responses": {
                "202" if ep.handler in (session_stop, charger_reset) else "200": {
                    "description": "OK",
                    "content": {"text/event-stream" if ep.stream else "application/json": {}},
                },
                "401": {
                    "description": "not logged in",
                    "content": {"application/json": {"schema": err}},
                },
            },
        }
        params = []
        for name in ("command_id", "session_id", "charger_id"):
            if "{" + name in ep.path:
                typ = "string" if name == "charger_id" else "integer"
                params.append(
                    {"name": name, "in": "path", "required": True, "schema": {"type": typ}}
                )
        for name, typ, desc in ep.params:
            params.append(
                {"name": name, "in": "query", "schema": {"type": typ}, "description": desc}
            )
        if params:
            op["parameters"] = params
        if ep.params or params or ep.body is not None:
            op["responses"]["422"] = {
                "description": "a field's value is wrong (the error names it)",
                "content": {"application/json": {"schema": err}},
            }
        if ep.acts:
            op["description"] = (
                "Operator accounts only. With a console login the request must carry the "
                "session's CSRF token in the X-CSRF-Token header (see /me); API tokens need none. "
                "Recorded in the audit log (/actions) with who did it."
            )
            op["responses"]["403"] = {
                "description": "viewer account, or missing CSRF token",
                "content": {"application/json": {"schema": err}},
            }
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": ep.body or {"type": "object"}}},
            }
            op["responses"]["400"] = {
                "description": "body is not a JSON object",
                "content": {"application/json": {"schema": err}},
            }
        if any(x in path for x in ("{command_id}", "{session_id}", "{charger_id}")):
            op["responses"]["404"] = {
                "description": "no such id",
                "content": {"application/json": {"schema": err}},
            }
        paths.setdefault(path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "megastation HTTP API",
            "version": "1",
            "description": "The operator console's data and actions. Power in kW, energy in "
            "kWh, fractions 0..1, times ISO 8601 UTC. Console pages use a session cookie; "
            "scripts use `Authorization: Bearer <token>` (`megastation users token NAME`).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "megastation_session"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "field": {"type": ["string", "null"]},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    }


if __name__ == "__main__":  # python -m megastation.web.api > docs/openapi.json
    print(json.dumps(openapi(), indent=2))
