"""Real charging sessions in: readers for session files and their placement on a station.

Three formats are read (pvlib's verb scheme: ``read_*`` takes a file, ``parse_*`` a
buffer or string; :func:`read_sessions` picks the reader):

- **generic CSV** (:func:`read_generic_csv`): one row per session with the columns
  ``arrival``, ``departure`` (ISO 8601; without a UTC offset they are local times in
  ``timezone``) and ``energy_kwh`` (delivered), and optionally
  ``requested_energy_kwh`` and ``stated_departure`` (what the driver said),
  ``max_power_kw`` (the car's limit), ``kind`` (``AC`` / ``DC``), ``charger_id``,
  ``connector_id`` and ``id_token``. Other spellings are mapped with ``columns``
  (``{"arrival": "Start", "energy_kwh": "Total kWh"}``); ``"StartDate+StartTime"``
  joins two columns with a space (date and time in separate columns).
- **ACN-Data JSON** (:func:`read_acn_json`): what the Caltech ACN-Data API returns,
  ``{"_items": [...], "_meta": {...}}`` (or a bare list of items): ``connectionTime``,
  ``disconnectTime`` (RFC 1123, GMT), ``kWhDelivered``, ``stationID``, ``timezone``,
  ``userInputs`` (the latest one: ``kWhRequested``, ``requestedDeparture``, else
  ``minutesAvailable``). ACN sites are level-2 AC: every session is ``AC``.
- **megastation's own** ``export sessions`` CSV (:func:`read_export_csv`):
  ``charger_id``, ``connector_id``, ``id_token``, ``start_time_utc``,
  ``stop_time_utc``, ``energy_kwh``, ``state`` (sessions still open are skipped):
  a live station's history replayed under another policy.

Every reader returns :class:`ImportedSession` rows (UTC, each naming its file and row)
and fills an :class:`ImportReport`. A value that cannot be read, a departure not after
the arrival and a negative energy raise :class:`SessionImportError` naming the file,
row and field (``errors="skip"`` turns them into counted warnings and drops the row).

:func:`place_sessions` turns them into :class:`~megastation.core.fleet.CarVisit` on a
station:

- **clock**: each arrival keeps its wall-clock time and weekday in the data's own zone
  and is moved to the station's zone; ``align_to`` (a date) shifts the data by whole
  weeks so its first day falls on the first date on or after ``align_to`` with the same
  weekday. Departures keep the true stay (no daylight-saving jumps).
- **connector**: the session's charger (and connector) when the station has it and it
  is free; else the connector of the right kind that has been free longest. The kind
  comes from the data, else the named charger, else the car's ``max_power_kw``
  (over :data:`DC_ABOVE_KW` is DC), else the mean power over the stay, else the only
  kind the station has. An unknown charger, a busy connector (two cars on one) and
  a session for which no connector of its kind is free (the station is too small)
  are counted warnings; the first two are re-placed, the last is dropped.
- **period**: sessions arriving outside ``[start, end)`` are dropped (counted).
- **car**: what the data does not say comes from :data:`CAR_DEFAULTS` by kind (a
  64 kWh battery; SoC on arrival such that the energy ends at the kind's target SoC,
  the battery made larger when the energy does not fit; the car's power limit: the
  connector's, unless the data gives ``max_power_kw``).
- **wants**: ``"delivered"`` (default): each car wants what it got; ``"requested"``:
  what its driver asked for where the data says (else what it got). The truth drives
  the simulated car; with ``stated=True`` the stated departure and energy reach the
  controller as a driver's input (:attr:`CarVisit.stated_departure`,
  :attr:`CarVisit.stated_energy_kwh`: ChargingNeeds on 2.0.1 chargers, an override on
  1.6 ones, see :mod:`megastation.sim.simulator`).

:func:`load_sessions` does both; :func:`preload_history` writes placed sessions into a
store as closed transactions (the history the controller learns from).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from megastation.core.config import Station
from megastation.core.fleet import KINDS, CarVisit

FORMATS = ("auto", "generic", "acn", "export")
WANTS = ("delivered", "requested")
GENERIC_REQUIRED = ("arrival", "departure", "energy_kwh")
GENERIC_OPTIONAL = (
    "requested_energy_kwh",
    "stated_departure",
    "max_power_kw",
    "kind",
    "charger_id",
    "connector_id",
    "id_token",
)
GENERIC_COLUMNS = GENERIC_REQUIRED + GENERIC_OPTIONAL
EXPORT_REQUIRED = ("charger_id", "connector_id", "start_time_utc", "stop_time_utc", "energy_kwh")
DC_ABOVE_KW = 22.0  # a car limit (or mean power) above this is a DC car: AC tops out at 22 kW
SHOWN_ROWS = 5  # rows a warning lists


class SessionImportError(ValueError):
    """A session file is wrong; the message names the file, row and field."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.row = row  # the row (CSV line / ACN item number), when one is at fault
        self.field = field  # the field at fault, when one is


