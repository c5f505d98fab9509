"""What the station knows about chargers and sessions: reads and writes on the store.

The OCPP handlers call these functions (no SQL lives in the protocol layer); the
controller and the CLI read through them too. Units: energy in kWh, power in kW,
meter registers in Wh where OCPP speaks Wh (``meter_start_wh``); timestamps are stored
as ISO UTC text (:func:`megastation.store.iso`) and returned as tz-aware datetimes.

Re-sent and replayed charger messages are idempotent here: a StartTransaction with
the same charger, connector, start time and meter reading returns the transaction
already stored; a TransactionEvent with a seqNo already seen changes nothing; a meter
sample with the same charger, connector, time, measurand, phase, location and context
is stored once. So nothing is double-counted, whatever order messages arrive in.

Group commit: inside :func:`group_commit` the write functions here do not commit
themselves; the caller (the central system) commits the whole batch once and answers
the chargers only after that commit. Per-store caches (which transaction a charger's
connector has open, which charger owns a transaction) are rebuilt from the store on a
miss and dropped whenever this module changes transactions or a batch fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from megastation.core.config import Charger, Station
from megastation.store import Store, dumps, iso, parse_iso, time_range

ENERGY_REGISTER = "Energy.Active.Import.Register"
POWER_IMPORT = "Power.Active.Import"
SOC = "SoC"

ID_TOKEN_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")

log = logging.getLogger("megastation.store.records")

# SQL condition: a stored ``value`` that is a finite number (SQLite stores inf as REAL;
# a store written before values were checked at the edge may hold some)
FINITE_VALUE = "value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"


# --------------------------------------------------------------------------- writes and caches


@dataclass
class _StoreState:
    batching: bool = False  # inside group_commit: writes do not commit
    # (charger, connector) -> (open tx id or None, its start, latest stop of a closed tx)
    connector_tx: dict[tuple[str, int], tuple[int | None, str | None, str | None]] = field(
        default_factory=dict
    )
    tx_owner: dict[int, str] = field(default_factory=dict)  # transaction id -> charger id
    energy: dict[int, _Energy] = field(default_factory=dict)  # transaction id -> registers
    rollbacks: int = 0  # writes undone (group_commit, savepoint): other modules' memos restart


@dataclass
class _Energy:
    """What a transaction's energy is computed from (mirrors its row and samples)."""

    charger_id: str
    meter_start_wh: float | None
    state: str
    version: str
    meter_stop_wh: float | None
    first: tuple[str, float] | None  # earliest energy register (ts iso, kWh)
    last: tuple[str, float] | None  # latest energy register (ts iso, kWh)


_STATE: weakref.WeakKeyDictionary[Store, _StoreState] = weakref.WeakKeyDictionary()


def _state(store: Store) -> _StoreState:
    st = _STATE.get(store)
    if st is None:
        st = _STATE[store] = _StoreState()
    return st


@contextlib.contextmanager
def _tx(store: Store) -> Iterator[None]:
    """One write: its own transaction, or part of the open group commit."""
    if _state(store).batching:
        yield
    else:
        with store.conn:
            yield


def forget_caches(store: Store, charger_id: str | None = None) -> None:
    """Drop cached transaction lookups (all, or one charger's); they reload from the store."""
    st = _state(store)
    if charger_id is None:
        st.connector_tx.clear()
        st.energy.clear()
    else:
        for key in [k for k in st.connector_tx if k[0] == charger_id]:
            del st.connector_tx[key]
        for tx in [t for t, e in st.energy.items() if e.charger_id == charger_id]:
            del st.energy[tx]


@contextlib.contextmanager
def group_commit(store: Store) -> Iterator[None]:
    """One SQLite transaction for many writes; committed (WAL) when the block ends.

    On an exception everything is rolled back and the caches are dropped.
    """
    st = _state(store)
    conn = store.conn
    if st.batching:
        yield
        return
    if conn.in_transaction:  # someone's writes left uncommitted: they go first
        conn.commit()
    conn.execute("BEGIN")
    st.batching = True
    try:
        yield
        st.batching = False
        conn.commit()
    except BaseException:
        st.batching = False
        conn.rollback()
        st.rollbacks += 1
        forget_caches(store)
        raise


@contextlib.contextmanager
def savepoint(store: Store) -> Iterator[None]:
    """Inside :func:`group_commit`: undo only this block's writes if it raises."""
    conn = store.conn
    conn.execute("SAVEPOINT ms_write")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO ms_write")
        conn.execute("RELEASE ms_write")
        _state(store).rollbacks += 1
        forget_caches(store)
        raise
    conn.execute("RELEASE ms_write")


class InvalidValue(ValueError):
    """A value from a charger (or device, file, operator) that cannot be stored.

    ``field`` names it; ``kind`` is ``"format"`` (not readable as its type, e.g. a bad
    timestamp) or ``"range"`` (readable but non-finite or outside its range). The OCPP
    server answers it with a FormationViolation / PropertyConstraintViolation CALLERROR.
    """

    def __init__(self, field: str, message: str, kind: str = "range") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message  # without the field name
        self.kind = kind


def parse_time(text: str | None, field: str = "timestamp") -> datetime | None:
    """An OCPP timestamp (``...Z``, offset, or naive meaning UTC) as tz-aware UTC.

    Raises :class:`InvalidValue` (kind ``"format"``) naming ``field`` when ``text`` is not
    an ISO 8601 date-time.
    """
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return ts.astimezone(UTC)
    except (ValueError, OverflowError, TypeError, AttributeError):
        raise InvalidValue(
            field, f"not an ISO 8601 date-time: {str(text)[:40]!r}", "format"
        ) from None


def required_time(text: str | None, field: str = "timestamp") -> datetime:
    """:func:`parse_time` of a date-time the message must carry: an empty one is an
    :class:`InvalidValue` (kind ``"format"``) too (the schemas let ``""`` through)."""
    ts = parse_time(text, field)
    if ts is None:
        raise InvalidValue(field, "empty: a date-time is required", "format")
    return ts


# Largest magnitude of any number the station stores (kW, kWh, Wh, A, V, %): beyond it a
# value is a charger's bug, not a measurement. 1e12 Wh = 1 TWh.
MAX_ABS_VALUE = 1e12


