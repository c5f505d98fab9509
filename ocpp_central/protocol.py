"""OCPP-J framing without I/O: parse frames, build replies, validate, convert key case.

The ``ocpp`` library's own dispatcher validates in a thread pool, rebuilds dataclasses
and converts every key with regular expressions on every message; this module keeps
the same JSON schemas (the library's files, validators cached) and case rules but does
each piece of work once: key conversions are memoised, validation runs inline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import fastjsonschema
from jsonschema.exceptions import ValidationError as SchemaValidationError
from ocpp.exceptions import OCPPError
from ocpp.messages import Call as LibCall
from ocpp.messages import _validate_payload, get_validator
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

CALL, CALLRESULT, CALLERROR = 2, 3, 4

V16 = "1.6"
V201 = "2.0.1"
SUBPROTOCOLS = {"ocpp2.0.1": V201, "ocpp1.6": V16}  # preference order: 2.0.1 first

_ACTIONS = {V16: {a.value for a in Action16}, V201: {a.value for a in Action201}}

# Error kinds -> CALLERROR codes per version (1.6 spells two of them differently).
_CODES = {
    V16: {
        "format": "FormationViolation",
        "message_type": "ProtocolError",
        "occurrence": "OccurenceConstraintViolation",
        "property": "PropertyConstraintViolation",
        "type": "TypeConstraintViolation",
        "protocol": "ProtocolError",
        "not_implemented": "NotImplemented",
        "not_supported": "NotSupported",
        "internal": "InternalError",
        "security": "SecurityError",
        "generic": "GenericError",
    },
    V201: {
        "format": "FormatViolation",
        "message_type": "MessageTypeNotSupported",
        "occurrence": "OccurrenceConstraintViolation",
        "property": "PropertyConstraintViolation",
        "type": "TypeConstraintViolation",
        "protocol": "ProtocolError",
        "not_implemented": "NotImplemented",
        "not_supported": "NotSupported",
        "internal": "InternalError",
        "security": "SecurityError",
        "generic": "GenericError",
        "rpc": "RpcFrameworkError",
    },
}


class FrameError(Exception):
    """A frame that must be answered with a CALLERROR (``unique_id`` "-1" if unknown)."""

    def __init__(self, kind: str, description: str, unique_id: str = "-1") -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description
        self.unique_id = unique_id

    def code(self, version: str) -> str:
        codes = _CODES[version]
        return codes.get(self.kind) or codes["generic"]


MAX_DEPTH = 32  # arrays/objects nested deeper are refused (OCPP payloads use < 10 levels)
MAX_INT = 2**53  # integers beyond +-2**53 are not interoperable JSON (RFC 7493, I-JSON)


class _NumberError(ValueError):
    """A JSON number the central system will not take (non-finite or out of range)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind  # FrameError kind: "format" (not JSON) or "property" (out of range)


def _bad_constant(name: str) -> Any:
    raise _NumberError("format", f"{name} is not a JSON number")


def _checked_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf (1e400 overflows): NaN literals go to _bad_constant
        raise _NumberError("property", f"number {text[:40]} is out of range")
    return value


def _checked_int(text: str) -> int:
    value = int(text)
    if len(text) > 15 and not -MAX_INT <= value <= MAX_INT:
        raise _NumberError("property", f"integer {text[:40]} is out of range (|n| > 2**53)")
    return value


_DECODER = json.JSONDecoder(
    parse_float=_checked_float, parse_int=_checked_int, parse_constant=_bad_constant
)


def _lenient_uid(text: str | bytes) -> str:
    """The uniqueId of a frame refused for one of its numbers ("-1" if not readable)."""
    try:
        msg = json.loads(text, parse_constant=lambda _: None, parse_int=lambda _: 0)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "-1"
    if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str) and len(msg[1]) <= 36:
        try:
            msg[1].encode("utf-8")
        except UnicodeEncodeError:  # an unpaired surrogate
            return "-1"
        return msg[1]
    return "-1"


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _has_lone_surrogate(msg: Any) -> bool:
    try:
        json.dumps(msg, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays/objects in ``value`` nest deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values() if isinstance(x, dict | list))
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v if isinstance(x, dict | list))
    return False


