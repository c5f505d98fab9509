"""HTTP API v1 over a real socket: every endpoint, bad input (JSON errors naming the
field) and authorisation (anonymous, viewer, operator; cookie with and without CSRF)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from megastation.control.needs import read_overrides
from megastation.core import events
from megastation.store import commands, records
from megastation.store import control as cr
from megastation.store import web as wr
from megastation.web.api import ENDPOINTS, PREFIX, openapi
from tests.conftest import T0
from tests.ocpp_clients import connect_charger
from tests.web.conftest import bearer, login

GETS = [PREFIX + e.path.replace("{command_id:int}", "1") for e in ENDPOINTS if e.method == "GET"]
POSTS = [
    ("/grid-limit", {"grid_kw": 200}),
    ("/policy", {"policy": "cost"}),
    ("/sessions/1/needs", {"energy_kwh": 20}),
    ("/sessions/1/stop", {}),
    ("/chargers/GJDG-AC-01/accept", {}),
    ("/chargers/GJDG-AC-01/reset", {"type": "Soft"}),
]


def err(r, status: int, field: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    if field is not None:
        assert body["field"] == field, body
    return body["message"]


async def open_session(central, store, charger_id="GJDG-DC-03") -> int:
    """A 1.6 charger that boots and starts a transaction; returns the stored session id."""
    from ocpp.v16 import call

    records.set_id_token(store, "TAG1")
    async with connect_charger(central.port, charger_id, "1.6") as cp:
        await cp.call(call.BootNotification(charge_point_vendor="V", charge_point_model="M"))
        res = await cp.call(
            call.StartTransaction(
                connector_id=1, id_tag="TAG1", meter_start=0, timestamp=T0.isoformat()
            )
        )
    return int(res.transaction_id)


# --------------------------------------------------------------------------- authorisation


@pytest.mark.parametrize("path", GETS)
async def test_every_get_refuses_anonymous_callers(client, path):
    assert "log in" in err(await client.get(path), 401)


@pytest.mark.parametrize(("path", "body"), POSTS)
async def test_every_action_refuses_anonymous_callers_and_viewers(client, store, path, body):
    assert "log in" in err(await client.post(PREFIX + path, json=body), 401)
    # a viewer with a token, and a viewer logged in with a cookie and its CSRF token
    r = await client.post(PREFIX + path, json=body, headers=bearer(store, "vic"))
    assert "read-only" in err(r, 403)
    csrf = await login(client, "vic")
    r = await client.post(PREFIX + path, json=body, headers={"X-CSRF-Token": csrf})
    assert "read-only" in err(r, 403)
    assert wr.list_actions(store) == []  # nothing was done, nothing recorded
    assert cr.policy(store, "re100") == "re100"
    assert store.get_setting(cr.GRID_LIMIT_KEY) is None


@pytest.mark.parametrize(("path", "body"), POSTS)
async def test_a_console_login_needs_the_csrf_token_to_act(client, store, path, body):
    csrf = await login(client, "alice")
    assert "CSRF" in err(await client.post(PREFIX + path, json=body), 403, "X-CSRF-Token")
    r = await client.post(PREFIX + path, json=body, headers={"X-CSRF-Token": csrf + "x"})
    err(r, 403, "X-CSRF-Token")
    assert wr.list_actions(store) == []


async def test_the_session_cookie_is_httponly_and_samesite_strict(client):
    r = await client.post("/login", data={"name": "alice", "password": "correct horse"})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


async def test_a_wrong_password_or_unknown_name_does_not_log_in(client):
    for name, pw in (("alice", "wrong password"), ("nobody", "correct horse")):
        r = await client.post("/login", data={"name": name, "password": pw})
        assert r.status_code == 303 and r.headers["location"] == "/login?failed=1"
    err(await client.get(PREFIX + "/me"), 401)
    r = await client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_logout_needs_the_csrf_token_and_ends_the_session(client):
    csrf = await login(client, "alice")
    err(await client.post("/logout", data={}), 403, "csrf_token")
    r = await client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303
    err(await client.get(PREFIX + "/me"), 401)


async def test_an_unknown_bearer_token_is_refused(client):
    err(await client.get(PREFIX + "/overview", headers={"Authorization": "Bearer nope"}), 401)


async def test_a_viewer_reads_everything(client, store):
    h = bearer(store, "vic")
    for path in GETS:
        if path.endswith("/events") or path.endswith("/commands/1"):
            continue
        r = await client.get(path, headers=h)
        assert r.status_code == 200, (path, r.text)


# --------------------------------------------------------------------------- reads


async def test_overview_and_connectors_show_a_live_charger(client, store, central):
    sid = await open_session(central, store)
    h = bearer(store, "vic")
    me = (await client.get(PREFIX + "/me", headers=h)).json()
    assert me == {"name": "vic", "role": "viewer", "via": "token", "csrf_token": None}
    ov = (await client.get(PREFIX + "/overview", headers=h)).json()
    assert ov["grid"]["limit_kw"] == 400 and ov["grid"]["limit_source"] == "config"
    assert ov["policy"] == "re100" and ov["plan"] is None
    assert set(ov["today"]) >= {"energy_kwh", "renewable_frac", "cost_krw", "grid_kwh"}
    rows = (await client.get(PREFIX + "/connectors", headers=h)).json()
    dc3 = [r for r in rows if r["charger_id"] == "GJDG-DC-03"]
    assert dc3[0]["transaction_id"] == sid and dc3[0]["connector_id"] == 1
    assert {r["charger_id"] for r in rows} >= {"GJDG-AC-01", "GJDG-DC-01"}
    chargers = (await client.get(PREFIX + "/chargers", headers=h)).json()
    c = next(x for x in chargers if x["id"] == "GJDG-DC-03")
    assert c["vendor"] == "V" and c["ocpp_version"] == "1.6" and "password_hash" not in c
    sessions = (await client.get(PREFIX + "/sessions", headers=h)).json()
    assert sessions[0]["transaction_id"] == sid and sessions[0]["id_token"] == "TAG1"
    assert {"pv_direct_kwh", "battery_kwh", "grid_kwh"} <= set(sessions[0])
    tokens = (await client.get(PREFIX + "/id-tokens", headers=h)).json()
    assert tokens[0]["id_token"] == "TAG1"


async def test_flows_returns_series_and_refuses_a_bad_day(client, store):
    from megastation.store import flows

    flows.record_flows(
        store,
        flows.FlowStep(
            ts=T0, step_s=900, pv_kw=100, curtailed_kw=0, ev_kw=50, base_load_kw=8,
            battery_charge_kw=42, battery_discharge_kw=0, grid_import_kw=0, grid_export_kw=0,
            grid_limit_kw=400, soc_frac=0.5, pv_forecast_kw=90, pv_p10_kw=60, pv_p90_kw=110,
        ),
    )  # fmt: skip
    h = bearer(store, "vic")
    d = (await client.get(PREFIX + "/flows", headers=h)).json()
    assert d["day"] == "2026-06-15" and d["flows"]["time"] == [int(T0.timestamp())]
    assert d["flows"]["pv_kw"] == [100] and d["flows"]["battery_kw"] == [-42]
    r = await client.get(PREFIX + "/flows?day=yesterday", headers=h)
    assert "ISO date" in err(r, 422, "day")


async def test_range_and_limit_parameters_are_checked(client, store):
    h = bearer(store, "vic")
    err(await client.get(PREFIX + "/sessions?from=nope", headers=h), 422, "from")
    err(await client.get(PREFIX + "/sessions?from=2026-06-15&to=2026-06-14", headers=h), 422, "to")
    err(await client.get(PREFIX + "/commands?limit=x", headers=h), 422, "limit")
    err(await client.get(PREFIX + "/actions?limit=0", headers=h), 422, "limit")
    err(await client.get(PREFIX + "/commands/999", headers=h), 404, "command_id")


async def test_events_stream_pushes_the_overview(client, store):
    h = bearer(store, "vic")
    async with client.stream("GET", PREFIX + "/events", headers=h) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        assert await anext(lines) == "event: overview"
        data = await anext(lines)
        assert json.loads(data.removeprefix("data: "))["station"]


# --------------------------------------------------------------------------- actions


async def test_grid_limit_is_set_with_expiry_recorded_and_announced(client, store, notified):
    h = bearer(store, "alice")
    r = await client.post(
        PREFIX + "/grid-limit", json={"grid_kw": 150, "until": "2026-06-15T18:00"}, headers=h
    )
    assert r.status_code == 200, r.text
    assert r.json()["until"] == "2026-06-15T18:00:00+09:00"
    assert cr.grid_limit_kw(store, 400, T0) == (150, "operator")
    assert cr.grid_limit_kw(store, 400, T0 + timedelta(hours=10)) == (400, "config")
    (a,) = wr.list_actions(store)
    assert (a["user_name"], a["via"], a["action"], a["outcome"]) == (
        "alice", "token", "grid_limit", "ok",
    )  # fmt: skip
    assert isinstance(notified[-1], events.OperatorChanged) and notified[-1].what == "grid_limit"
    r = await client.post(PREFIX + "/grid-limit", json={"clear": True}, headers=h)
    assert r.json()["source"] == "config" and store.get_setting(cr.GRID_LIMIT_KEY) is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "grid_kw", "required"),
        ({"grid_kw": "a lot"}, "grid_kw", "number"),
        ({"grid_kw": -1}, "grid_kw", ">= 0"),
        ({"grid_kw": 500}, "grid_kw", "above the connection"),
        ({"grid_kw": 100, "until": "tomorrow"}, "until", "ISO"),
        ({"grid_kw": 100, "until": "2026-06-14T10:00"}, "until", "past"),
        ({"grid_kw": 100, "force": "yes"}, "force", "true or false"),
        ({"grid_kw": 100, "limit": 3}, "limit", "unknown field"),
    ],
)
async def test_grid_limit_bad_input_names_the_field(client, store, body, field, words):
    r = await client.post(PREFIX + "/grid-limit", json=body, headers=bearer(store, "alice"))
    assert words in err(r, 422, field)
    assert store.get_setting(cr.GRID_LIMIT_KEY) is None


async def test_a_body_that_is_not_a_json_object_is_refused(client, store):
    h = {**bearer(store, "alice"), "Content-Type": "application/json"}
    assert "not JSON" in err(
        await client.post(PREFIX + "/policy", content="{", headers=h), 400, "body"
    )
    r = await client.post(PREFIX + "/policy", content="[1]", headers=h)
    assert "object" in err(r, 400, "body")


async def test_grid_limit_above_the_connection_with_force(client, store):
    r = await client.post(
        PREFIX + "/grid-limit", json={"grid_kw": 500, "force": True}, headers=bearer(store, "alice")
    )
    assert r.status_code == 200 and cr.grid_limit_kw(store, 400, T0) == (500, "operator")


async def test_policy(client, store):
    h = bearer(store, "alice")
    err(await client.post(PREFIX + "/policy", json={"policy": "cheap"}, headers=h), 422, "policy")
    r = await client.post(PREFIX + "/policy", json={"policy": "cost"}, headers=h)
    assert r.json() == {"policy": "cost"} and cr.policy(store, "re100") == "cost"


async def test_session_needs(client, store, central):
    sid = await open_session(central, store)
    h = bearer(store, "alice")
    p = PREFIX + f"/sessions/{sid}/needs"
    err(await client.post(p, json={}, headers=h), 422, "departure")
    err(await client.post(p, json={"energy_kwh": -3}, headers=h), 422, "energy_kwh")
    err(await client.post(p, json={"departure": "soon"}, headers=h), 422, "departure")
    r = await client.post(PREFIX + "/sessions/999/needs", json={"energy_kwh": 3}, headers=h)
    err(r, 404, "session")
    r = await client.post(p, json={"departure": "2026-06-15T17:30", "energy_kwh": 30}, headers=h)
    assert r.status_code == 200, r.text
    dep, kwh = read_overrides(store)[sid]
    assert kwh == 30 and dep.isoformat() == "2026-06-15T08:30:00+00:00"


async def test_remote_stop_and_reset_are_queued_as_commands(client, store, central):
    sid = await open_session(central, store)
    h = bearer(store, "alice")
    r = await client.post(PREFIX + f"/sessions/{sid}/stop", json={}, headers=h)
    assert r.status_code == 202, r.text
    cmd = commands.get_command(store, r.json()["command_id"])
    assert cmd["action"] == "RemoteStopTransaction" and cmd["payload"] == {"transaction_id": sid}
    err(await client.post(PREFIX + "/sessions/999/stop", json={}, headers=h), 404, "session")
    r = await client.post(PREFIX + "/chargers/GJDG-DC-01/reset", json={"type": "Hard"}, headers=h)
    assert r.status_code == 202
    cmd = commands.get_command(store, r.json()["command_id"])
    assert cmd["action"] == "Reset" and cmd["payload"] == {"type": "Immediate"}  # a 2.0.1 charger
    err(
        await client.post(PREFIX + "/chargers/GJDG-DC-01/reset", json={"type": "x"}, headers=h),
        422,
        "type",
    )
    err(await client.post(PREFIX + "/chargers/NOPE/reset", json={}, headers=h), 404, "charger_id")
    got = (await client.get(PREFIX + f"/commands/{cmd['id']}", headers=h)).json()
    assert got["id"] == cmd["id"]
    assert [c["id"] for c in (await client.get(PREFIX + "/commands", headers=h)).json()][:1] == [
        cmd["id"]
    ]
    kinds = [a["action"] for a in (await client.get(PREFIX + "/actions", headers=h)).json()]
    assert kinds == ["reset", "remote_stop"]  # refused input is not an action


async def test_accept_a_pending_charger(client, store):
    records.add_pending_charger(store, "NEW-1")
    h = bearer(store, "alice")
    r = await client.post(PREFIX + "/chargers/NEW-1/accept", json={}, headers=h)
    assert r.json()["registration"] == "Accepted"
    assert records.get_charger(store, "NEW-1")["registration"] == "Accepted"
    err(await client.post(PREFIX + "/chargers/NOPE/accept", json={}, headers=h), 404, "charger_id")


async def test_a_console_login_with_its_csrf_token_acts_and_is_recorded(client, store):
    csrf = await login(client, "alice")
    r = await client.post(
        PREFIX + "/policy", json={"policy": "cost"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200
    assert wr.list_actions(store)[0]["via"] == "console"


# --------------------------------------------------------------------------- OpenAPI


def test_the_committed_openapi_document_is_current():
    path = Path(__file__).parents[2] / "docs" / "openapi.json"
    assert json.loads(path.read_text()) == openapi(), (
        "regenerate: python -m megastation.web.api > docs/openapi.json"
    )


async def test_openapi_is_served_and_lists_every_endpoint(client):
    doc = (await client.get(PREFIX + "/openapi.json")).json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert len(ops) == len(ENDPOINTS)
    assert ("POST", "/api/v1/grid-limit") in ops