def checked(
    value: Any, field: str, *, lo: float = -MAX_ABS_VALUE, hi: float = MAX_ABS_VALUE
) -> float:
    """``value`` as a finite float in ``[lo, hi]``, else :class:`InvalidValue` naming ``field``."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidValue(field, f"not a number: {str(value)[:40]!r}", "format") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise InvalidValue(field, f"{str(value)[:40]} is outside [{lo:g}, {hi:g}]")
    return x


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else None (for reads of stored values)."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _dt(text: str | None) -> datetime | None:
    return parse_iso(text) if text else None


# --------------------------------------------------------------------------- chargers


def sync_station_chargers(store: Store, station: Station) -> None:
    """Make sure every charger of the station file is in the store (idempotent).

    The store is the source of truth: new chargers are inserted as Accepted; existing
    rows keep their registration and password unless the config gives a password and
    the store has none. Connection state is left alone, so the CLI may call this while
    the server runs; it writes only when a charger is missing or gains a password.
    """
    have = dict(store.conn.execute("SELECT id, password_hash IS NOT NULL FROM chargers"))
    todo = [
        c
        for c in station.chargers
        if c.id not in have or (c.password_hash is not None and not have[c.id])
    ]
    if not todo:
        return
    now = iso(store.now())
    with _tx(store):
        for c in todo:
            store.conn.execute(
                "INSERT INTO chargers (id, registration, source, password_hash, vendor, model, "
                "registered_at) VALUES (?, 'Accepted', 'config', ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET password_hash = "
                "COALESCE(chargers.password_hash, excluded.password_hash)",
                (c.id, c.password_hash, c.vendor or None, c.model or None, now),
            )


def register_station_chargers(store: Store, station: Station) -> None:
    """At server start: :func:`sync_station_chargers`, then mark every charger disconnected."""
    sync_station_chargers(store, station)
    with _tx(store):
        store.conn.execute("UPDATE chargers SET connected = 0 WHERE connected = 1")


def get_charger(store: Store, charger_id: str) -> dict[str, Any] | None:
    row = store.conn.execute("SELECT * FROM chargers WHERE id = ?", (charger_id,)).fetchone()
    return _row(store, "chargers", row)


def add_pending_charger(store: Store, charger_id: str) -> None:
    """An unknown charger connected while auto-registration is on: it waits for an operator."""
    with _tx(store):
        store.conn.execute(
            "INSERT OR IGNORE INTO chargers (id, registration, source, registered_at) "
            "VALUES (?, 'Pending', 'auto', ?)",
            (charger_id, iso(store.now())),
        )


def accept_charger(
    store: Store,
    charger_id: str,
    *,
    kind: str | None = None,
    max_power_kw: float | None = None,
    connectors: int | None = None,
) -> bool:
    """Operator accepts a Pending charger; False if no such charger.

    ``kind`` ("AC" / "DC"), ``max_power_kw`` and ``connectors`` describe an auto-registered
    charger for the control loop; what is not given comes from :func:`auto_charger`'s
    per-kind defaults.
    """
    if kind is not None and kind.upper() not in ("AC", "DC"):
        raise ValueError(f"kind: must be AC or DC, got {kind!r}")
    if max_power_kw is not None:
        checked(max_power_kw, "max_power_kw", lo=0.1, hi=1e4)
    if connectors is not None and not 1 <= connectors <= 64:
        raise ValueError(f"connectors: must be 1..64, got {connectors}")
    with _tx(store):
        cur = store.conn.execute(
            "UPDATE chargers SET registration = 'Accepted', kind = COALESCE(?, kind), "
            "max_power_kw = COALESCE(?, max_power_kw), connectors = COALESCE(?, connectors) "
            "WHERE id = ?",
            (kind.upper() if kind else None, max_power_kw, connectors, charger_id),
        )
    return cur.rowcount > 0


# Per-kind defaults of an auto-registered charger when the station file has no charger of
# that kind to copy: a 22 kW three-phase AC wallbox, a 50 kW DC charger.
AUTO_DEFAULTS = {
    "AC": Charger(id="", kind="AC", max_power_kw=22.0, phases=3),
    "DC": Charger(id="", kind="DC", max_power_kw=50.0),
}


def auto_charger(
    station: Station,
    charger_id: str,
    *,
    kind: str | None = None,
    max_power_kw: float | None = None,
    connectors: int | None = None,
    ocpp_version: str | None = None,
) -> Charger:
    """How the control loop sees an accepted auto-registered charger.

    Like the smallest charger of its kind in the station file (connectors, phases,
    voltage, power), else :data:`AUTO_DEFAULTS`; the operator's ``max_power_kw`` and
    ``connectors`` (``chargers accept``) override. Kind defaults to AC.
    """
    kind = (kind or "AC").upper()
    same = sorted(
        (c for c in station.chargers if c.kind.upper() == kind), key=lambda c: c.max_power_kw
    )
    base = same[0] if same else AUTO_DEFAULTS[kind]
    n = connectors or base.connectors
    power = max_power_kw or base.max_power_kw
    per_connector = None
    if base.connector_max_power_kw is not None:
        per_connector = min(base.connector_max_power_kw, power)
    return dataclasses.replace(
        base,
        id=charger_id,
        max_power_kw=power,
        connectors=n,
        connector_max_power_kw=per_connector,
        cabinet=None,
        vendor="",
        model="",
        ocpp_version=ocpp_version or base.ocpp_version,
        password_hash=None,
    )


def registered_chargers(store: Store, station: Station) -> list[Charger]:
    """Accepted auto-registered chargers the station file does not list, as :class:`Charger`."""
    rows = store.conn.execute(
        "SELECT id, kind, max_power_kw, connectors, ocpp_version FROM chargers "
        "WHERE registration = 'Accepted' AND source = 'auto' ORDER BY id"
    ).fetchall()
    return [
        auto_charger(station, cid, kind=kind, max_power_kw=kw, connectors=n, ocpp_version=version)
        for cid, kind, kw, n, version in rows
        if station.charger(cid) is None
    ]


def station_with_registered(station: Station, store: Store) -> Station:
    """``station`` with its accepted auto-registered chargers added (see :func:`auto_charger`)."""
    extra = registered_chargers(store, station)
    if not extra:
        return station
    return dataclasses.replace(station, chargers=(*station.chargers, *extra))


def set_password_hash(store: Store, charger_id: str, password_hash: str | None) -> bool:
    with _tx(store):
        cur = store.conn.execute(
            "UPDATE chargers SET password_hash = ? WHERE id = ?", (password_hash, charger_id)
        )
    return cur.rowcount > 0


def record_boot(
    store: Store,
    charger_id: str,
    *,
    ocpp_version: str,
    vendor: str,
    model: str,
    serial_number: str | None,
    firmware_version: str | None,
    reason: str | None,
    payload: dict[str, Any],
    ts: datetime,
) -> str:
    """Store boot data; return the registration status the charger is told."""
    with _tx(store):
        store.conn.execute(
            "UPDATE chargers SET ocpp_version = ?, vendor = ?, model = ?, serial_number = ?, "
            "firmware_version = ?, boot_reason = ?, boot_payload = ?, last_boot_at = ?, "
            "last_seen_at = ? WHERE id = ?",
            (
                ocpp_version,
                vendor,
                model,
                serial_number,
                firmware_version,
                reason,
                dumps(payload),
                iso(ts),
                iso(ts),
                charger_id,
            ),
        )
        row = store.conn.execute(
            "SELECT registration FROM chargers WHERE id = ?", (charger_id,)
        ).fetchone()
    return row[0] if row else "Rejected"


def set_connected(
    store: Store, charger_id: str, connected: bool, ts: datetime, ocpp_version: str | None = None
) -> None:
    with _tx(store):
        if connected:
            store.conn.execute(
                "UPDATE chargers SET connected = 1, connected_at = ?, last_seen_at = ?, "
                "ocpp_version = COALESCE(?, ocpp_version) WHERE id = ?",
                (iso(ts), iso(ts), ocpp_version, charger_id),
            )
        else:
            store.conn.execute(
                "UPDATE chargers SET connected = 0, disconnected_at = ? WHERE id = ?",
                (iso(ts), charger_id),
            )


def touch_charger(store: Store, charger_id: str, ts: datetime) -> None:
    with _tx(store):
        store.conn.execute(
            "UPDATE chargers SET last_seen_at = ? WHERE id = ?", (iso(ts), charger_id)
        )


def list_chargers(store: Store) -> list[dict[str, Any]]:
    rows = store.conn.execute("SELECT * FROM chargers ORDER BY id").fetchall()
    return [_row(store, "chargers", r) for r in rows]


def _row(store: Store, table: str, row: tuple | None) -> dict[str, Any] | None:
    if row is None:
        return None
    cols = _columns(store, table)
    return dict(zip(cols, row, strict=True))


_COLS: dict[tuple[int, str], list[str]] = {}


def _columns(store: Store, table: str) -> list[str]:
    key = (id(store), table)
    if key not in _COLS:
        _COLS[key] = [r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")]
    return _COLS[key]


# --------------------------------------------------------------------------- status


def record_status(
    store: Store,
    charger_id: str,
    connector_id: int,
    status: str,
    ts: datetime,
    *,
    error_code: str | None = None,
    info: str | None = None,
) -> bool:
    """Append to the status history and update the current status; True if it changed."""
    now = iso(store.now())
    with _tx(store):
        old = store.conn.execute(
            "SELECT status, error_code FROM connectors WHERE charger_id = ? AND connector_id = ?",
            (charger_id, connector_id),
        ).fetchone()
        store.conn.execute(
            "INSERT INTO connector_status_history (charger_id, connector_id, status, error_code, "
            "info, ts, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (charger_id, connector_id, status, error_code, info, iso(ts), now),
        )
        store.conn.execute(
            "INSERT INTO connectors (charger_id, connector_id, status, error_code, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(charger_id, connector_id) DO UPDATE SET "
            "status = excluded.status, error_code = excluded.error_code, "
            "updated_at = excluded.updated_at",
            (charger_id, connector_id, status, error_code, iso(ts)),
        )
    return old is None or tuple(old) != (status, error_code)


def connector_statuses(store: Store) -> list[dict[str, Any]]:
    rows = store.conn.execute(
        "SELECT charger_id, connector_id, status, error_code, updated_at FROM connectors "
        "ORDER BY charger_id, connector_id"
    ).fetchall()
    return [
        dict(charger_id=r[0], connector_id=r[1], status=r[2], error_code=r[3], updated_at=r[4])
        for r in rows
    ]


# --------------------------------------------------------------------------- id tokens


def set_id_token(
    store: Store,
    id_token: str,
    status: str = "Accepted",
    *,
    expiry: datetime | None = None,
    parent_id_token: str | None = None,
    note: str | None = None,
) -> None:
    if status not in ID_TOKEN_STATUSES:
        raise ValueError(f"status: must be one of {', '.join(ID_TOKEN_STATUSES)}, got {status!r}")
    with _tx(store):
        store.conn.execute(
            "INSERT INTO id_tokens (id_token, status, expiry, parent_id_token, note, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id_token) DO UPDATE SET status = excluded.status, "
            "expiry = excluded.expiry, parent_id_token = excluded.parent_id_token, "
            "note = excluded.note, updated_at = excluded.updated_at",
            (
                id_token,
                status,
                iso(expiry) if expiry else None,
                parent_id_token,
                note,
                iso(store.now()),
            ),
        )


def remove_id_token(store: Store, id_token: str) -> bool:
    with _tx(store):
        cur = store.conn.execute("DELETE FROM id_tokens WHERE id_token = ?", (id_token,))
    return cur.rowcount > 0


def list_id_tokens(store: Store) -> list[dict[str, Any]]:
    rows = store.conn.execute("SELECT * FROM id_tokens ORDER BY id_token").fetchall()
    return [_row(store, "id_tokens", r) for r in rows]


@dataclass(frozen=True)
class Authorization:
    status: str  # Accepted | Blocked | Expired | Invalid
    expiry: datetime | None = None
    parent_id_token: str | None = None


def authorize(store: Store, id_token: str | None, *, free_vend: bool = False) -> Authorization:
    """Look an id token up in the list; free-vend stations accept every token except the
    ones the operator blocked."""
    row = None
    if id_token:
        row = store.conn.execute(
            "SELECT status, expiry, parent_id_token FROM id_tokens WHERE id_token = ?",
            (id_token,),
        ).fetchone()
    if free_vend:
        if row is not None and row[0] == "Blocked":
            return Authorization("Blocked", _dt(row[1]), row[2])
        return Authorization("Accepted")
    if not id_token:
        return Authorization("Invalid")
    if row is None:
        return Authorization("Invalid")
    status, expiry, parent = row[0], _dt(row[1]), row[2]
    if status == "Accepted" and expiry is not None and expiry <= store.now():
        status = "Expired"
    return Authorization(status, expiry, parent)


# --------------------------------------------------------------------------- meter samples


@dataclass(frozen=True)
class Sample:
    """One sampled value, normalised: energy in kWh, power in kW."""

    ts: datetime
    measurand: str
    value: float
    unit: str
    phase: str = ""
    location: str = ""
    context: str = ""


_SCALE = {
    "Wh": (1e-3, "kWh"),
    "kWh": (1.0, "kWh"),
    "varh": (1e-3, "kvarh"),
    "kvarh": (1.0, "kvarh"),
    "W": (1e-3, "kW"),
    "kW": (1.0, "kW"),
    "var": (1e-3, "kvar"),
    "kvar": (1.0, "kvar"),
    "VA": (1e-3, "kVA"),
    "kVA": (1.0, "kVA"),
}


def _default_unit(measurand: str) -> str:
    if measurand.startswith("Energy.Reactive"):
        return "varh"
    if measurand.startswith("Energy"):
        return "Wh"
    if measurand.startswith("Power.Reactive"):
        return "var"
    if measurand.startswith("Power.Active"):
        return "W"
    if measurand.startswith("Current"):
        return "A"
    if measurand == "Voltage":
        return "V"
    if measurand == SOC:
        return "Percent"
    return ""


# Plausible magnitude of a sampled value by normalised unit (a 10 MW charger, a 1 TWh
# register, 10 kA, 100 kV); SoC must be 0..100 %. Samples outside are dropped and logged.
_SAMPLE_RANGE = {
    "kW": 1e4,
    "kvar": 1e4,
    "kVA": 1e4,
    "kWh": 1e9,
    "kvarh": 1e9,
    "A": 1e4,
    "V": 1e5,
}


def _sample_value(sv: dict[str, Any], measurand: str) -> tuple[float, str] | str:
    """(value, normalised unit) of one sampled value, or why it is dropped."""
    raw = sv.get("value")
    if isinstance(raw, bool):
        return f"value {raw!r} is not a number"
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        return f"value {str(raw)[:40]!r} is not a number"
    uom = sv.get("unit_of_measure")
    try:
        if isinstance(uom, dict):
            unit = uom.get("unit") or _default_unit(measurand)
            value *= 10.0 ** int(uom.get("multiplier") or 0)
        else:
            unit = sv.get("unit") or _default_unit(measurand)
    except (TypeError, ValueError, OverflowError):
        return f"multiplier {uom.get('multiplier')!r} is out of range"
    scale = _SCALE.get(unit)
    if scale:
        value, unit = value * scale[0], scale[1]
    if not math.isfinite(value):
        return f"value {str(raw)[:40]} is not finite"
    if measurand == SOC:
        if not 0.0 <= value <= 100.0:
            return f"SoC {value:g} is outside 0..100 %"
    elif abs(value) > _SAMPLE_RANGE.get(unit, MAX_ABS_VALUE):
        return f"{value:g} {unit} is out of range"
    return value, unit


def normalise_meter_values(meter_value: Iterable[dict[str, Any]], source: str = "") -> list[Sample]:
    """OCPP ``meterValue`` entries (snake_case keys, 1.6 or 2.0.1) as normalised samples.

    1.6 gives ``value`` as a string and ``unit`` as text; 2.0.1 gives a number and
    ``unit_of_measure`` with a power-of-ten ``multiplier``. Energy becomes kWh and
    power kW. A value that is not a finite number in its plausible range (``"inf"``,
    ``"1e400"``, a SoC of 250 %) is dropped and logged (naming ``source``, the charger),
    so the rest of the message is kept; a timestamp that is not ISO 8601 raises
    :class:`InvalidValue` (the whole message is refused).
    """
    out: list[Sample] = []
    for mv in meter_value:
        ts = parse_time(mv.get("timestamp"), "meterValue.timestamp")
        if ts is None:
            continue
        for sv in mv.get("sampled_value") or ():
            measurand = sv.get("measurand") or ENERGY_REGISTER
            got = _sample_value(sv, measurand)
            if isinstance(got, str):
                log.warning("%s: %s sample at %s dropped: %s", source, measurand, iso(ts), got)
                continue
            value, unit = got
            out.append(
                Sample(
                    ts=ts,
                    measurand=measurand,
                    value=value,
                    unit=unit,
                    phase=sv.get("phase") or "",
                    location=sv.get("location") or "",
                    context=sv.get("context") or "",
                )
            )
    return out


def _insert_samples(
    store: Store,
    charger_id: str,
    connector_id: int,
    transaction_id: int | None,
    samples: list[Sample],
) -> int:
    now = iso(store.now())
    stamps: dict[datetime, str] = {}  # samples of one meterValue share a timestamp
    for smp in samples:
        if smp.ts not in stamps:
            stamps[smp.ts] = iso(smp.ts)
    cur = store.conn.executemany(
        "INSERT OR IGNORE INTO meter_samples (charger_id, connector_id, transaction_id, ts, "
        "measurand, phase, location, context, value, unit, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                charger_id,
                connector_id,
                transaction_id,
                stamps[s.ts],
                s.measurand,
                s.phase,
                s.location,
                s.context,
                s.value,
                s.unit,
                now,
            )
            for s in samples
            if math.isfinite(s.value)  # never store a non-finite value
        ],
    )
    return cur.rowcount


def record_meter_values(
    store: Store,
    charger_id: str,
    connector_id: int,
    samples: list[Sample],
    *,
    transaction_id: int | None = None,
) -> int:
    """Store samples once each (re-sent ones are ignored); return how many were new.

    Without a transaction id the samples are linked to the transaction open on that
    connector at their time, if any.
    """
    with _tx(store):
        if transaction_id is None and samples and connector_id:
            transaction_id = _tx_at(store, charger_id, connector_id, samples[0].ts)
        n = _insert_samples(store, charger_id, connector_id, transaction_id, samples)
        if transaction_id is not None and n:
            if n == len(samples):
                _add_energy(store, transaction_id, samples)
            else:  # some were re-sent: recompute from the store
                _update_energy(store, transaction_id)
    return n


def _tx_at(store: Store, charger_id: str, connector_id: int, ts: datetime) -> int | None:
    """The transaction on a connector at ``ts`` (latest start); cached for the usual case.

    The cache knows the connector's open transaction and its latest stop: a sample after
    both needs no query. Late samples (before them) are looked up in the store.
    """
    t = iso(ts)
    key = (charger_id, connector_id)
    cache = _state(store).connector_tx
    entry = cache.get(key)
    if entry is None:
        max_start, last_stop = store.conn.execute(
            "SELECT MAX(start_time), MAX(stop_time) FROM transactions "
            "WHERE charger_id = ? AND connector_id = ?",
            key,
        ).fetchone()
        open_row = store.conn.execute(
            "SELECT id, start_time FROM transactions WHERE charger_id = ? AND connector_id = ? "
            "AND stop_time IS NULL ORDER BY start_time DESC LIMIT 1",
            key,
        ).fetchone()
        if open_row is None:
            entry = (None, None, last_stop)
        elif open_row[1] == max_start:
            entry = (open_row[0], open_row[1], last_stop)
        else:
            entry = (-1, None, None)  # an older open one: always ask the store
        cache[key] = entry
    open_id, open_start, last_stop = entry
    if open_id is not None and open_id >= 0 and t >= open_start:
        return open_id
    if open_id is None and (last_stop is None or t > last_stop):
        return None
    row = store.conn.execute(
        "SELECT id FROM transactions WHERE charger_id = ? AND connector_id = ? AND "
        "start_time <= ? AND (stop_time IS NULL OR stop_time >= ?) ORDER BY start_time DESC LIMIT 1",
        (charger_id, connector_id, t, t),
    ).fetchone()
    return row[0] if row else None


def transaction_charger(store: Store, transaction_id: int) -> str | None:
    """The charger a transaction belongs to (cached: it never changes)."""
    owners = _state(store).tx_owner
    owner = owners.get(transaction_id)
    if owner is None:
        row = store.conn.execute(
            "SELECT charger_id FROM transactions WHERE id = ?", (transaction_id,)
        ).fetchone()
        if row is None:
            return None
        owner = owners[transaction_id] = row[0]
    return owner


def _update_energy(store: Store, transaction_id: int) -> None:
    """Refresh a transaction's energy from its meter start and latest register (from the store)."""
    st = _state(store)
    st.energy.pop(transaction_id, None)
    row = store.conn.execute(
        "SELECT meter_start_wh, state, ocpp_version, meter_stop_wh, charger_id FROM transactions "
        "WHERE id = ?",
        (transaction_id,),
    ).fetchone()
    if row is None:
        return
    first = last = None
    q = (
        "SELECT ts, value FROM meter_samples WHERE transaction_id = ? AND measurand = ? "
        "AND phase = '' AND location IN ('', 'Outlet') ORDER BY ts {} LIMIT 1"
    )
    r = store.conn.execute(q.format("ASC"), (transaction_id, ENERGY_REGISTER)).fetchone()
    if r is not None:
        first = (r[0], r[1])
        r = store.conn.execute(q.format("DESC"), (transaction_id, ENERGY_REGISTER)).fetchone()
        last = (r[0], r[1])
    e = _Energy(row[4], row[0], row[1], row[2], row[3], first, last)
    st.energy[transaction_id] = e
    _apply_energy(store, transaction_id, e)