@dataclass(frozen=True)
class CarDefaults:
    """What a car of one charger kind is taken to be when the data does not say."""

    battery_kwh: float  # usable capacity [kWh] (made larger when the energy does not fit)
    target_soc_frac: float  # the energy ends here: SoC on arrival = target - energy/battery
    min_soc_arrival_frac: float  # ... but never below this
    max_power_kw: float | None  # the car's limit [kW]; None: the connector's


CAR_DEFAULTS: dict[str, CarDefaults] = {
    # a typical Korean EV (needs.DEFAULT_EV_BATTERY_KWH); AC cars charge to full, DC to 80 %
    # (where the taper starts); the connector's power, as most cars exceed a 7 kW AC point
    # and the station's DC connectors are what limits there
    "AC": CarDefaults(battery_kwh=64.0, target_soc_frac=0.9, min_soc_arrival_frac=0.05,
                      max_power_kw=None),
    "DC": CarDefaults(battery_kwh=64.0, target_soc_frac=0.8, min_soc_arrival_frac=0.05,
                      max_power_kw=None),
}  # fmt: skip


@dataclass(frozen=True)
class ImportedSession:
    """One session as read from a file (times tz-aware UTC), before placement."""

    source: str  # file (or "<buffer>")
    row: int  # CSV line number (header = 1) or ACN item number (1-based)
    arrival: datetime  # plug-in
    departure: datetime  # unplug
    energy_kwh: float  # delivered
    timezone: str | None = None  # the data's zone (its wall clock is kept); None: station's
    requested_energy_kwh: float | None = None  # what the driver asked for [kWh]
    stated_departure: datetime | None = None  # when the driver said they would leave
    max_power_kw: float | None = None  # the car's limit
    kind: str | None = None  # "AC" / "DC"
    charger_id: str | None = None
    connector_id: int | None = None
    id_token: str | None = None
    # the arrival on the data's own wall clock (naive): its offset when the file wrote one,
    # else ``timezone``; None: the arrival in ``timezone`` (or the station's zone)
    local_arrival: datetime | None = None


@dataclass
class ImportWarning:
    """A counted problem: the rows it concerns, the field, what happened to them."""

    source: str
    field: str
    message: str
    rows: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        shown = ", ".join(str(r) for r in self.rows[:SHOWN_ROWS])
        more = ", ..." if len(self.rows) > SHOWN_ROWS else ""
        n = len(self.rows)
        return (
            f"{self.source}: {self.field}: {self.message} ({n} row{'s' * (n != 1)}: {shown}{more})"
        )


@dataclass
class ImportReport:
    """What reading and placing a file did: counts and the warnings (by kind of problem)."""

    source: str
    read: int = 0  # sessions read
    skipped: int = 0  # bad rows dropped (errors="skip")
    placed: int = 0  # visits made
    dropped: int = 0  # read but not placed (outside the period, no free connector)
    warnings: dict[str, ImportWarning] = field(default_factory=dict)

    def warn(self, key: str, source: str, row: int, field_name: str, message: str) -> None:
        w = self.warnings.get(key)
        if w is None:
            w = self.warnings[key] = ImportWarning(source, field_name, message)
        w.rows.append(row)

    @property
    def warning_count(self) -> int:
        return sum(len(w.rows) for w in self.warnings.values())

    def lines(self) -> list[str]:
        """One line of counts, then one per kind of warning."""
        head = (
            f"{self.source}: {self.read} sessions read, {self.placed} placed, "
            f"{self.dropped} dropped, {self.skipped} bad rows skipped"
        )
        return [head, *(str(w) for w in self.warnings.values())]


# --------------------------------------------------------------------------- values


def _fail(source: str, row: int, field_name: str, message: str) -> SessionImportError:
    return SessionImportError(
        f"{source}: row {row}: {field_name}: {message}", row=row, field=field_name
    )


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SessionImportError(f"{where}: unknown time zone {name!r}") from None


def _time(text: str, tz: ZoneInfo | None, source: str, row: int, field_name: str) -> datetime:
    """ISO 8601 (or RFC 1123) -> UTC; a time without offset is local in ``tz``."""
    s = text.strip()
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        try:
            t = parsedate_to_datetime(s)
        except (TypeError, ValueError, IndexError):
            raise _fail(source, row, field_name, f"not a date-time: {text!r}") from None
    if t.tzinfo is None:
        if tz is None:
            raise _fail(
                source, row, field_name, f"{text!r} has no UTC offset (give the data's timezone)"
            )
        t = t.replace(tzinfo=tz)
    return t.astimezone(UTC)


def _iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


def _number(text: Any, source: str, row: int, field_name: str) -> float:
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise _fail(source, row, field_name, f"not a number: {text!r}") from None
    if not math.isfinite(x):
        raise _fail(source, row, field_name, f"not a finite number: {text!r}")
    return x


def _kind(text: str, source: str, row: int) -> str:
    k = text.strip().upper()
    k = {"L2": "AC", "LEVEL2": "AC", "LEVEL 2": "AC", "DCFC": "DC"}.get(k, k)
    if k not in KINDS:
        raise _fail(source, row, "kind", f"must be AC or DC, got {text!r}")
    return k