def parse_frame(text: str | bytes) -> list[Any]:
    """Decode one frame into ``[2, id, action, payload]``, ``[3, id, payload]`` or ``[4, ...]``.

    Raises :class:`FrameError` for anything that is not a well-formed OCPP-J message:
    not JSON (also ``NaN`` / ``Infinity``, which JSON does not have), nested deeper than
    :data:`MAX_DEPTH`, or a number no charger can mean (``1e400`` overflows to infinity;
    integers beyond +-2**53) - the latter as a property error.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        msg = _DECODER.decode(text)
    except _NumberError as e:
        raise FrameError(e.kind, str(e), _lenient_uid(text)) from None
    except RecursionError:
        raise FrameError("format", f"message nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise FrameError("format", "message is not valid JSON") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError("format", "message must be a JSON array")
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else "-1"
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(msg, MAX_DEPTH):
        raise FrameError("format", f"message nested deeper than {MAX_DEPTH} levels", uid)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(msg):
        # "\ud800" alone is JSON syntax but no Unicode text (RFC 8259 §8.2, I-JSON): it
        # could be neither stored nor logged
        raise FrameError("format", "string with an unpaired surrogate (\\ud800-\\udfff)", "-1")
    mtype = msg[0]
    if isinstance(mtype, bool) or not isinstance(mtype, int):
        raise FrameError("format", "MessageTypeId must be a number", uid)
    if mtype == CALL:
        if (
            len(msg) != 4
            or not isinstance(msg[1], str)
            or not isinstance(msg[2], str)
            or not isinstance(msg[3], dict)
        ):
            raise FrameError("format", "CALL must be [2, uniqueId, action, {payload}]", uid)
        if len(msg[1]) > 36 or not msg[1]:
            raise FrameError("format", "uniqueId must be 1..36 characters", "-1")
        return msg
    if mtype == CALLRESULT:
        if len(msg) != 3 or not isinstance(msg[1], str) or not isinstance(msg[2], dict):
            raise FrameError("format", "CALLRESULT must be [3, uniqueId, {payload}]", uid)
        return msg
    if mtype == CALLERROR:
        if len(msg) != 5 or not isinstance(msg[1], str):
            raise FrameError(
                "format", "CALLERROR must be [4, uniqueId, code, text, {details}]", uid
            )
        return msg
    raise FrameError("message_type", f"MessageTypeId {mtype!r} is not supported", uid)


def call_error(unique_id: str, code: str, description: str, details: dict | None = None) -> str:
    return json.dumps(
        [CALLERROR, unique_id, code, description[:255], details or {}], separators=(",", ":")
    )


def call_result(unique_id: str, payload: dict[str, Any]) -> str:
    return json.dumps([CALLRESULT, unique_id, payload], separators=(",", ":"))


def known_action(action: str, version: str) -> bool:
    return action in _ACTIONS[version]


def _schema_kind(e: SchemaValidationError) -> str:
    v = e.validator
    if v in ("type", "format"):
        return "type"
    if v in ("required", "minItems", "maxItems", "dependencies"):
        return "occurrence"
    if v in ("enum", "maxLength", "minLength", "minimum", "maximum", "pattern", "multipleOf"):
        return "property"
    return "format"


def validate_request(action: str, payload: dict[str, Any], version: str) -> None:
    """Check an incoming CALL payload against the library's schema (validators cached)."""
    _validate(CALL, action, payload, version)


def validate_response(action: str, payload: dict[str, Any], version: str) -> None:
    _validate(CALLRESULT, action, payload, version)


@lru_cache(maxsize=512)
def _validator(message_type: int, action: str, version: str):
    return get_validator(message_type, action, version)


