"""The web app (Starlette) and its server (uvicorn) on the OCPP server's event loop.

:func:`create_app` builds the app: the console (``/``, ``/login``, ``/logout``,
``/static``), the HTTP API (``/api/v1``, :mod:`megastation.web.api`), ``/metrics``
(:mod:`megastation.web.metrics`) and the data hub feed (``/ngsi-ld/v1``,
:mod:`megastation.web.ngsi`). :class:`WebServer` runs it with uvicorn as one more task
of the running loop; :func:`start_web` is what ``serve`` and ``demo`` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.store import Store
from megastation.web import auth, metrics, ngsi
from megastation.web.actions import Actions
from megastation.web.api import Api, error, openapi, routes
from megastation.web.views import Views

log = logging.getLogger("megastation.web")

STATIC = Path(str(resources.files("megastation.web") / "static"))

# Same-origin everything: no inline script, no CDN (the page works offline).
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    station: Station,
    store: Store,
    clock: Clock,
    *,
    central: Any = None,
    notify: Callable[[Any], Any] | None = None,
    secure_cookies: bool = False,
    cache_s: float = 2.0,
) -> Starlette:
    """The console, API, metrics and feed of one station.

    ``central`` is the running central system (live connections, frame counters) or
    None; ``notify`` receives :class:`~megastation.core.events.OperatorChanged` (the
    controller's event sink) or None; ``secure_cookies`` marks the login cookie
    ``Secure`` (set when serving TLS); ``cache_s`` is how long [s, wall] a computed
    view is shared by every page, the API and ``/metrics``.
    """
    views = Views(station, store, clock, central, cache_s=cache_s)
    api = Api(views, Actions(station, store, notify), station.web.sse_interval_s)
    registry = metrics.registry_for(views)
    web = station.web

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    async def index(request: Request) -> Response:
        if auth.principal(store, request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("index.html")

    async def login_page(request: Request) -> Response:
        return page("login.html")

    async def login(request: Request) -> Response:
        form = await _form(request)
        name, password = form.get("name", ""), form.get("password", "")
        got = await auth.login(store, name, password, web.session_hours)
        if got is None:
            return RedirectResponse("/login?failed=1", status_code=303)
        sid, _csrf = got
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(
            auth.COOKIE, sid, max_age=int(web.session_hours * 3600), httponly=True,
            secure=secure_cookies, samesite="strict", path="/",
        )  # fmt: skip
        return resp

    async def logout(request: Request) -> Response:
        p = auth.principal(store, request)
        form = await _form(request)
        if p is not None and not auth.csrf_ok(p, request, str(form.get("csrf_token", ""))):
            return error(403, "missing or wrong CSRF token", "csrf_token")
        auth.logout(store, request)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.COOKIE, path="/")
        return resp

    async def metrics_endpoint(request: Request) -> Response:
        # on the loop (a few ms): the store's connection is not for other threads' use
        body = metrics.render(registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi_doc(request: Request) -> Response:
        return JSONResponse(openapi())

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/healthz", health),
            Route("/metrics", metrics_endpoint),
            *_ngsi_routes(views),
            Route("/api/v1/openapi.json", openapi_doc),
            *routes(api),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(_SecurityHeaders)],
    )
    app.state.views = views
    app.state.api = api
    app.state.registry = registry
    return app


def _ngsi_routes(views: Views) -> list[Route]:
    """The city data hub feed: NGSI-LD entities of type EVChargingStation (this station)."""

    def ld(body: Any, status: int = 200) -> Response:
        return Response(
            json.dumps(body, separators=(",", ":")),
            status_code=status,
            media_type="application/ld+json",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    async def ngsi_entities(request: Request) -> Response:
        kind = request.query_params.get("type")
        if kind is None:
            return ld(
                {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                 "title": "type: required (EVChargingStation)"}, 400,
            )  # fmt: skip
        if kind != ngsi.ENTITY_TYPE:
            return ld([])
        return ld([ngsi.station_entity(views)])

    async def ngsi_entity(request: Request) -> Response:
        if request.path_params["entity_id"] != ngsi.entity_id(views):
            return ld(
                {"type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound",
                 "title": f"no entity {request.path_params['entity_id']}"}, 404,
            )  # fmt: skip
        return ld(ngsi.station_entity(views))

    return [
        Route("/ngsi-ld/v1/entities", ngsi_entities),
        Route("/ngsi-ld/v1/entities/{entity_id:path}", ngsi_entity),
    ]


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (the console's only forms: login and logout)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items()}


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C stops ``megastation serve`` as before."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class WebServer:
    """The app served by uvicorn on the running event loop (``await start()`` / ``stop()``)."""

    def __init__(
        self,
        station: Station,
        store: Store,
        clock: Clock,
        *,
        central: Any = None,
        notify: Callable[[Any], Any] | None = None,
        host: str | None = None,
        port: int | None = None,
        cache_s: float = 2.0,
    ) -> None:
        cfg = station.server
        self.host = host or station.web.host  # address to listen on
        self.tls = bool(cfg.tls_cert)  # TLS from the OCPP server's certificate settings
        self.app = create_app(
            station, store, clock, central=central, notify=notify, secure_cookies=self.tls,
            cache_s=cache_s,
        )  # fmt: skip
        self.config = uvicorn.Config(
            self.app,
            host=self.host,
            port=station.web.port if port is None else port,
            ssl_certfile=cfg.tls_cert,
            ssl_keyfile=cfg.tls_key,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = _Server(self.config)
        self.port: int | None = None  # bound port after start()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    async def start(self) -> WebServer:
        """Bind (an ``OSError`` says why not: uvicorn itself would exit the process) and serve."""
        sock = socket.create_server((self.host, self.config.port))
        # pay the views' first-call costs (pandas, SQLite statement caches) now, not in
        # the middle of the chargers' traffic when the first page opens
        views = self.app.state.views
        views.overview_json()
        views.day_flows(None)
        metrics.render(self.app.state.registry)
        views.invalidate()
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"cannot serve on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        log.info("console on %s", self.url)
        return self

    async def stop(self) -> None:
        self.app.state.api.closing.set()
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task

    async def wait(self) -> None:
        if self._task is not None:
            await self._task


def start_web(
    station: Station,
    store: Store,
    clock: Clock,
    *,
    host: str | None = None,
    port: int | None = None,
    notify: Callable[[Any], Any] | None = None,
    ready: Callable[[WebServer], Any] | None = None,
) -> Callable[[Any], Any]:
    """An extra task for :func:`ocpp_central.server.run_server`: serves the console beside
    the central system it is given, until cancelled. ``notify`` is the controller's event
    sink (operator changes re-plan at once); ``ready(server)`` is called once it listens."""

    async def task(central: Any) -> None:
        w = WebServer(station, store, clock, central=central, notify=notify, host=host, port=port)
        await w.start()
        if ready is not None:
            ready(w)
        try:
            await w.wait()
        finally:
            await w.stop()

    return task