def _check(s: ImportedSession) -> ImportedSession:
    """The checks every reader makes on a session it built."""
    if s.departure <= s.arrival:
        raise _fail(
            s.source,
            s.row,
            "departure",
            f"{s.departure.isoformat()} is not after the arrival {s.arrival.isoformat()}",
        )
    if s.energy_kwh < 0:
        raise _fail(s.source, s.row, "energy_kwh", f"must be >= 0, got {s.energy_kwh:g}")
    if s.requested_energy_kwh is not None and s.requested_energy_kwh < 0:
        raise _fail(
            s.source, s.row, "requested_energy_kwh", f"must be >= 0, got {s.requested_energy_kwh:g}"
        )
    if s.max_power_kw is not None and s.max_power_kw <= 0:
        raise _fail(s.source, s.row, "max_power_kw", f"must be > 0, got {s.max_power_kw:g}")
    if s.connector_id is not None and s.connector_id < 1:
        raise _fail(s.source, s.row, "connector_id", f"must be >= 1, got {s.connector_id}")
    return s


def _collect(
    rows: Iterable[tuple[int, Any]],
    build: Any,
    report: ImportReport,
    errors: str,
) -> list[ImportedSession]:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors: must be 'raise' or 'skip', got {errors!r}")
    out = []
    for row, raw in rows:
        try:
            out.append(_check(build(row, raw)))
        except SessionImportError as exc:
            if errors == "raise":
                raise
            field_name = exc.field or "row"
            report.warn(
                f"bad:{field_name}", report.source, row, field_name, "bad value, row skipped"
            )
            report.skipped += 1
    report.read += len(out)
    return out


# --------------------------------------------------------------------------- generic CSV


def parse_columns(text: str) -> dict[str, str]:
    """``arrival=Start,energy_kwh=Total kWh`` -> a column mapping (CLI ``--columns``)."""
    out = {}
    for part in (p for p in text.split(",") if p.strip()):
        ours, sep, theirs = part.partition("=")
        ours = ours.strip()
        if not sep or not theirs.strip():
            raise ValueError(f"columns: {part!r}: use OURS=THEIRS, e.g. arrival=Start")
        if ours not in GENERIC_COLUMNS:
            raise ValueError(
                f"columns: {ours!r}: not a column; use any of {', '.join(GENERIC_COLUMNS)}"
            )
        out[ours] = theirs.strip()
    return out


def parse_generic_csv(
    text: str,
    *,
    source: str = "<buffer>",
    columns: Mapping[str, str] | None = None,
    timezone: str | None = None,
    errors: str = "raise",
    report: ImportReport | None = None,
) -> list[ImportedSession]:
    """Sessions from generic CSV text (module docstring); ``columns`` maps our column names
    to the file's (``"Date+Time"`` joins two of them); ``timezone``: the zone of times
    written without a UTC offset (and of the data's wall clock)."""
    report = report if report is not None else ImportReport(source)
    mapping = {c: c for c in GENERIC_COLUMNS}
    for ours, theirs in (columns or {}).items():
        if ours not in GENERIC_COLUMNS:
            raise SessionImportError(f"{source}: columns: {ours!r} is not a column we read")
        mapping[ours] = theirs
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    if not header:
        raise SessionImportError(f"{source}: empty file (no header row)")

    def parts(ours: str) -> list[str]:
        return [p.strip() for p in mapping[ours].split("+")]

    for ours in GENERIC_REQUIRED:
        missing = [p for p in parts(ours) if p not in header]
        if missing:
            hint = "" if ours == mapping[ours] else f" (mapped from {ours!r})"
            raise SessionImportError(
                f"{source}: {ours}: no column {missing[0]!r}{hint} in the header; "
                f"map one with columns, e.g. {ours}=YourColumn"
            )
    present = {o for o in GENERIC_OPTIONAL if all(p in header for p in parts(o))}
    for ours, theirs in (columns or {}).items():
        if ours in GENERIC_OPTIONAL and ours not in present:
            raise SessionImportError(f"{source}: {ours}: no column {theirs!r} in the header")
    tz = _zone(timezone, f"{source}: timezone") if timezone else None

    def get(raw: dict, ours: str) -> str | None:
        if ours not in GENERIC_REQUIRED and ours not in present:
            return None
        vals = [(raw.get(p) or "").strip() for p in parts(ours)]
        text = " ".join(v for v in vals if v)
        return text or None

    def build(row: int, raw: dict) -> ImportedSession:
        vals = {c: get(raw, c) for c in GENERIC_COLUMNS}
        for c in GENERIC_REQUIRED:
            if vals[c] is None:
                raise _fail(source, row, c, "empty")
        arrival = _time(vals["arrival"], tz, source, row, "arrival")
        written = datetime.fromisoformat(vals["arrival"]) if _iso(vals["arrival"]) else None
        wall = written.replace(tzinfo=None) if written is not None else None
        return ImportedSession(
            source=source,
            row=row,
            arrival=arrival,
            departure=_time(vals["departure"], tz, source, row, "departure"),
            energy_kwh=_number(vals["energy_kwh"], source, row, "energy_kwh"),
            timezone=timezone,
            requested_energy_kwh=None
            if vals["requested_energy_kwh"] is None
            else _number(vals["requested_energy_kwh"], source, row, "requested_energy_kwh"),
            stated_departure=None
            if vals["stated_departure"] is None
            else _time(vals["stated_departure"], tz, source, row, "stated_departure"),
            max_power_kw=None
            if vals["max_power_kw"] is None
            else _number(vals["max_power_kw"], source, row, "max_power_kw"),
            kind=None if vals["kind"] is None else _kind(vals["kind"], source, row),
            charger_id=vals["charger_id"],
            connector_id=None
            if vals["connector_id"] is None
            else _connector(vals["connector_id"], source, row),
            id_token=vals["id_token"],
            local_arrival=wall,
        )

    return _collect(((i, r) for i, r in enumerate(reader, start=2)), build, report, errors)