@lru_cache(maxsize=512)
def _fast_validator(message_type: int, action: str, version: str) -> Callable[[Any], Any]:
    """The same schema compiled to Python by fastjsonschema (no defaults filled in)."""
    return fastjsonschema.compile(
        _validator(message_type, action, version).schema, use_default=False
    )


def _validate(message_type: int, action: str, payload: dict[str, Any], version: str) -> None:
    """Compiled schema first (about 30x faster); jsonschema has the last word and the message.

    A payload the compiled check refuses (it is stricter on ``format``) is judged again by
    the library's jsonschema validator, so what is accepted is exactly what the ``ocpp``
    library accepts.
    """
    try:
        fast = _fast_validator(message_type, action, version)
    except OSError:
        raise FrameError("not_supported", f"no schema for {action} in OCPP {version}") from None
    try:
        fast(payload)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    validator = _validator(message_type, action, version)
    if validator.is_valid(payload):
        return
    err = next(validator.iter_errors(payload))
    path = ".".join(str(p) for p in err.absolute_path) or "payload"
    raise FrameError(_schema_kind(err), f"{action}: {path}: {err.message}"[:255])


def validate_outgoing_call(action: str, payload: dict[str, Any], version: str) -> None:
    """Validate a CALL we send, with the library's rules (1.6 decimals in profiles)."""
    _validate_payload(LibCall("0", action, dict(payload)), version)


# --------------------------------------------------------------------------- key case


@lru_cache(maxsize=4096)
def snake_key(key: str) -> str:
    """camelCase -> snake_case, same rules as ``ocpp.charge_point.camel_to_snake_case``."""
    key = key.replace("ocppCSMSURL", "ocpp_csms_url")
    key = key.replace("V2X", "_v2x").replace("V2G", "_v2g")
    s1 = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", key)
    return re.sub("([a-z0-9])([A-Z])(?=\\S)", r"\1_\2", s1).lower()


@lru_cache(maxsize=4096)
def camel_key(key: str) -> str:
    """snake_case -> camelCase, same rules as ``ocpp.charge_point.snake_to_camel_case``."""
    key = key.replace("soc", "SoC")
    key = key.replace("_v2x", "V2X")
    key = key.replace("ocpp_csms_url", "ocppCsmsUrl")
    key = key.replace("csms", "CSMS")
    key = key.replace("_url", "URL")
    key = key.replace("soc", "SoC").replace("_SoCket", "Socket")
    key = key.replace("_v2x", "V2X")
    key = key.replace("soc_limit_reached", "SOCLimitReached")
    key = key.replace("_v2x", "V2X").replace("_v2g", "V2G")
    parts = key.split("_")
    return parts[0] + "".join(x[:1].upper() + x[1:] for x in parts[1:])


def to_snake(data: Any) -> Any:
    if isinstance(data, dict):
        return {snake_key(k): to_snake(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_snake(v) for v in data]
    return data


def to_camel(data: Any) -> Any:
    """snake_case -> camelCase, dropping ``None`` values (optional fields left out)."""
    if isinstance(data, dict):
        return {camel_key(k): to_camel(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [to_camel(v) for v in data if v is not None]
    return data


def payload_problem(action: str, payload: dict[str, Any], ocpp_version: str) -> str | None:
    """Why a snake_case ``payload`` fails the request schema of ``action`` (None: it passes)."""
    camel = to_camel(payload)
    try:
        validate_outgoing_call(action, camel, ocpp_version)  # what the server runs
        return None
    except (OCPPError, ValueError, TypeError) as e:
        fallback = str((getattr(e, "details", None) or {}).get("cause") or e).splitlines()[0]
    try:  # the same schema again for a one-line message naming the field
        validate_request(action, camel, ocpp_version)
        text = fallback
    except FrameError as e:
        text = e.description.removeprefix(f"{action}: ")
    # Name fields as the operator wrote them (snake_case).
    return re.sub(r"\b([a-z]+(?:[A-Z][a-z0-9]*)+)\b", lambda m: snake_key(m[1]), text)