def _add_energy(store: Store, transaction_id: int, samples: list[Sample]) -> None:
    """Fold newly stored samples into the cached registers (no query), then update energy."""
    e = _state(store).energy.get(transaction_id)
    if e is None:
        _update_energy(store, transaction_id)
        return
    changed = False
    for s in samples:
        if s.measurand != ENERGY_REGISTER or s.phase or s.location not in ("", "Outlet"):
            continue
        t = iso(s.ts)
        if e.first is None or t < e.first[0]:
            e.first = (t, s.value)
            changed = True
        if e.last is None or t > e.last[0]:
            e.last = (t, s.value)
            changed = True
    if changed:
        _apply_energy(store, transaction_id, e)


def _apply_energy(store: Store, transaction_id: int, e: _Energy) -> None:
    if e.state == "closed" and e.version == "1.6" and e.meter_stop_wh is not None:
        return  # StopTransaction's meterStop is final
    if e.first is None or e.last is None:
        return
    first_kwh, last_kwh = e.first[1], e.last[1]
    meter_start_wh = e.meter_start_wh
    if meter_start_wh is None or e.version != "1.6":
        # 2.0.1 has no meterStart: the earliest register by timestamp (late ones move it).
        meter_start_wh = first_kwh * 1000.0
    energy_kwh = max(0.0, last_kwh - meter_start_wh / 1000.0)
    e.meter_start_wh = meter_start_wh
    if e.state == "closed":
        e.meter_stop_wh = last_kwh * 1000.0
    store.conn.execute(
        "UPDATE transactions SET meter_start_wh = ?, energy_kwh = ?, "
        "meter_stop_wh = CASE WHEN state = 'closed' THEN ? ELSE meter_stop_wh END, "
        "updated_at = ? WHERE id = ?",
        (meter_start_wh, energy_kwh, last_kwh * 1000.0, iso(store.now()), transaction_id),
    )