def _connector(text: str, source: str, row: int) -> int:
    x = _number(text, source, row, "connector_id")
    if x != int(x):
        raise _fail(source, row, "connector_id", f"not a whole number: {text!r}")
    return int(x)


def read_generic_csv(path: str | os.PathLike[str], **kwargs: Any) -> list[ImportedSession]:
    """:func:`parse_generic_csv` of a file (the file's name goes into every message)."""
    p = Path(path)
    return parse_generic_csv(_read_text(p), source=str(p), **kwargs)


# --------------------------------------------------------------------------- ACN-Data


def _acn_time(value: Any, source: str, row: int, field_name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, row, field_name, f"missing or not a date-time: {value!r}")
    return _time(value, UTC, source, row, field_name)


def parse_acn_json(
    data: str | bytes | Mapping[str, Any] | Sequence[Any],
    *,
    source: str = "<buffer>",
    timezone: str | None = None,
    errors: str = "raise",
    report: ImportReport | None = None,
) -> list[ImportedSession]:
    """Sessions from an ACN-Data API answer (JSON text or the decoded object).

    ``timezone`` is used for items without their own ``timezone`` (the ACN sites give
    ``America/Los_Angeles``)."""
    report = report if report is not None else ImportReport(source)
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SessionImportError(
                f"{source}: not JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
            ) from None
    items = data.get("_items") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise SessionImportError(
            f'{source}: _items: expected {{"_items": [...]}} or a list of sessions (ACN-Data API)'
        )

    def build(row: int, it: Any) -> ImportedSession:
        if not isinstance(it, Mapping):
            raise _fail(source, row, "item", "not an object")
        arrival = _acn_time(it.get("connectionTime"), source, row, "connectionTime")
        departure = _acn_time(it.get("disconnectTime"), source, row, "disconnectTime")
        if it.get("kWhDelivered") is None:
            raise _fail(source, row, "kWhDelivered", "missing")
        energy = _number(it.get("kWhDelivered"), source, row, "kWhDelivered")
        zone = it.get("timezone") or timezone
        if zone is not None:
            _zone(zone, f"{source}: row {row}: timezone")
        requested = stated = None
        inputs = it.get("userInputs") or []
        if not isinstance(inputs, list):
            raise _fail(source, row, "userInputs", "not a list")
        if inputs:
            last = inputs[-1]
            if not isinstance(last, Mapping):
                raise _fail(source, row, "userInputs", "not a list of objects")
            if last.get("kWhRequested") is not None:
                requested = _number(last["kWhRequested"], source, row, "userInputs.kWhRequested")
            if last.get("requestedDeparture"):
                stated = _acn_time(
                    last["requestedDeparture"], source, row, "userInputs.requestedDeparture"
                )
            elif last.get("minutesAvailable") is not None:
                mins = _number(last["minutesAvailable"], source, row, "userInputs.minutesAvailable")
                stated = arrival + timedelta(minutes=mins)
        s = ImportedSession(
            source=source,
            row=row,
            arrival=arrival,
            departure=departure,
            energy_kwh=energy,
            timezone=zone,
            requested_energy_kwh=requested,
            stated_departure=stated,
            kind="AC",
            charger_id=str(it["stationID"]) if it.get("stationID") else None,
            id_token=str(it["userID"]) if it.get("userID") is not None else None,
        )
        # ACN field names in the messages
        if s.departure <= s.arrival:
            raise _fail(source, row, "disconnectTime", "not after connectionTime")
        if s.energy_kwh < 0:
            raise _fail(source, row, "kWhDelivered", f"must be >= 0, got {energy:g}")
        if requested is not None and requested < 0:
            raise _fail(source, row, "userInputs.kWhRequested", f"must be >= 0, got {requested:g}")
        return s

    return _collect(((i, it) for i, it in enumerate(items, start=1)), build, report, errors)


def read_acn_json(path: str | os.PathLike[str], **kwargs: Any) -> list[ImportedSession]:
    """:func:`parse_acn_json` of a file."""
    p = Path(path)
    return parse_acn_json(_read_text(p), source=str(p), **kwargs)


