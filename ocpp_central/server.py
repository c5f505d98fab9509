"""The OCPP-J central system: a websockets server speaking OCPP 1.6 and 2.0.1.

One :class:`ChargerSession` per connected charger routes its frames to the version's
``@on`` handlers (:mod:`ocpp_central.handlers`) and carries calls back to it. Calls to
a charger (:meth:`CentralSystem.call`) always run in the caller's own task, never
inside a handler. Operators reach the running server through the durable command
table (:mod:`megastation.store.commands`), polled on the injected clock.

Group commit: the handlers of every CALL received in one event-loop turn run inside
one SQLite transaction (each in its own savepoint, so a failing one leaves nothing
half-stored), together with the raw message-log rows buffered so far. The transaction
is committed before any of those CALLs is answered: a charger never gets a
CALLRESULT for data that is not in the WAL (``synchronous=NORMAL``: it survives a
crash or ``kill -9`` of the server; a power cut may lose the last commits). Domain
events raised by those handlers are published after the commit.

Network timeouts (a charger's answer to a call) are real seconds, not clock time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import gc
import http
import inspect
import logging
import socket
import ssl
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import create_route_map
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import PayloadTooBig
from websockets.http11 import Request, Response

from megastation.core import events
from megastation.core.clock import Clock
from megastation.core.config import ConfigError, Station
from megastation.store import Store, commands, iso, records
from megastation.store.commands import CommandOutcome
from ocpp_central import protocol
from ocpp_central.auth import verify_password
from ocpp_central.handlers import Handlers16, Handlers201
from ocpp_central.protocol import CALL, CALLERROR, CALLRESULT, FrameError

log = logging.getLogger("megastation.ocpp")

_REPLAY_CACHE = 64  # answers remembered per charger, for CALLs re-sent after a reconnect
# A charger that connects and sends no BootNotification within this long [s] while its
# registration is Accepted (a reconnect: 1.6 boots only at power-up) is ready for calls.
READY_AFTER_S = 5.0
LISTEN_BACKLOG = 4096  # pending connections the listening socket queues


# DataTransfer handler: (charger_id, message_id, data) -> (status, response data or None);
# status is Accepted, Rejected or UnknownMessageId.
DataTransferHandler = Callable[[str, str | None, Any], tuple[str, Any]]


class ListenError(OSError):
    """The server cannot listen on ``host:port``; ``kind`` says which of the two is wrong."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        self.host = host  # the address asked for
        self.port = port  # the port asked for (0 = any free)
        self.cause = cause  # the OSError from bind / name resolution
        # "port": in use or not allowed; "host": unknown name or not an address of this machine
        self.kind = "port" if cause.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
        if isinstance(cause, socket.gaierror):
            reason = f"unknown host ({cause.strerror})"
        elif cause.errno == errno.EADDRINUSE:
            reason = "address already in use"
        else:
            reason = (cause.strerror or str(cause)).lower()
        super().__init__(cause.errno, f"cannot listen on {host}:{port}: {reason}")


def tls_context(station: Station) -> ssl.SSLContext | None:
    """The server TLS context from ``[server] tls_cert`` / ``tls_key`` (None without TLS).

    Raises :class:`ConfigError` naming the field whose file cannot be loaded. Encrypted
    keys are not supported (no passphrase prompt on a server).
    """
    cfg = station.server
    if not cfg.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cfg.tls_cert)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"{station.source}: server.tls_cert: cannot load a PEM certificate from "
            f"{cfg.tls_cert}: {e}"
        ) from None
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key, password=lambda: b"")
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"{station.source}: server.tls_key: cannot load the private key of tls_cert from "
            f"{cfg.tls_key} (not a PEM key, encrypted, or not tls_cert's key): {e}"
        ) from None
    return ctx


def accept_data_transfer(charger_id: str, message_id: str | None, data: Any) -> tuple[str, Any]:
    """DataTransfer handler of a configured vendor: Accepted, no data back.

    The message itself, its data exactly as sent, is in the raw message log.
    """
    log.debug("%s: DataTransfer accepted (messageId %s)", charger_id, message_id)
    return "Accepted", None


def charger_id_from_path(path: str) -> str:
    """The charger identity: the last URL path segment, percent-decoded."""
    path = path.split("?", 1)[0].rstrip("/")
    return unquote(path.rsplit("/", 1)[-1])