# --------------------------------------------------------------------------- transactions


@dataclass(frozen=True)
class TxResult:
    transaction_id: int  # internal id
    created: bool  # a new transaction (False: a replay of one already stored)
    changed: bool  # this message changed the stored state (False: a duplicate)


def start_transaction(
    store: Store,
    charger_id: str,
    *,
    connector_id: int,
    id_token: str | None,
    auth_status: str | None,
    meter_start_wh: float,
    ts: datetime,
) -> TxResult:
    """OCPP 1.6 StartTransaction: the internal id is the transactionId the charger is given.

    A replay (same charger, connector, timestamp and meterStart) returns the stored id.
    """
    forget_caches(store, charger_id)
    with _tx(store):
        row = store.conn.execute(
            "SELECT id FROM transactions WHERE charger_id = ? AND connector_id = ? AND "
            "start_time = ? AND meter_start_wh = ? AND ocpp_version = '1.6'",
            (charger_id, connector_id, iso(ts), meter_start_wh),
        ).fetchone()
        if row:
            return TxResult(row[0], created=False, changed=False)
        now = iso(store.now())
        cur = store.conn.execute(
            "INSERT INTO transactions (charger_id, ocpp_tx_id, ocpp_version, connector_id, "
            "id_token, auth_status, start_time, meter_start_wh, energy_kwh, created_at, updated_at) "
            "VALUES (?, ?, '1.6', ?, ?, ?, ?, ?, 0.0, ?, ?)",
            (
                charger_id,
                f"pending-{now}-{connector_id}",
                connector_id,
                id_token,
                auth_status,
                iso(ts),
                meter_start_wh,
                now,
                now,
            ),
        )
        tx_id = cur.lastrowid
        store.conn.execute(
            "UPDATE transactions SET ocpp_tx_id = ? WHERE id = ?", (str(tx_id), tx_id)
        )
        # Samples that arrived before the start (out of order) now belong to it.
        store.conn.execute(
            "UPDATE meter_samples SET transaction_id = ? WHERE charger_id = ? AND "
            "connector_id = ? AND transaction_id IS NULL AND ts >= ?",
            (tx_id, charger_id, connector_id, iso(ts)),
        )
    return TxResult(tx_id, created=True, changed=True)