# --------------------------------------------------------------------------- export CSV


def parse_export_csv(
    text: str,
    *,
    source: str = "<buffer>",
    timezone: str | None = None,
    errors: str = "raise",
    report: ImportReport | None = None,
) -> list[ImportedSession]:
    """Sessions from megastation's ``export sessions`` CSV (times UTC); open ones skipped.
    ``timezone``: the zone of the station that recorded them (None: the target station's)."""
    report = report if report is not None else ImportReport(source)
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    missing = [c for c in EXPORT_REQUIRED if c not in header]
    if missing:
        raise SessionImportError(
            f"{source}: {missing[0]}: no such column (not a `megastation export sessions` file?)"
        )
    tz = _zone(timezone, f"{source}: timezone") if timezone else None
    rows = []
    for row, raw in enumerate(reader, start=2):
        if (raw.get("state") or "closed") != "closed" or not (raw.get("stop_time_utc") or ""):
            report.warn("open", source, row, "stop_time_utc", "session still open, skipped")
            report.skipped += 1
            continue
        rows.append((row, raw))

    def build(row: int, raw: dict) -> ImportedSession:
        energy = raw.get("energy_kwh") or ""
        if not energy.strip():
            raise _fail(source, row, "energy_kwh", "empty")
        return ImportedSession(
            source=source,
            row=row,
            arrival=_time(raw["start_time_utc"], UTC, source, row, "start_time_utc"),
            departure=_time(raw["stop_time_utc"], UTC, source, row, "stop_time_utc"),
            energy_kwh=_number(energy, source, row, "energy_kwh"),
            timezone=None if tz is None else timezone,
            charger_id=(raw.get("charger_id") or "").strip() or None,
            connector_id=_connector(raw["connector_id"], source, row)
            if (raw.get("connector_id") or "").strip()
            else None,
            id_token=(raw.get("id_token") or "").strip() or None,
        )

    return _collect(rows, build, report, errors)


def read_export_csv(path: str | os.PathLike[str], **kwargs: Any) -> list[ImportedSession]:
    """:func:`parse_export_csv` of a file."""
    p = Path(path)
    return parse_export_csv(_read_text(p), source=str(p), **kwargs)


# --------------------------------------------------------------------------- any file


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SessionImportError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionImportError(f"{p}: cannot read: {exc}") from None


def detect_format(path: str | os.PathLike[str], text: str | None = None) -> str:
    """``acn`` (JSON), ``export`` (megastation's export header) or ``generic``."""
    p = Path(path)
    text = _read_text(p) if text is None else text
    head = text.lstrip("\ufeff \n\r\t")[:1]
    if p.suffix.lower() == ".json" or head in ("{", "["):
        return "acn"
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    cols = {c.strip() for c in first.split(",")}
    if {"start_time_utc", "stop_time_utc"} <= cols:
        return "export"
    return "generic"


def read_sessions(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    timezone: str | None = None,
    errors: str = "raise",
    report: ImportReport | None = None,
) -> list[ImportedSession]:
    """Read a session file in any supported ``format`` (``auto`` detects it)."""
    if format not in FORMATS:
        raise SessionImportError(f"format: must be one of {', '.join(FORMATS)}; got {format!r}")
    p = Path(path)
    text = _read_text(p)
    fmt = detect_format(p, text) if format == "auto" else format
    report = report if report is not None else ImportReport(str(p))
    kw = {"source": str(p), "timezone": timezone, "errors": errors, "report": report}
    if fmt == "acn":
        if columns:
            raise SessionImportError(f"{p}: columns: only for generic CSV files")
        return parse_acn_json(text, **kw)
    if fmt == "export":
        return parse_export_csv(text, **kw)
    return parse_generic_csv(text, columns=columns, **kw)


# --------------------------------------------------------------------------- placement


def _shift_days(sessions: Sequence[ImportedSession], tz_station: ZoneInfo, align_to: date) -> int:
    """Whole weeks (in days) that move the data's first local day onto or after ``align_to``."""
    first = min(_wall(s, tz_station).date() for s in sessions)
    delta = (align_to - first).days
    return delta + (-delta) % 7


def _data_zone(s: ImportedSession, tz_station: ZoneInfo) -> ZoneInfo:
    return ZoneInfo(s.timezone) if s.timezone else tz_station


def _wall(s: ImportedSession, tz_station: ZoneInfo) -> datetime:
    """The arrival on the data's own wall clock (naive)."""
    if s.local_arrival is not None:
        return s.local_arrival
    return s.arrival.astimezone(_data_zone(s, tz_station)).replace(tzinfo=None)