class ChargerSession:
    """One charger's live connection: frame routing both ways."""

    def __init__(
        self,
        system: CentralSystem,
        charger_id: str,
        ws: ServerConnection,
        version: str,
        registration: str = "Accepted",
    ) -> None:
        self.system = system  # the central system that owns this session
        self.charger_id = charger_id  # identity from the URL path
        self.ws = ws  # the websockets connection
        self.version = version  # "1.6" or "2.0.1"
        self.handlers = Handlers16(self) if version == protocol.V16 else Handlers201(self)
        self.routes = _route_map(self.handlers)  # action -> {"_on_action": fn, ...}
        self._call_lock = asyncio.Lock()  # one outstanding CALL per direction
        self._pending: tuple[str, asyncio.Future[list[Any]]] | None = None
        self.closed = False
        # Registration as last told to the charger (store value at connect, then each
        # BootNotification's answer). While not Accepted only BootNotification, and what
        # the CSMS asked for (TriggerMessage; 2.0.1 NotifyReport), is processed.
        self.registration = registration
        self._triggered: set[str] = set()  # actions requested by TriggerMessage while pending
        self.last_rx = time.monotonic()  # last frame received [s, monotonic real time]
        # Ready for calls from the CSMS (configuration read, profiles): its BootNotification
        # on this connection was answered Accepted, or (a reconnect without a boot) it sent
        # another CALL while Accepted, or READY_AFTER_S passed with no boot begun.
        self.ready = False
        self.settled = asyncio.Event()  # readiness decided (ready or not)
        self._boot_seen = False  # a BootNotification arrived on this connection
        self._ready_timer: asyncio.TimerHandle | None = None

    def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.settled.set()

    def _ready_without_boot(self) -> None:
        if not self._boot_seen and not self.settled.is_set():
            self._set_ready(self.registration == "Accepted")

    # ----------------------------------------------------------------- incoming

    async def run(self) -> None:
        try:
            async for frame in self.ws:
                await self.on_frame(frame)
        except websockets.ConnectionClosed:
            too_big = getattr(self.ws.protocol, "parser_exc", None)
            if isinstance(too_big, PayloadTooBig):
                # a compressed frame is not inflated beyond the limit: its size is unknown
                size = (
                    f"frame of {too_big.size} bytes"
                    if too_big.size is not None
                    else f"compressed frame of over {too_big.max_size} bytes"
                )
                text = (
                    f"{size} refused: over [server] max_frame_bytes = {too_big.max_size}; "
                    "connection closed (1009)"
                )
                log.warning("%s: %s", self.charger_id, text)
                self.system.log_raw(self.charger_id, "in", None, None, None, text)
        finally:
            self.closed = True
            self.settled.set()
            if self._ready_timer is not None:
                self._ready_timer.cancel()
            if self._pending and not self._pending[1].done():
                self._pending[1].set_exception(ConnectionError("connection closed"))

    async def on_frame(self, frame: str | bytes) -> None:
        sys = self.system
        self.last_rx = time.monotonic()
        try:
            msg = protocol.parse_frame(frame)
        except FrameError as e:
            sys.log_raw(self.charger_id, "in", None, e.unique_id, None, frame)
            await self._send_error(e.unique_id, e.code(self.version), e.description)
            return
        mtype = msg[0]
        if mtype != CALL:
            sys.log_raw(self.charger_id, "in", mtype, msg[1], None, frame)
            if self._pending and self._pending[0] == msg[1] and not self._pending[1].done():
                self._pending[1].set_result(msg)
            else:
                log.warning("%s: answer to no pending call: %.200s", self.charger_id, frame)
            return
        uid, action, payload = msg[1], msg[2], msg[3]
        sys.log_raw(self.charger_id, "in", CALL, uid, action, frame)
        cache = sys._answers.setdefault(self.charger_id, OrderedDict())
        cached = cache.get(uid)
        if cached is not None and cached[0] == frame:
            await self._send(cached[1], CALLRESULT, uid, action)  # re-sent: same answer again
            return
        route = self.routes.get(action)
        if action == "BootNotification":
            self._boot_seen = True
        try:
            if self.registration != "Accepted" and not self._allowed_unregistered(action):
                # OCPP 2.0.1 B02.FR.09 / B03.FR.07; 1.6 §4.2: not before being accepted.
                raise FrameError(
                    "security",
                    f"{action} refused: charger {self.charger_id} is {self.registration}; "
                    "send BootNotification after an operator accepts it",
                    uid,
                )
            if route is None or "_on_action" not in route:
                # OCPP-J (1.6 table 7, 2.0.1 part 4 §4.3): NotImplemented = action not
                # known by the receiver; NotSupported = recognised but not supported
                if protocol.known_action(action, self.version):
                    raise FrameError("not_supported", f"{action} is not supported here", uid)
                raise FrameError(
                    "not_implemented", f"{action} is not an OCPP {self.version} action", uid
                )
            protocol.validate_request(action, payload, self.version)
            kwargs = protocol.to_snake(payload)
            if action == "DataTransfer" and "data" in payload:
                kwargs["data"] = payload["data"]  # vendor data verbatim, keys not re-cased
            result = await sys.run_write(route["_on_action"], kwargs)
            if inspect.isawaitable(result):
                result = await result
            answer = protocol.to_camel(result)
            if action == "DataTransfer" and result.get("data") is not None:
                answer["data"] = result["data"]
            if sys.validate_responses:
                protocol.validate_response(action, answer, self.version)
        except FrameError as e:
            await self._send_error(uid, e.code(self.version), e.description)
            return
        except OCPPError as e:
            await self._send_error(uid, e.code, str(e.description))
            return
        except records.InvalidValue as e:  # a value that cannot be stored (named)
            log.warning("%s: %s refused: %s", self.charger_id, action, e)
            kind = "format" if e.kind == "format" else "property"
            await self._send_error(uid, protocol._CODES[self.version][kind], f"{action}: {e}")
            return
        except TypeError as e:  # a handler signature the payload does not fit
            log.warning("%s: %s: %s", self.charger_id, action, e)
            await self._send_error(uid, protocol._CODES[self.version]["format"], str(e))
            return
        except Exception:
            log.exception("%s: %s handler failed", self.charger_id, action)
            await self._send_error(uid, "InternalError", "the central system failed to handle it")
            return
        text = protocol.call_result(uid, answer)
        cache[uid] = (frame, text)
        if len(cache) > _REPLAY_CACHE:
            cache.popitem(last=False)
        await self._send(text, CALLRESULT, uid, action)
        if action == "BootNotification":  # calls to it may follow its answer, not precede it
            self._set_ready(self.registration == "Accepted")
        elif not self.ready and self.registration == "Accepted":
            self._set_ready(True)  # talking normally (reconnected without a boot)
        after = route.get("_after_action")
        if after is not None:
            res = after(**kwargs)
            if inspect.isawaitable(res):
                sys._spawn(res)

    def _allowed_unregistered(self, action: str) -> bool:
        if action == "BootNotification":
            return True
        if action == "NotifyReport" and self.version == protocol.V201:
            return True  # answers GetBaseReport / GetReport, allowed while Pending
        if self.registration == "Pending" and action in self._triggered:
            self._triggered.discard(action)
            return True
        return False

    async def _send(self, text: str, mtype: int, uid: str, action: str | None) -> None:
        self.system.log_raw(self.charger_id, "out", mtype, uid, action, text)
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(text)

    async def _send_error(self, uid: str, code: str, description: str) -> None:
        await self._send(protocol.call_error(uid, code, description), CALLERROR, uid, None)

    # ----------------------------------------------------------------- outgoing

    async def call(self, action: str, payload: dict[str, Any], timeout_s: float) -> CommandOutcome:
        """Send one CALL and wait for its answer (never raises)."""
        camel = protocol.to_camel(payload)
        try:
            protocol.validate_outgoing_call(action, camel, self.version)
        except OCPPError as e:
            return CommandOutcome(commands.ERROR, error=f"{e.code}: {e.details or e.description}")
        except (OSError, ValueError) as e:
            return CommandOutcome(commands.ERROR, error=f"{action}: {e}")
        async with self._call_lock:
            if self.closed:
                return CommandOutcome(commands.OFFLINE, error="charger disconnected")
            if action == "TriggerMessage" and payload.get("requested_message"):
                self._triggered.add(payload["requested_message"])
            uid = str(uuid.uuid4())
            fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._pending = (uid, fut)
            try:
                text = protocol.json.dumps([CALL, uid, action, camel], separators=(",", ":"))
                self.system.log_raw(self.charger_id, "out", CALL, uid, action, text)
                await self.ws.send(text)
                answer = await asyncio.wait_for(fut, timeout_s)
            except TimeoutError:
                return CommandOutcome(commands.TIMEOUT, error=f"no answer within {timeout_s:g} s")
            except (websockets.ConnectionClosed, ConnectionError):
                return CommandOutcome(
                    commands.OFFLINE, error="charger disconnected during the call"
                )
            finally:
                self._pending = None
                # The close path fails this future while the send may still be waiting
                # on the closing connection (or a timeout may win the race): whoever
                # returned first, the answer is consumed here, so it never surfaces as
                # "Future exception was never retrieved".
                if fut.done() and not fut.cancelled():
                    fut.exception()
        if answer[0] == CALLERROR:
            code = answer[2] if len(answer) > 2 else "GenericError"
            text = answer[3] if len(answer) > 3 else ""
            return CommandOutcome(commands.ERROR, error=f"{code}: {text}")
        try:
            protocol.validate_response(action, answer[2], self.version)
        except FrameError as e:
            return CommandOutcome(
                commands.ERROR,
                protocol.to_snake(answer[2]),
                error=f"invalid response: {e.description}",
            )
        return commands.outcome_from_response(protocol.to_snake(answer[2]))