def stop_transaction(
    store: Store,
    charger_id: str,
    transaction_id: int,
    *,
    meter_stop_wh: float,
    ts: datetime,
    reason: str | None,
    id_token: str | None = None,
    samples: list[Sample] = (),
) -> TxResult | None:
    """OCPP 1.6 StopTransaction (with its transactionData samples); None if unknown.

    Energy is ``meterStop - meterStart``. A repeated stop changes nothing.
    """
    forget_caches(store, charger_id)
    with _tx(store):
        row = store.conn.execute(
            "SELECT state, connector_id FROM transactions WHERE id = ? AND charger_id = ?",
            (transaction_id, charger_id),
        ).fetchone()
        if row is None:
            return None
        state, connector_id = row
        if samples:
            _insert_samples(store, charger_id, connector_id or 0, transaction_id, samples)
        if state == "closed":
            return TxResult(transaction_id, created=False, changed=False)
        store.conn.execute(
            "UPDATE transactions SET state = 'closed', stop_time = ?, meter_stop_wh = ?, "
            "energy_kwh = MAX(0, (? - COALESCE(meter_start_wh, ?)) / 1000.0), stop_reason = ?, "
            "updated_at = ? WHERE id = ?",
            (
                iso(ts),
                meter_stop_wh,
                meter_stop_wh,
                meter_stop_wh,
                reason or "Local",
                iso(store.now()),
                transaction_id,
            ),
        )
    return TxResult(transaction_id, created=False, changed=True)