def rebase(s: ImportedSession, tz_station: ZoneInfo, shift_days: int) -> ImportedSession:
    """The session on the station's clock: the arrival's wall time and weekday in the data's
    zone, ``shift_days`` later, in the station's zone; the true stay and stated offsets kept."""
    local = _wall(s, tz_station)
    day = local.date() + timedelta(days=shift_days)
    arrival = datetime.combine(day, local.time(), tzinfo=tz_station)
    arrival = arrival.astimezone(UTC)
    move = arrival - s.arrival
    stated = s.stated_departure + move if s.stated_departure is not None else None
    return replace(
        s,
        arrival=arrival,
        departure=s.departure + move,
        stated_departure=stated,
        timezone=str(tz_station),
        local_arrival=None,
    )


def _infer_kind(s: ImportedSession, station: Station) -> str | None:
    if s.kind is not None:
        return s.kind
    ch = station.charger(s.charger_id) if s.charger_id else None
    if ch is not None:
        return ch.kind
    if s.max_power_kw is not None:
        return "DC" if s.max_power_kw > DC_ABOVE_KW else "AC"
    hours = (s.departure - s.arrival).total_seconds() / 3600.0
    if s.energy_kwh / hours > DC_ABOVE_KW:
        return "DC"
    kinds = {c.kind for c in station.chargers}
    if len(kinds) == 1:
        return next(iter(kinds))
    return "AC"  # a mean power a 22 kW AC point could give


def _car(
    s: ImportedSession, kind: str, energy_kwh: float, connector_kw: float, defaults: CarDefaults
) -> tuple[float, float, float]:
    """(battery kWh, SoC on arrival, car max kW) for a car the data describes only by energy."""
    battery = defaults.battery_kwh
    room = defaults.target_soc_frac - defaults.min_soc_arrival_frac
    if energy_kwh > room * battery:
        battery = energy_kwh / room
    soc = max(defaults.min_soc_arrival_frac, defaults.target_soc_frac - energy_kwh / battery)
    car_kw = s.max_power_kw or defaults.max_power_kw or connector_kw
    return battery, soc, car_kw


def place_sessions(
    sessions: Sequence[ImportedSession],
    station: Station,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    align_to: date | None = None,
    wants: str = "delivered",
    stated: bool = True,
    car_defaults: Mapping[str, CarDefaults] | None = None,
    report: ImportReport | None = None,
) -> list[CarVisit]:
    """Car visits on ``station`` from imported sessions (module docstring), sorted by arrival.

    ``start``/``end`` (UTC) select arrivals in ``[start, end)``; ``align_to`` moves the
    data by whole weeks onto that local date (weekday and time of day kept); ``wants``:
    ``delivered`` or ``requested``; ``stated``: give the controller what drivers said.
    """
    if wants not in WANTS:
        raise ValueError(f"wants: must be one of {', '.join(WANTS)}; got {wants!r}")
    source = sessions[0].source if sessions else "<none>"
    report = report if report is not None else ImportReport(source)
    defaults = {**CAR_DEFAULTS, **(car_defaults or {})}
    tz = station.site.tz
    shift = _shift_days(sessions, tz, align_to) if (sessions and align_to is not None) else 0
    moved = sorted((rebase(s, tz, shift) for s in sessions), key=lambda s: (s.arrival, s.row))

    conns: dict[str, list[tuple[str, int]]] = {k: [] for k in KINDS}
    for ch in station.chargers:
        conns[ch.kind].extend((ch.id, n) for n in ch.connector_ids)
    free_at: dict[tuple[str, int], datetime] = {
        c: datetime.min.replace(tzinfo=UTC) for k in KINDS for c in conns[k]
    }
    visits: list[CarVisit] = []
    for s in moved:
        if (start is not None and s.arrival < start) or (end is not None and s.arrival >= end):
            report.warn(
                "period", s.source, s.row, "arrival", "outside the simulated period, dropped"
            )
            report.dropped += 1
            continue
        kind = _infer_kind(s, station)
        slot = _named_slot(s, station, free_at, report) or _free_slot(
            s, kind, conns, free_at, report
        )
        if slot is None:
            report.dropped += 1
            continue
        free_at[slot] = s.departure
        visits.append(_visit(s, kind, slot, station, defaults[kind], wants, stated, report))
    report.placed += len(visits)
    return visits


Slot = tuple[str, int]  # (charger id, connector id)


def _named_slot(
    s: ImportedSession, station: Station, free_at: dict[Slot, datetime], report: ImportReport
) -> Slot | None:
    """The session's own charger (and connector) when the station has it and it is free;
    warnings for an unknown charger, a kind that differs, a bad or busy connector."""
    ch = station.charger(s.charger_id) if s.charger_id else None
    if s.charger_id and ch is None:
        report.warn(
            "unknown_charger",
            s.source,
            s.row,
            "charger_id",
            f"no such charger on the station (e.g. {s.charger_id!r}); placed by kind",
        )
        return None
    if ch is None:
        return None
    if s.kind is not None and ch.kind != s.kind:
        report.warn(
            "kind_mismatch",
            s.source,
            s.row,
            "kind",
            f"the data's kind differs from charger {ch.id}'s; placed by the data's kind",
        )
        return None
    wanted = [(ch.id, n) for n in ch.connector_ids]
    if s.connector_id and s.connector_id in ch.connector_ids:
        wanted = [(ch.id, s.connector_id)]
    elif s.connector_id:
        report.warn(
            "bad_connector",
            s.source,
            s.row,
            "connector_id",
            f"charger {ch.id} has no such connector; placed on a free one",
        )
    slot = next((c for c in wanted if free_at[c] <= s.arrival), None)
    if slot is None:
        report.warn(
            "busy",
            s.source,
            s.row,
            "connector_id" if s.connector_id else "charger_id",
            "two cars on one connector: re-placed on a free one of its kind",
        )
    return slot