class CentralSystem:
    """The OCPP central system of one station.

    ``on_event`` receives :mod:`megastation.core.events` after they are stored; it may be a
    coroutine function (run as a task). ``response_timeout_s`` bounds a charger's
    answer to a call [s, real time]. ``data_transfer`` maps the vendor ids this station
    understands to a handler ``(charger_id, message_id, data) -> (status, data)``; the
    station's ``[server] data_transfer_vendors`` get :func:`accept_data_transfer` unless
    given a handler here. DataTransfer from any other vendor is answered
    ``UnknownVendorId`` (1.6 and 2.0.1).
    """

    def __init__(
        self,
        station: Station,
        store: Store,
        clock: Clock,
        *,
        on_event: Callable[[events.Event], Any] | None = None,
        response_timeout_s: float = 30,
        command_poll_s: float = 1.0,
        validate_responses: bool = False,
        max_frame_bytes: int | None = None,
        close_timeout_s: float = 5.0,
        data_transfer: Mapping[str, DataTransferHandler] | None = None,
    ) -> None:
        self.station = station  # the station config
        self.store = store  # source of truth; in-memory state is a cache of it
        self.clock = clock  # injected time: timestamps, command poller, log retention
        self.on_event = on_event  # subscriber to domain events
        self.response_timeout_s = response_timeout_s  # charger's answer to a call [s]
        self.command_poll_s = command_poll_s  # command table poll interval [clock s]
        self.validate_responses = validate_responses  # check our own answers too (tests)
        # larger incoming frames close the connection (1009); default [server] max_frame_bytes
        self.max_frame_bytes = max_frame_bytes or station.server.max_frame_bytes
        # a closing peer that does not finish the close handshake in this long is cut off
        # (a frozen charger after a ping timeout: marked disconnected then) [s]
        self.close_timeout_s = close_timeout_s
        # vendorId -> handler for DataTransfer from chargers; other vendors: UnknownVendorId.
        # [server] data_transfer_vendors are accepted as they come (kept in the message log).
        self.data_transfer: dict[str, DataTransferHandler] = {
            **dict.fromkeys(station.server.data_transfer_vendors, accept_data_transfer),
            **(data_transfer or {}),
        }
        self.sessions: dict[str, ChargerSession] = {}  # connected chargers by id
        self.server: websockets.asyncio.server.Server | None = None
        self.port: int | None = None  # bound port after start()
        self._answers: dict[str, OrderedDict[str, tuple[Any, str]]] = {}  # replay cache
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log_rows: list[tuple] = []
        self._log_flush: asyncio.TimerHandle | None = None
        self._log_ts: str | None = None  # message-log timestamp of this event-loop turn
        self._poller: asyncio.Task[None] | None = None
        self.max_batch = 500  # CALLs per group commit at most
        self._writes: list[tuple[Callable[..., Any], dict[str, Any], asyncio.Future[Any]]] = []
        self._commit_handle: asyncio.Handle | None = None
        self._batch_events: list[events.Event] | None = None  # events raised in a batch
        self._in_flight: set[int] = set()  # operator commands sent, not yet answered
        self._watchdog: asyncio.Task[None] | None = None  # drops silent chargers
        self._gc_task: asyncio.Task[None] | None = None  # collects, then freezes survivors
        self.closing = False  # close() has begun
        # frames by (direction, message type, action; None for answers received), for /metrics
        self.frame_counts: Counter[tuple[str, int | None, str | None]] = Counter()
        self.last_heartbeat: dict[str, str] = {}  # charger id -> ISO time of its last Heartbeat

    # ----------------------------------------------------------------- lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 0
    ) -> websockets.asyncio.server.Server:
        """Register the configured chargers, listen, and start the command poller.

        Raises :class:`~megastation.core.config.ConfigError` naming ``server.tls_cert`` /
        ``server.tls_key`` when they cannot be loaded, and :class:`ListenError` when
        ``host:port`` cannot be bound (port in use, unknown host).
        """
        ssl_ctx = tls_context(self.station)
        records.register_station_chargers(self.store, self.station)  # connected flags reset
        stale = commands.interrupt_sent(
            self.store, reason="the server stopped before the charger answered"
        )
        if stale:
            log.warning("commands %s were left 'sent' by a stopped server: interrupted", stale)
        try:
            self.server = await serve(
                self._handler,
                host,
                port,
                subprotocols=list(protocol.SUBPROTOCOLS),
                select_subprotocol=self._select_subprotocol,
                process_request=self._process_request,
                max_size=self.max_frame_bytes,
                ssl=ssl_ctx,
                # WebSocket keepalive: a peer that does not answer a ping within
                # ping_timeout_s is closed (1011) and so marked disconnected
                ping_interval=self.station.server.ping_interval_s or None,
                ping_timeout=self.station.server.ping_timeout_s,
                close_timeout=self.close_timeout_s,
                # accept queue: 2,000 chargers reconnecting at once overflowed the default
                # 100 (SYN retries: all back in 26 s instead of a few; capped by somaxconn)
                backlog=LISTEN_BACKLOG,
            )
        except OSError as e:
            raise ListenError(host, port, e) from e
        self.port = self.server.sockets[0].getsockname()[1]
        self._poller = asyncio.create_task(self._poll_commands())
        if self.station.server.silence_timeout_s > 0:
            self._watchdog = asyncio.create_task(self._watch_silence())
        if self.station.server.gc_freeze_interval_s > 0:
            self._gc_task = asyncio.create_task(self._freeze_survivors())
        log.info("OCPP central system listening on %s:%s", host, self.port)
        return self.server

    async def close(self, grace_s: float = 2.0) -> None:
        """Stop cleanly (Ctrl-C, SIGTERM): every charger gets a 1001 close ("going away")
        and is marked disconnected; operator commands still waiting for an answer are
        resolved ``interrupted``; what was received is committed."""
        self.closing = True
        for t in (self._poller, self._watchdog, self._gc_task):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        if self._gc_task is not None:
            gc.unfreeze()  # what was frozen is the collector's again
        if self.server:
            self.server.close()  # closes every connection with 1001
            await self.server.wait_closed()  # handlers ran: connected flags cleared
        if self._tasks:  # calls ended with their connections: let them record that
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.commit_writes()
        self.flush_log()
        commands.interrupt_sent(
            self.store,
            sorted(self._in_flight),
            reason="the server stopped before the charger answered",
        )

    # ----------------------------------------------------------------- handshake

    @staticmethod
    def _select_subprotocol(conn: ServerConnection, offered: Iterable[str]) -> str | None:
        for proto in protocol.SUBPROTOCOLS:  # 2.0.1 preferred
            if proto in offered:
                return proto
        return None  # OCPP-J: finish the handshake without one, then close

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        charger_id = charger_id_from_path(request.path)
        reason = await self._check_request(charger_id, request)
        if reason is None:
            conn.username = charger_id
            return None
        status, text = reason
        log.warning("refused %r from %s: %s", charger_id, conn.remote_address, text)
        self.log_raw(charger_id or None, "in", None, None, "Handshake", f"refused: {text}")
        response = conn.respond(status, text + "\n")
        if status == http.HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="megastation", charset="UTF-8"'
        return response

    async def _check_request(self, charger_id: str, request: Request) -> tuple[int, str] | None:
        if not charger_id:
            return http.HTTPStatus.NOT_FOUND, "no charger identity in the URL"
        row = records.get_charger(self.store, charger_id)
        if row is None:
            if not self.station.site.auto_register:
                return http.HTTPStatus.NOT_FOUND, f"unknown charger {charger_id}"
            records.add_pending_charger(self.store, charger_id)
            row = records.get_charger(self.store, charger_id)
        if row["registration"] == "Rejected":
            return http.HTTPStatus.FORBIDDEN, f"charger {charger_id} is rejected"
        stored = row["password_hash"]
        if stored:
            creds = _basic_credentials(request.headers.get("Authorization"))
            if creds is None:
                return http.HTTPStatus.UNAUTHORIZED, "missing credentials"
            username, password = creds
            if username != charger_id:
                return http.HTTPStatus.UNAUTHORIZED, "username must be the charger identity"
            ok = await asyncio.get_running_loop().run_in_executor(
                None, verify_password, password, stored
            )
            if not ok:
                return http.HTTPStatus.UNAUTHORIZED, "wrong password"
        return None

    # ----------------------------------------------------------------- connections

    async def _handler(self, ws: ServerConnection) -> None:
        charger_id = ws.username
        if ws.subprotocol is None:
            log.warning("%s offered no supported subprotocol; closing", charger_id)
            self.log_raw(charger_id, "in", None, None, "Handshake", "refused: no OCPP subprotocol")
            await ws.close(1002, "no supported OCPP subprotocol (ocpp2.0.1, ocpp1.6)")
            return
        version = protocol.SUBPROTOCOLS[ws.subprotocol]
        old = self.sessions.get(charger_id)
        row = records.get_charger(self.store, charger_id)
        registration = row["registration"] if row else "Rejected"
        session = ChargerSession(self, charger_id, ws, version, registration)
        self.sessions[charger_id] = session
        if old is not None:
            # the old connection may be frozen: close it in the background (aborted if it
            # does not answer the close within a second), the new one starts at once
            log.info("%s reconnected; closing its old connection", charger_id)
            old.closed = True
            self._spawn(_close_quickly(old.ws, 1000, "replaced by a new connection"))
        session._ready_timer = asyncio.get_running_loop().call_later(
            READY_AFTER_S, session._ready_without_boot
        )
        now = self.clock.now()
        records.set_connected(self.store, charger_id, True, now, version)
        self.emit(events.ChargerConnected(charger_id, now, version))
        log.info("%s connected (OCPP %s)", charger_id, version)
        try:
            await session.run()
        finally:
            if self.sessions.get(charger_id) is session:
                del self.sessions[charger_id]
                now = self.clock.now()
                records.set_connected(self.store, charger_id, False, now)
                self.emit(events.ChargerDisconnected(charger_id, now))
                log.info("%s disconnected", charger_id)

    def drop(self, session: ChargerSession, reason: str) -> None:
        """Mark a charger disconnected now (a dead connection) and close its socket."""
        session.closed = True
        if session._pending and not session._pending[1].done():
            session._pending[1].set_exception(ConnectionError(reason))
        if self.sessions.get(session.charger_id) is session:
            del self.sessions[session.charger_id]
            now = self.clock.now()
            records.set_connected(self.store, session.charger_id, False, now)
            self.emit(events.ChargerDisconnected(session.charger_id, now))
        log.warning("%s: %s: disconnected", session.charger_id, reason)
        self.log_raw(session.charger_id, "in", None, None, None, f"dropped: {reason}")
        self._spawn(_close_quickly(session.ws, 1001, reason[:120]))

    async def _freeze_survivors(self) -> None:
        """Every ``[server] gc_freeze_interval_s`` (real time): unfreeze, collect all garbage
        once, freeze what survives. Python's full collections scan every tracked object; with
        10,000 connections each pass stalled the loop ~0.5 s (paced benchmark p99 630 ms; with
        the collector off 14.5 ms). Frozen objects are skipped until the next round, so a
        closed connection's cycles are freed within one interval."""
        interval_s = self.station.server.gc_freeze_interval_s
        await asyncio.sleep(min(interval_s, 10.0))  # first freeze once start-up has settled
        while True:
            t0 = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            log.debug(
                "gc: %d objects frozen in %.0f ms",
                gc.get_freeze_count(),
                1000 * (time.perf_counter() - t0),
            )
            await asyncio.sleep(interval_s)

    async def _watch_silence(self) -> None:
        """Drop chargers that sent nothing for ``[server] heartbeat_timeout_s`` (real time)."""
        timeout_s = self.station.server.silence_timeout_s
        while True:
            await asyncio.sleep(min(timeout_s / 4, 10.0))
            cutoff = time.monotonic() - timeout_s
            for session in [s for s in self.sessions.values() if s.last_rx < cutoff]:
                self.drop(session, f"no message for {timeout_s:g} s (heartbeat timeout)")

    def is_ready(self, charger_id: str) -> bool:
        """Connected and ready for the CSMS's calls (see :attr:`ChargerSession.ready`)."""
        s = self.sessions.get(charger_id)
        return s is not None and s.ready and not s.closed

    async def wait_ready(self, charger_id: str, timeout_s: float) -> bool:
        """Wait (real time) until the charger is ready for calls; False if it is not
        connected, not accepted (Pending/Rejected) or not ready within ``timeout_s``."""
        s = self.sessions.get(charger_id)
        if s is None:
            return False
        if not s.settled.is_set():
            try:
                await asyncio.wait_for(s.settled.wait(), timeout_s)
            except TimeoutError:
                return False
        return s.ready and not s.closed and self.sessions.get(charger_id) is s

    def is_connected(self, charger_id: str) -> bool:
        return charger_id in self.sessions

    def ocpp_version(self, charger_id: str) -> str | None:
        s = self.sessions.get(charger_id)
        return s.version if s else None

    # ----------------------------------------------------------------- calls to chargers

    async def call(self, charger_id: str, action: str, payload: dict[str, Any]) -> CommandOutcome:
        """Send ``action`` with a snake_case payload for the charger's version; record the outcome.

        Never raises for offline, timeout or CALLERROR: the outcome says so. Await it from
        your own task, never from inside an ``@on`` handler.
        """
        sent_at = self.clock.now()
        outcome = await self._send_call(charger_id, action, payload)
        cid = commands.record_command(
            self.store, charger_id, action, payload, outcome, source="api", sent_at=sent_at
        )
        return CommandOutcome(outcome.status, outcome.response, outcome.error, cid)

    async def _send_call(
        self, charger_id: str, action: str, payload: dict[str, Any]
    ) -> CommandOutcome:
        session = self.sessions.get(charger_id)
        if session is None:
            return CommandOutcome(commands.OFFLINE, error="charger not connected")
        try:
            return await session.call(action, payload, self.response_timeout_s)
        except Exception as e:  # never raise to the caller
            log.exception("%s: %s failed", charger_id, action)
            return CommandOutcome(commands.ERROR, error=repr(e))

    async def process_pending_commands(self) -> list[int]:
        """Pick up queued operator commands and send each from its own task; return ids."""
        rows = commands.claim_pending_commands(self.store)
        for row in rows:
            self._spawn(self._run_command(row))
        return [r["id"] for r in rows]

    async def _run_command(self, row: dict[str, Any]) -> None:
        self._in_flight.add(row["id"])
        try:
            outcome = await self._send_call(row["charger_id"], row["action"], row["payload"])
            if self.closing and outcome.status in (commands.OFFLINE, commands.TIMEOUT):
                outcome = CommandOutcome(
                    commands.INTERRUPTED, error="the server stopped before the charger answered"
                )
            commands.finish_command(self.store, row["id"], outcome)
        finally:
            self._in_flight.discard(row["id"])
        log.info(
            "command %s %s -> %s: %s", row["id"], row["action"], row["charger_id"], outcome.status
        )

    async def _poll_commands(self) -> None:
        last_prune = None
        while True:
            try:
                await self.process_pending_commands()
                now = self.clock.now()
                if last_prune is None or now - last_prune > timedelta(hours=1):
                    self.prune_message_log()
                    last_prune = now
            except Exception:
                log.exception("command poller")
            await self.clock.sleep(self.command_poll_s)

    # ----------------------------------------------------------------- group commit

    def run_write(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Run ``fn(**kwargs)`` in the next group commit; the future resolves after COMMIT."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((fn, kwargs, fut))
        if len(self._writes) >= self.max_batch:
            self.commit_writes()
        elif self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_soon(self.commit_writes)
        return fut

    def commit_writes(self) -> None:
        """Run the queued handlers in one transaction, commit, then resolve and publish."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        writes, self._writes = self._writes, []
        if not writes:
            return
        store = self.store
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None, list]] = []
        try:
            with records.group_commit(store):
                for fn, kwargs, fut in writes:
                    self._batch_events = []
                    try:
                        with records.savepoint(store):
                            res = fn(**kwargs)
                        done.append((fut, res, None, self._batch_events))
                    except Exception as e:  # this CALL fails alone (its CALLERROR follows)
                        done.append((fut, None, e, []))
                self._batch_events = None
                rows, self._log_rows = self._log_rows, []
                try:  # a raw-log row that cannot be written must not cost the batch its data
                    with records.savepoint(store):
                        records.log_messages(store, rows)
                except Exception:
                    log.exception("message log: %d rows not written", len(rows))
        except Exception as e:
            self._batch_events = None
            log.exception("group commit of %d messages failed", len(writes))
            for _, _, fut in writes:
                if not fut.done():
                    fut.set_exception(e)
            return
        for fut, res, exc, evs in done:
            for ev in evs:
                self._publish(ev)
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(res)

    # ----------------------------------------------------------------- events and raw log

    def emit(self, event: events.Event) -> None:
        if self.on_event is None:
            return
        if self._batch_events is not None:  # published after the batch commits
            self._batch_events.append(event)
            return
        self._publish(event)

    def _publish(self, event: events.Event) -> None:
        try:
            res = self.on_event(event)
            if inspect.isawaitable(res):
                self._spawn(res)
        except Exception:
            log.exception("on_event failed for %r", event)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def log_raw(
        self,
        charger_id: str | None,
        direction: str,
        mtype: int | None,
        uid: str | None,
        action: str | None,
        payload: str | bytes,
    ) -> None:
        """Buffer one raw message; written in batches (with the next group commit, or ~0.5 s).

        Rows logged in one event-loop turn share one timestamp (formatted once).
        """
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", "replace")
        uid, action = _utf8(uid), _utf8(action)  # storable whatever a charger sent
        ts = self._log_ts
        if ts is None:
            ts = self._log_ts = iso(self.clock.now())
            asyncio.get_running_loop().call_soon(self._reset_log_ts)
        self._log_rows.append((charger_id, direction, mtype, uid, action, payload, ts))
        self.frame_counts[direction, mtype, action] += 1
        if action == "Heartbeat" and mtype == CALL and charger_id:
            self.last_heartbeat[charger_id] = ts
        if len(self._log_rows) >= 500:
            self.flush_log()
        elif self._log_flush is None:
            self._log_flush = asyncio.get_running_loop().call_later(0.5, self.flush_log)

    def _reset_log_ts(self) -> None:
        self._log_ts = None

    def flush_log(self) -> None:
        if self._log_flush is not None:
            self._log_flush.cancel()
            self._log_flush = None
        rows, self._log_rows = self._log_rows, []
        try:
            records.log_messages(self.store, rows)
        except Exception:
            log.exception("writing the message log")

    def prune_message_log(self) -> int:
        days = self.station.server.message_log_retention_days
        if days <= 0:
            return 0
        return records.prune_message_log(self.store, self.clock.now() - timedelta(days=days))


async def _close_quickly(ws: ServerConnection, code: int, reason: str, wait_s: float = 1.0) -> None:
    """Close ``ws``; a peer that does not complete the close within ``wait_s`` is cut off."""
    try:
        await asyncio.wait_for(ws.close(code, reason), wait_s)
    except (TimeoutError, websockets.ConnectionClosed, OSError):
        pass
    finally:
        if ws.transport is not None and not ws.transport.is_closing():
            ws.transport.abort()


_ROUTES: dict[type, dict[str, dict[str, Any]]] = {}


def _route_map(handlers: Any) -> dict[str, dict[str, Any]]:
    """``create_route_map(handlers)``, the attribute scan done once per class (it took
    ~0.7 ms per connection: most of a reconnect storm's handshake CPU)."""
    cls = type(handlers)
    plain = _ROUTES.get(cls)
    if plain is None:
        plain = _ROUTES[cls] = {
            action: {k: getattr(v, "__func__", v) for k, v in opts.items() if callable(v)}
            for action, opts in create_route_map(handlers).items()
        }
    return {
        action: {k: f.__get__(handlers, cls) for k, f in opts.items()}
        for action, opts in plain.items()
    }


def _utf8(text: str | None) -> str | None:
    """``text`` as storable UTF-8 (an unpaired surrogate becomes '?')."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def run_server(
    station: Station,
    store: Store,
    clock: Clock,
    host: str,
    port: int,
    *,
    extra_tasks: Iterable[Callable[[CentralSystem], Awaitable[Any]]] = (),
    on_event: Callable[[events.Event], Any] | None = None,
    ready: Callable[[CentralSystem], Any] | None = None,
) -> None:
    """Run the central system until cancelled, with ``extra_tasks`` alongside.

    Each extra task is a coroutine function taking the :class:`CentralSystem` (the
    controller loop goes here); if one ends with an error the server stops.
    """
    system = CentralSystem(station, store, clock, on_event=on_event)
    await system.start(host, port)
    if ready is not None:
        ready(system)
    tasks: list[asyncio.Task[Any]] = []
    try:
        tasks = [asyncio.create_task(t(system)) for t in extra_tasks]
        await asyncio.gather(asyncio.Future(), *tasks)
    finally:
        for t in tasks:
            t.cancel()
        await system.close()