@dataclass(frozen=True)
class ClosedTransaction:
    """A finished 1.6 session to store at once (:func:`insert_closed_transactions`)."""

    charger_id: str
    connector_id: int
    id_token: str | None
    start: datetime
    meter_start_wh: float
    stop: datetime
    meter_stop_wh: float
    reason: str | None


def insert_closed_transactions(
    store: Store, txs: Iterable[ClosedTransaction], *, auth_status: str | None = "Accepted"
) -> int:
    """Store finished sessions (a history): the rows :func:`start_transaction` then
    :func:`stop_transaction` store for each in turn, in one executemany. Returns how many.

    The same rows: ids in order from the largest stored id on (SQLite's own choice for an
    INTEGER PRIMARY KEY), a replay of a stored start (same charger, connector, start and
    meterStart) is not inserted again, and samples stored without a transaction are
    claimed as start_transaction claims them. The store's clock is read once (the
    simulator's clock stands still meanwhile; a live clock would stamp each row apart).
    """
    conn = store.conn
    now = iso(store.now())
    seen: dict[tuple, tuple[int, str]] = {
        (r[0], r[1], r[2], r[3]): (r[4], r[5])
        for r in conn.execute(
            "SELECT charger_id, connector_id, start_time, meter_start_wh, id, state "
            "FROM transactions WHERE ocpp_version = '1.6'"
        )
    }
    next_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM transactions").fetchone()[0] + 1
    rows, replays, n = [], [], 0
    # start_transaction gives a new transaction the connector's unclaimed samples from its
    # start on: after an earlier start only those before it are left, so only a start
    # earlier than all before it on its connector claims any (once per connector in order)
    earliest: dict[tuple[str, int], str] = {}
    claims = []
    for t in txs:
        n += 1
        start = iso(t.start)
        key = (t.charger_id, t.connector_id, start, t.meter_start_wh)
        if key in seen:  # start_transaction returns the stored one; stop closes it if open
            if seen[key][1] != "closed":
                replays.append((seen[key][0], t))
            continue
        seen[key] = (next_id, "closed")
        rows.append(
            (
                next_id, t.charger_id, str(next_id), t.connector_id, t.id_token, auth_status,
                start, iso(t.stop), t.meter_start_wh, t.meter_stop_wh, t.meter_stop_wh,
                t.meter_start_wh, t.reason or "Local", now, now,
            )
        )  # fmt: skip
        connector = (t.charger_id, t.connector_id)
        if connector not in earliest or start < earliest[connector]:
            earliest[connector] = start
            claims.append((next_id, *connector, start))
        next_id += 1
    for charger_id in {r[1] for r in rows} | {t.charger_id for _, t in replays}:
        forget_caches(store, charger_id)
    with _tx(store):
        conn.executemany(
            "INSERT INTO transactions (id, charger_id, ocpp_tx_id, ocpp_version, connector_id, "
            "id_token, auth_status, start_time, stop_time, meter_start_wh, meter_stop_wh, "
            "energy_kwh, stop_reason, state, created_at, updated_at) "
            "VALUES (?, ?, ?, '1.6', ?, ?, ?, ?, ?, ?, ?, MAX(0, (? - ?) / 1000.0), ?, 'closed', "
            "?, ?)",
            rows,
        )
        conn.executemany(
            "UPDATE meter_samples SET transaction_id = ? WHERE charger_id = ? AND "
            "connector_id = ? AND transaction_id IS NULL AND ts >= ?",
            claims,
        )
    for tx_id, t in replays:
        stop_transaction(
            store, t.charger_id, tx_id, meter_stop_wh=t.meter_stop_wh, ts=t.stop, reason=t.reason
        )
    return n


def transaction_event(
    store: Store,
    charger_id: str,
    *,
    event_type: str,
    ocpp_tx_id: str,
    seq_no: int,
    ts: datetime,
    trigger_reason: str | None,
    offline: bool = False,
    connector_id: int | None = None,
    id_token: str | None = None,
    auth_status: str | None = None,
    stopped_reason: str | None = None,
    samples: list[Sample] = (),
) -> TxResult:
    """OCPP 2.0.1 TransactionEvent (Started / Updated / Ended).

    Events may arrive late and out of order (offline queue): the transaction is
    created by whichever event comes first; a seqNo already stored changes nothing.
    Energy is the last energy register minus the first, by timestamp.
    """
    now = iso(store.now())
    forget_caches(store, charger_id)
    with _tx(store):
        cur = store.conn.execute(
            "INSERT OR IGNORE INTO transaction_events (charger_id, ocpp_tx_id, seq_no, event_type, "
            "trigger_reason, ts, offline, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                charger_id,
                ocpp_tx_id,
                seq_no,
                event_type,
                trigger_reason,
                iso(ts),
                int(offline),
                now,
            ),
        )
        duplicate = cur.rowcount == 0
        row = store.conn.execute(
            "SELECT id, start_time, last_seq_no FROM transactions "
            "WHERE charger_id = ? AND ocpp_tx_id = ?",
            (charger_id, ocpp_tx_id),
        ).fetchone()
        created = row is None
        event = dict(
            seq_no=seq_no, ts=iso(ts), offline=int(offline), now=now,
            connector_id=connector_id, id_token=id_token, auth_status=auth_status,
        )  # fmt: skip
        if created:
            tx_id = _insert_tx20(store, charger_id, ocpp_tx_id, **event)
        else:
            tx_id = row[0]
            if duplicate:
                return TxResult(tx_id, created=False, changed=False)
            _update_tx20(store, tx_id, event_type=event_type, **event)
        if event_type == "Ended":
            store.conn.execute(
                "UPDATE transactions SET state = 'closed', stop_time = ?, "
                "stop_reason = COALESCE(?, stop_reason, 'Local') WHERE id = ?",
                (iso(ts), stopped_reason, tx_id),
            )
        if samples:
            cid = connector_id
            if cid is None:
                r = store.conn.execute(
                    "SELECT connector_id FROM transactions WHERE id = ?", (tx_id,)
                ).fetchone()
                cid = r[0] if r and r[0] is not None else 0
            _insert_samples(store, charger_id, cid, tx_id, samples)
        _update_energy(store, tx_id)
        if event_type == "Ended":
            store.conn.execute(
                "UPDATE transactions SET meter_stop_wh = COALESCE(meter_stop_wh, "
                "meter_start_wh + energy_kwh * 1000.0) WHERE id = ?",
                (tx_id,),
            )
            _state(store).energy.pop(tx_id, None)
    return TxResult(tx_id, created=created, changed=True)