def _free_slot(
    s: ImportedSession,
    kind: str,
    conns: dict[str, list[Slot]],
    free_at: dict[Slot, datetime],
    report: ImportReport,
) -> Slot | None:
    """The connector of ``kind`` free the longest; None (with a warning) when the station
    has none of that kind or all are busy."""
    if not conns.get(kind):
        report.warn(
            f"no_{kind}", s.source, s.row, "kind", f"the station has no {kind} connector, dropped"
        )
        return None
    free = [c for c in conns[kind] if free_at[c] <= s.arrival]
    if not free:
        report.warn(
            f"full_{kind}",
            s.source,
            s.row,
            "arrival",
            f"station too small: all {len(conns[kind])} {kind} connectors busy, dropped",
        )
        return None
    return min(free, key=lambda c: free_at[c])


def _visit(
    s: ImportedSession,
    kind: str,
    slot: Slot,
    station: Station,
    defaults: CarDefaults,
    wants: str,
    stated: bool,
    report: ImportReport,
) -> CarVisit:
    """The car visit of a placed session (what it wants, the car's defaults, what its
    driver said)."""
    charger = station.charger(slot[0])
    energy = s.energy_kwh
    if wants == "requested" and s.requested_energy_kwh is not None:
        energy = s.requested_energy_kwh
    battery, soc, car_kw = _car(s, kind, energy, charger.connector_power_kw, defaults)
    hours = (s.departure - s.arrival).total_seconds() / 3600.0
    if energy > min(car_kw, charger.connector_power_kw) * hours + 1e-6:
        report.warn(
            "too_much",
            s.source,
            s.row,
            "energy_kwh",
            "more than the station's connector can deliver in the stay (counted as unmet)",
        )
    stated_dep = s.stated_departure if stated else None
    if stated_dep is not None and stated_dep <= s.arrival:
        report.warn(
            "stated_before", s.source, s.row, "stated_departure", "not after the arrival, ignored"
        )
        stated_dep = None
    return CarVisit(
        charger_id=slot[0],
        connector_id=slot[1],
        arrival=s.arrival,
        departure=s.departure,
        energy_wanted_kwh=round(energy, 4),
        car_model=f"imported {kind}",
        battery_kwh=round(battery, 3),
        car_max_power_kw=car_kw,
        soc_arrival_frac=round(soc, 4),
        sends_charging_needs=False,  # never the truth: stated needs are below
        id_token=s.id_token or f"IMPORT{s.row:06d}",
        stated_departure=stated_dep,
        stated_energy_kwh=s.requested_energy_kwh if stated else None,
    )


@dataclass
class SessionImport:
    """:func:`load_sessions`' answer: the visits and what happened on the way."""

    visits: list[CarVisit]
    report: ImportReport
    sessions: list[ImportedSession] = field(default_factory=list)  # as read (UTC)


def load_sessions(
    path: str | os.PathLike[str],
    station: Station,
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    timezone: str | None = None,
    errors: str = "raise",
    start: datetime | None = None,
    end: datetime | None = None,
    align_to: date | None = None,
    wants: str = "delivered",
    stated: bool = True,
) -> SessionImport:
    """:func:`read_sessions` then :func:`place_sessions`. ``timezone`` defaults to the
    station's (times without offset in a generic CSV, export files)."""
    report = ImportReport(str(path))
    tz = timezone or station.site.timezone
    sessions = read_sessions(
        path, format=format, columns=columns, timezone=tz, errors=errors, report=report
    )
    if not sessions:
        raise SessionImportError(f"{path}: no sessions")
    visits = place_sessions(
        sessions,
        station,
        start=start,
        end=end,
        align_to=align_to,
        wants=wants,
        stated=stated,
        report=report,
    )
    return SessionImport(visits, report, list(sessions))