def _insert_tx20(
    store: Store,
    charger_id: str,
    ocpp_tx_id: str,
    *,
    seq_no: int,
    ts: str,
    offline: int,
    now: str,
    connector_id: int | None,
    id_token: str | None,
    auth_status: str | None,
) -> int:
    """A 2.0.1 transaction created by its first event (whichever type it is)."""
    cur = store.conn.execute(
        "INSERT INTO transactions (charger_id, ocpp_tx_id, ocpp_version, connector_id, "
        "id_token, auth_status, start_time, energy_kwh, offline, last_seq_no, created_at, "
        "updated_at) VALUES (?, ?, '2.0.1', ?, ?, ?, ?, 0.0, ?, ?, ?, ?)",
        (
            charger_id,
            ocpp_tx_id,
            connector_id,
            id_token,
            auth_status,
            ts,
            offline,
            seq_no,
            now,
            now,
        ),
    )
    return cur.lastrowid


def _update_tx20(
    store: Store,
    tx_id: int,
    *,
    event_type: str,
    seq_no: int,
    ts: str,
    offline: int,
    now: str,
    connector_id: int | None,
    id_token: str | None,
    auth_status: str | None,
) -> None:
    """A later (or earlier, replayed) event of a stored 2.0.1 transaction: fill what it
    lacked, the start moves to a Started event or an earlier timestamp."""
    store.conn.execute(
        "UPDATE transactions SET "
        "connector_id = COALESCE(connector_id, ?), id_token = COALESCE(?, id_token), "
        "auth_status = COALESCE(?, auth_status), "
        "start_time = CASE WHEN ? = 'Started' OR ? < start_time THEN ? ELSE start_time END, "
        "offline = MAX(offline, ?), last_seq_no = MAX(COALESCE(last_seq_no, -1), ?), "
        "updated_at = ? WHERE id = ?",
        (connector_id, id_token, auth_status, event_type, ts, ts, offline, seq_no, now, tx_id),
    )


def get_transaction(store: Store, transaction_id: int) -> dict[str, Any] | None:
    row = store.conn.execute(
        "SELECT * FROM transactions WHERE id = ?", (transaction_id,)
    ).fetchone()
    return _row(store, "transactions", row)


def find_transaction(store: Store, charger_id: str, ocpp_tx_id: str) -> dict[str, Any] | None:
    row = store.conn.execute(
        "SELECT * FROM transactions WHERE charger_id = ? AND ocpp_tx_id = ?",
        (charger_id, ocpp_tx_id),
    ).fetchone()
    return _row(store, "transactions", row)


def list_transactions(
    store: Store,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    charger_id: str | None = None,
    state: str | None = None,
) -> list[dict[str, Any]]:
    """Transactions whose start lies in ``[start, end)``, oldest first."""
    where, args = time_range("start_time", start, end)
    if charger_id is not None:
        where.append("charger_id = ?")
        args.append(charger_id)
    if state is not None:
        where.append("state = ?")
        args.append(state)
    return _select(store, "transactions", where, args, "start_time, id")


def list_meter_samples(
    store: Store,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    transaction_id: int | None = None,
) -> list[dict[str, Any]]:
    """Meter samples in timestamp order."""
    where, args = time_range("ts", start, end)
    if transaction_id is not None:
        where.append("transaction_id = ?")
        args.append(transaction_id)
    return _select(store, "meter_samples", where, args, "ts, id")


def _select(
    store: Store, table: str, where: list[str], args: list[Any], order_by: str
) -> list[dict[str, Any]]:
    """Every column of ``table``'s rows matching all ``where`` clauses, as dicts."""
    sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
    rows = store.conn.execute(f"{sql} ORDER BY {order_by}", args).fetchall()
    return [_row(store, table, r) for r in rows]


@dataclass(frozen=True)
class OpenTransaction:
    """A session in progress, as the controller sees it."""

    transaction_id: int
    charger_id: str
    connector_id: int | None
    ocpp_version: str
    id_token: str | None
    start_time: datetime
    energy_kwh: float  # delivered so far
    power_kw: float | None  # latest Power.Active.Import sample
    soc_frac: float | None  # latest SoC sample, 0..1
    # stored values that were not finite and were skipped (a store written before the
    # edge checks); the controller reports them in its plan's warnings
    bad_values: tuple[str, ...] = ()


def open_transactions(store: Store) -> list[OpenTransaction]:
    rows = store.conn.execute(
        "SELECT id, charger_id, connector_id, ocpp_version, id_token, start_time, energy_kwh "
        "FROM transactions WHERE state = 'open' ORDER BY start_time"
    ).fetchall()
    out = []
    for r in rows:
        energy = finite_or_none(r[6])
        bad = () if energy is not None or r[6] is None else (f"transaction {r[0]} energy_kwh",)
        if bad:
            log.warning(
                "transaction %s: stored energy_kwh %r is not finite: taken as 0", r[0], r[6]
            )
        out.append(
            OpenTransaction(
                transaction_id=r[0],
                charger_id=r[1],
                connector_id=r[2],
                ocpp_version=r[3],
                id_token=r[4],
                start_time=parse_iso(r[5]),
                energy_kwh=energy or 0.0,
                power_kw=_latest(store, r[0], POWER_IMPORT),
                soc_frac=_soc(_latest(store, r[0], SOC)),
                bad_values=bad,
            )
        )
    return out


def _soc(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


def _latest(store: Store, transaction_id: int, measurand: str) -> float | None:
    """Latest value of a measurand in a transaction (phases summed for power)."""
    row = store.conn.execute(
        f"SELECT ts FROM meter_samples WHERE transaction_id = ? AND measurand = ? "
        f"AND {FINITE_VALUE} ORDER BY ts DESC LIMIT 1",
        (transaction_id, measurand),
    ).fetchone()
    if row is None:
        return None
    # the car's SoC is sampled at location EV; power and energy at the outlet
    where = "" if measurand == SOC else " AND location IN ('', 'Outlet')"
    vals = store.conn.execute(
        f"SELECT phase, value FROM meter_samples WHERE transaction_id = ? AND measurand = ? "
        f"AND ts = ? AND {FINITE_VALUE}{where}",
        (transaction_id, measurand, row[0]),
    ).fetchall()
    if not vals:
        return None
    total = [v for p, v in vals if p == ""]
    if total:
        return total[0]
    return sum(v for p, v in vals if p in ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N"))


# --------------------------------------------------------------------------- charging needs


@dataclass(frozen=True)
class ChargingNeeds:
    charger_id: str
    connector_id: int
    transaction_id: int | None
    requested_energy_kwh: float | None
    departure_time: datetime | None
    max_power_kw: float | None
    energy_transfer_mode: str | None
    received_at: datetime


def record_charging_needs(
    store: Store,
    charger_id: str,
    connector_id: int,
    *,
    requested_energy_kwh: float | None,
    departure_time: datetime | None,
    max_power_kw: float | None,
    energy_transfer_mode: str | None,
    payload: dict[str, Any],
) -> ChargingNeeds:
    now = store.now()
    with _tx(store):
        row = store.conn.execute(
            "SELECT id FROM transactions WHERE charger_id = ? AND connector_id = ? AND "
            "state = 'open' ORDER BY start_time DESC LIMIT 1",
            (charger_id, connector_id),
        ).fetchone()
        tx_id = row[0] if row else None
        store.conn.execute(
            "INSERT INTO charging_needs (charger_id, connector_id, transaction_id, "
            "requested_energy_kwh, departure_time, max_power_kw, energy_transfer_mode, payload, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                charger_id,
                connector_id,
                tx_id,
                requested_energy_kwh,
                iso(departure_time) if departure_time else None,
                max_power_kw,
                energy_transfer_mode,
                dumps(payload),
                iso(now),
            ),
        )
    return ChargingNeeds(
        charger_id,
        connector_id,
        tx_id,
        requested_energy_kwh,
        departure_time,
        max_power_kw,
        energy_transfer_mode,
        now,
    )


def latest_charging_needs(store: Store, transaction_id: int) -> ChargingNeeds | None:
    """The newest ChargingNeeds for a transaction, or for its EVSE since shortly before it began."""
    tx = store.conn.execute(
        "SELECT charger_id, connector_id, start_time FROM transactions WHERE id = ?",
        (transaction_id,),
    ).fetchone()
    if tx is None:
        return None
    return charging_needs_of(store, transaction_id, tx[0], tx[1], parse_iso(tx[2]))


@functools.lru_cache(maxsize=1024)
def _needs_since(start_time: datetime) -> str:
    """EVSE-wide ChargingNeeds count for a transaction from this (stored) time on."""
    return iso(start_time - timedelta(minutes=15))


def charging_needs_of(
    store: Store, transaction_id: int, charger_id: str, connector_id: int, start_time: datetime
) -> ChargingNeeds | None:
    """:func:`latest_charging_needs` of a transaction whose charger, connector and start
    the caller has read (the control loop, every plan: one query less per car, #15)."""
    row = store.conn.execute(
        "SELECT charger_id, connector_id, transaction_id, requested_energy_kwh, departure_time, "
        "max_power_kw, energy_transfer_mode, received_at FROM charging_needs "
        "WHERE transaction_id = ? OR (transaction_id IS NULL AND charger_id = ? AND "
        "connector_id = ? AND received_at >= ?) "
        "ORDER BY received_at DESC, id DESC LIMIT 1",
        (transaction_id, charger_id, connector_id, _needs_since(start_time)),
    ).fetchone()
    if row is None:
        return None
    return ChargingNeeds(  # a non-finite stored number reads as not given
        row[0], row[1], row[2], finite_or_none(row[3]), _dt(row[4]), finite_or_none(row[5]),
        row[6], parse_iso(row[7]),
    )  # fmt: skip


# --------------------------------------------------------------------------- message log


def log_messages(store: Store, rows: list[tuple]) -> None:
    """Append raw messages: (charger_id, direction, message_type, unique_id, action, payload, ts)."""
    if not rows:
        return
    with _tx(store):
        store.conn.executemany(
            "INSERT INTO message_log (charger_id, direction, message_type, unique_id, action, "
            "payload, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def prune_message_log(store: Store, before: datetime) -> int:
    """Delete raw messages older than ``before``; return how many."""
    with _tx(store):
        cur = store.conn.execute("DELETE FROM message_log WHERE ts < ?", (iso(before),))
    return cur.rowcount


# --------------------------------------------------------------------------- control-loop reads


def latest_sample_at(
    store: Store, transaction_id: int, measurand: str = POWER_IMPORT
) -> datetime | None:
    """When the latest sample of ``measurand`` in a transaction was taken (None: none)."""
    row = store.conn.execute(
        "SELECT MAX(ts) FROM meter_samples WHERE transaction_id = ? AND measurand = ?",
        (transaction_id, measurand),
    ).fetchone()
    return None if row is None or row[0] is None else parse_iso(row[0])


def first_soc_frac(store: Store, transaction_id: int) -> float | None:
    """The first state of charge [0..1] a transaction reported (None: none)."""
    row = store.conn.execute(
        "SELECT value FROM meter_samples WHERE transaction_id = ? AND measurand = ? "
        f"AND {FINITE_VALUE} ORDER BY ts LIMIT 1",
        (transaction_id, SOC),
    ).fetchone()
    return row[0] / 100.0 if row else None


def closed_sessions(store: Store, *, limit: int) -> list[tuple[str, datetime, datetime, float]]:
    """The latest ``limit`` closed transactions with an end and a finite energy, newest
    first: ``(charger_id, start UTC, stop UTC, energy_kwh)``."""
    # the partial index gives them in order (the planner would sort every closed one):
    # 17,000 closed, limit 5,000 / 20,000: 25 / 42 -> 5 / 16 ms (#15)
    rows = store.conn.execute(
        "SELECT charger_id, start_time, stop_time, energy_kwh FROM transactions "
        "INDEXED BY ix_tx_closed_start "
        "WHERE state = 'closed' AND stop_time IS NOT NULL "
        "AND energy_kwh BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308 "
        "ORDER BY start_time DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [(c, parse_iso(a), parse_iso(b), float(e)) for c, a, b, e in rows]


def transactions_overlapping(store: Store, t0: datetime, t1: datetime) -> list[tuple]:
    """Transactions that started before ``t1`` and were open after ``t0``:
    ``(id, charger_id, connector_id, start_time, stop_time | None, state, meter_start_wh,
    energy_kwh)``, times as stored (ISO UTC text)."""
    return store.conn.execute(
        "SELECT id, charger_id, connector_id, start_time, stop_time, state, "
        "meter_start_wh, energy_kwh FROM transactions "
        "WHERE start_time < ? AND (stop_time IS NULL OR stop_time > ? OR state = 'open')",
        (iso(t1), iso(t0)),
    ).fetchall()


def energy_register_samples(store: Store, transaction_id: int) -> list[tuple[str, float]]:
    """A transaction's finite energy-register samples (whole meter, outlet) in time order:
    ``(ts ISO UTC text, value kWh)``."""
    return store.conn.execute(
        "SELECT ts, value FROM meter_samples WHERE transaction_id = ? AND measurand = ? "
        f"AND phase = '' AND location IN ('', 'Outlet') AND {FINITE_VALUE} ORDER BY ts",
        (transaction_id, ENERGY_REGISTER),
    ).fetchall()