def history_align_to(sessions: Sequence[ImportedSession], station: Station, before: date) -> date:
    """The ``align_to`` that moves history by whole weeks to end on the latest day before
    ``before`` it can (weekday and time of day kept): history for a run from ``before``."""
    tz = station.site.tz
    first = min(_wall(s, tz).date() for s in sessions)
    last = max((_wall(s, tz) + (s.departure - s.arrival)).date() for s in sessions)
    shift = ((before - timedelta(days=1) - last).days // 7) * 7
    return first + timedelta(days=shift)


@dataclass
class SimulationSessions:
    """:func:`sessions_for_simulation`' answer."""

    start: datetime  # UTC: local midnight of the run's first day
    visits: list[CarVisit]  # arriving in [start, start + span)
    history: list[CarVisit]  # departing before start
    reports: list[ImportReport]


def sessions_for_simulation(
    station: Station,
    *,
    sessions: str | os.PathLike[str] | None,
    span: timedelta,
    history: str | os.PathLike[str] | None = None,
    start: datetime | None = None,
    align_to: date | None = None,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    timezone: str | None = None,
    errors: str = "raise",
    wants: str = "delivered",
    stated: bool = True,
) -> SimulationSessions:
    """Cars and history for ``megastation simulate --sessions/--history``.

    The run starts at ``start`` or else at the local midnight of the first rebased
    arrival (``align_to`` or, without it, the data's own dates; with ``start`` and no
    ``align_to`` the data's first day is moved into the six days before the start); cars arriving later than
    ``span`` after it are dropped (counted). The ``history`` file (same options) is moved
    by whole weeks to end before the start (:func:`history_align_to`). With
    ``sessions=None`` only the history is read (``start`` is then required)."""
    tz_name = timezone or station.site.timezone
    reports = []
    visits: list[CarVisit] = []
    if align_to is None and start is not None:
        # the data's first weekday lands in the week before the start, so the period
        # from the start on is covered (earlier sessions are dropped, counted)
        align_to = start.astimezone(station.site.tz).date() - timedelta(days=6)
    if sessions is not None:
        report = ImportReport(str(sessions))
        rows = read_sessions(
            sessions, format=format, columns=columns, timezone=tz_name, errors=errors,
            report=report,
        )  # fmt: skip
        if not rows:
            raise SessionImportError(f"{sessions}: no sessions")
        if start is None:
            probe = place_sessions(rows, station, align_to=align_to, report=ImportReport(""))
            start = first_local_midnight(probe or [_as_visit(rebase(rows[0], station.site.tz, 0))],
                                         station)  # fmt: skip
        visits = place_sessions(
            rows, station, start=start, end=start + span, align_to=align_to, wants=wants,
            stated=stated, report=report,
        )  # fmt: skip
        reports.append(report)
    if start is None:
        raise SessionImportError("history: needs a start (give --start or --sessions)")
    past: list[CarVisit] = []
    if history is not None:
        report = ImportReport(str(history))
        rows = read_sessions(
            history, format=format, columns=columns, timezone=tz_name, errors=errors,
            report=report,
        )  # fmt: skip
        if rows:
            day = start.astimezone(station.site.tz).date()
            past = place_sessions(
                rows, station, end=start, align_to=history_align_to(rows, station, day),
                wants="delivered", stated=False, report=report,
            )  # fmt: skip
            past = [v for v in past if v.departure <= start]
        reports.append(report)
    return SimulationSessions(start, visits, past, reports)


def _as_visit(s: ImportedSession) -> CarVisit:
    return CarVisit("", 0, s.arrival, s.departure, s.energy_kwh, "", 1.0, 1.0, 0.0, False, "")


def first_local_midnight(visits: Sequence[CarVisit], station: Station) -> datetime:
    """Local midnight (as UTC) of the day of the first arrival: where a run of them starts."""
    if not visits:
        raise SessionImportError("no sessions to start from")
    first = min(v.arrival for v in visits).astimezone(station.site.tz)
    day = datetime.combine(first.date(), datetime.min.time(), tzinfo=station.site.tz)
    return day.astimezone(UTC)


def preload_history(store: Any, station: Station, visits: Iterable[CarVisit]) -> int:
    """Write visits as closed transactions (energy = what each car wanted) into ``store``,
    the history the controller learns expected cars and defaults from. Returns the count."""
    from megastation.store import records

    register: dict[tuple[str, int], float] = {}
    txs = []
    for v in sorted(visits, key=lambda v: v.arrival):
        if station.charger(v.charger_id) is None:
            continue
        conn = (v.charger_id, v.connector_id)
        wh = register.get(conn, 0.0)
        register[conn] = wh + 1000.0 * v.energy_wanted_kwh
        txs.append(
            records.ClosedTransaction(
                v.charger_id, v.connector_id, v.id_token, v.arrival, round(wh, 1), v.departure,
                round(register[conn], 1), "EVDisconnected",
            )
        )  # fmt: skip
    # one executemany, not a start and a stop per visit (~17,000 visits late in a year)
    return records.insert_closed_transactions(store, txs)


__all__ = [
    "CAR_DEFAULTS",
    "FORMATS",
    "GENERIC_COLUMNS",
    "CarDefaults",
    "ImportReport",
    "ImportWarning",
    "ImportedSession",
    "SessionImport",
    "SessionImportError",
    "detect_format",
    "first_local_midnight",
    "history_align_to",
    "load_sessions",
    "parse_acn_json",
    "parse_columns",
    "parse_export_csv",
    "parse_generic_csv",
    "place_sessions",
    "preload_history",
    "read_acn_json",
    "read_export_csv",
    "read_generic_csv",
    "read_sessions",
    "rebase",
    "sessions_for_simulation",
]
