"""The energy-flow record: one row per step of the whole site, and per connector.

Table ``energy_flows`` (migration ``0400_energy_flows``) holds, for every step, mean
powers over the step [kW] -- the *energy-flow frame* that :mod:`megastation.core.accounting`
allocates and :mod:`megastation.reports.plots` draws:

========================  ===================================================
``ts``                    step start, UTC (ISO text, primary key)
``step_s``                step length [s]
``pv_kw``                 PV power used on site or exported (after curtailment)
``curtailed_kw``          PV available but not taken
``ev_kw``                 all charging power
``base_load_kw``          other site load
``battery_charge_kw``     into the battery (AC side)
``battery_discharge_kw``  out of the battery (AC side)
``grid_import_kw``        bought
``grid_export_kw``        sold
``soc_frac``              battery state of charge at the step start
``grid_limit_kw``         the import limit that applied
``pv_forecast_kw``        P50 PV the controller was given for the step (NULL if none)
``pv_p10_kw``/``pv_p90_kw``  its band (NULL if none)
========================  ===================================================

Table ``connector_flows`` keeps each connector's mean power per step with the
transaction it belonged to, so per-session energy can be attributed by source
(:func:`megastation.core.accounting.attribute_sessions`) without re-deriving power from
meter registers.

Writes are upserts on the step start, so re-recording a step replaces it.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from megastation.core.accounting import step_hours
from megastation.store import Store, iso, time_range
from megastation.store.records import _state, _tx

log = logging.getLogger(__name__)

FLOW_FIELDS = (
    "pv_kw",
    "curtailed_kw",
    "ev_kw",
    "base_load_kw",
    "battery_charge_kw",
    "battery_discharge_kw",
    "grid_import_kw",
    "grid_export_kw",
    "soc_frac",
    "grid_limit_kw",
    "pv_forecast_kw",
    "pv_p10_kw",
    "pv_p90_kw",
)
_OPTIONAL = ("pv_forecast_kw", "pv_p10_kw", "pv_p90_kw")


@dataclass(frozen=True)
class FlowStep:
    """One step of the site's energy flows (mean kW over ``step_s`` from ``ts``)."""

    ts: datetime  # step start, tz-aware
    step_s: float  # step length [s]
    pv_kw: float
    ev_kw: float
    battery_charge_kw: float
    battery_discharge_kw: float
    grid_import_kw: float
    grid_export_kw: float
    base_load_kw: float = 0.0
    curtailed_kw: float = 0.0
    soc_frac: float | None = None
    grid_limit_kw: float | None = None
    pv_forecast_kw: float | None = None
    pv_p10_kw: float | None = None
    pv_p90_kw: float | None = None


@dataclass(frozen=True)
class ConnectorStep:
    """One connector's mean power over one step."""

    ts: datetime  # step start
    charger_id: str
    connector_id: int
    power_kw: float
    transaction_id: int | None = None  # internal transactions.id (None: no session)
    session_key: str | None = None  # a stable key when there is no transaction id


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except TypeError:
        return True  # not a number (never the case for flow fields)


def _flow_row(step: FlowStep) -> tuple:
    # the fields themselves (dataclasses.asdict deep-copies every value: 20 us a step)
    return (iso(step.ts), float(step.step_s), *[getattr(step, f) for f in FLOW_FIELDS])


def record_flows(store: Store, steps: FlowStep | Iterable[FlowStep] | pd.DataFrame) -> int:
    """Store site flow steps (a :class:`FlowStep`, several, or a flow frame); return the count.

    A frame is indexed by step start (tz-aware) with the :data:`FLOW_FIELDS` columns it
    has (missing optional ones are NULL) and a ``step_s`` column or a regular index.
    """
    if isinstance(steps, FlowStep):
        steps = [steps]
    if isinstance(steps, pd.DataFrame):
        rows = list(_frame_rows(steps))
    else:
        rows = [_flow_row(s) for s in steps]
    good = [r for r in rows if all(v is None or _finite(v) for v in r[1:])]
    if len(good) < len(rows):  # never store a non-finite flow (it would poison the peak)
        log.warning(
            "energy flows: %d step(s) with non-finite values not stored", len(rows) - len(good)
        )
        rows = good
    if not rows:
        return 0
    cols = ", ".join(("ts", "step_s", *FLOW_FIELDS))
    marks = ", ".join("?" * (2 + len(FLOW_FIELDS)))
    with _tx(store):  # part of an open records.group_commit, if any
        store.conn.executemany(
            f"INSERT OR REPLACE INTO energy_flows ({cols}) VALUES ({marks})", rows
        )
        _windows_state(store).written.extend(r[0] for r in rows)
    return len(rows)


def _frame_rows(frame: pd.DataFrame) -> Iterable[tuple]:
    idx = pd.DatetimeIndex(frame.index)
    if idx.tz is None:
        raise ValueError("energy flows: index must be timezone-aware")
    step_s = frame["step_s"].to_numpy(float) if "step_s" in frame else step_hours(idx) * 3600.0
    cols = {}
    for f in FLOW_FIELDS:
        if f in frame:
            cols[f] = frame[f].to_numpy(float)
        elif f in ("soc_frac", "grid_limit_kw", *_OPTIONAL):
            cols[f] = np.full(len(frame), np.nan)
        else:
            cols[f] = np.zeros(len(frame))
    for i, ts in enumerate(idx):
        vals = [None if np.isnan(cols[f][i]) else float(cols[f][i]) for f in FLOW_FIELDS]
        yield (iso(ts.to_pydatetime()), float(step_s[i]), *vals)


def record_connector_flows(store: Store, steps: Iterable[ConnectorStep]) -> int:
    """Store connector power steps; return the count."""
    rows = [
        (
            iso(s.ts),
            s.charger_id,
            int(s.connector_id),
            s.transaction_id,
            s.session_key,
            float(s.power_kw),
        )
        for s in steps
    ]
    if not rows:
        return 0
    with _tx(store):
        store.conn.executemany(
            "INSERT OR REPLACE INTO connector_flows "
            "(ts, charger_id, connector_id, transaction_id, session_key, power_kw) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def _where(start: datetime | None, end: datetime | None) -> tuple[str, list[str]]:
    where, args = time_range("ts", start, end)
    return (" WHERE " + " AND ".join(where)) if where else "", args


def read_flows(
    store: Store, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Site flow steps starting in ``[start, end)`` as the accounting's energy-flow frame.

    Index: step start (UTC, named ``ts``); columns ``step_s`` and :data:`FLOW_FIELDS`
    (NULLs become NaN; an empty frame keeps the columns).
    """
    clause, args = _where(start, end)
    cols = ("ts", "step_s", *FLOW_FIELDS)
    rows = store.conn.execute(
        f"SELECT {', '.join(cols)} FROM energy_flows{clause} ORDER BY ts", args
    ).fetchall()
    frame = pd.DataFrame.from_records(rows, columns=list(cols))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame = frame.set_index("ts")
    return frame.astype(float)


def read_connector_flows(
    store: Store, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Connector power steps in ``[start, end)``: long form, one row per (ts, connector)."""
    clause, args = _where(start, end)
    rows = store.conn.execute(
        "SELECT ts, charger_id, connector_id, transaction_id, session_key, power_kw "
        f"FROM connector_flows{clause} ORDER BY ts, charger_id, connector_id",
        args,
    ).fetchall()
    frame = pd.DataFrame.from_records(
        rows,
        columns=["ts", "charger_id", "connector_id", "transaction_id", "session_key", "power_kw"],
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame


def connector_power_wide(long: pd.DataFrame, index: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """Connector powers as one column per ``charger/connector`` [kW] (for the plots)."""
    if long.empty:
        return pd.DataFrame(index=index if index is not None else pd.DatetimeIndex([], tz="UTC"))
    key = long["charger_id"] + "/" + long["connector_id"].astype(str)
    wide = long.assign(key=key).pivot_table(
        index="ts", columns="key", values="power_kw", aggfunc="sum"
    )
    if index is not None:
        wide = wide.reindex(index)
    return wide.fillna(0.0)


def session_power_wide(long: pd.DataFrame, index: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    """Each session's mean power per step, one column per session [kW].

    Columns are transaction ids (int) where known, else the session key.
    """
    if long.empty:
        return pd.DataFrame(index=index if index is not None else pd.DatetimeIndex([], tz="UTC"))
    sess = (
        long["transaction_id"]
        .astype(object)
        .where(long["transaction_id"].notna(), long["session_key"])
    )
    long = long.assign(session=sess).dropna(subset=["session"])
    # ids as int even when some rows had none (a NaN made .map infer float64)
    long["session"] = pd.Series(
        [int(v) if isinstance(v, float | int | np.integer) else v for v in long["session"]],
        index=long.index,
        dtype=object,
    )
    wide = long.pivot_table(index="ts", columns="session", values="power_kw", aggfunc="sum")
    if index is not None:
        wide = wide.reindex(index)
    return wide.fillna(0.0)


def peak_window_import_kw(
    store: Store, start: datetime, end: datetime, window_s: int
) -> float | None:
    """The highest mean grid import [kW] over a ``window_s`` window (epoch-aligned) of the
    steps recorded in ``[start, end)``; None when there are none. Each window's mean is
    its imported energy over the whole window (a window partly recorded counts as such).
    Steps with a non-finite import (:func:`nonfinite_import_steps`) are left out."""
    return _window_totals(store, start, end, window_s)[0]


def nonfinite_import_steps(store: Store, start: datetime, end: datetime) -> int:
    """How many steps in ``[start, end)`` hold a non-finite grid import (a store written
    before values were checked at the edge may hold Inf)."""
    return _window_totals(store, start, end, _COUNT_WINDOW_S)[1]


# windows of the non-finite count: any length gives the same total; the demand window's
# (control.problem.DEMAND_WINDOW_S) lets the peak's memo serve the count too
_COUNT_WINDOW_S = 900
_WINDOWS_QUERY = (
    "SELECT CAST(strftime('%s', ts) AS INTEGER) / ? AS w, "
    "SUM(CASE WHEN {finite} THEN grid_import_kw * step_s END) / ?, "
    "SUM(CASE WHEN NOT ({finite}) THEN 1 ELSE 0 END) "
    "FROM energy_flows WHERE ts >= ? AND ts < ? GROUP BY w"
)


@dataclass
class _Windows:
    """Per epoch-aligned window of the rows in ``[start, end)``: (imported energy of the
    finite rows / window [kW], None without any; rows with a non-finite import)."""

    end: str
    read: int  # entries of _WindowsState.written taken into account
    rollbacks: int  # records' rollback count then
    data_version: int  # PRAGMA data_version then (another connection's commit changes it)
    sums: dict[int, tuple[float | None, int]] = field(default_factory=dict)
    # windows before ``folded_before`` (not read again since) folded into one (kW, rows)
    folded_before: int = -(2**62)
    folded: tuple[float | None, int] = (None, 0)


@dataclass
class _WindowsState:
    written: list[str] = field(default_factory=list)  # ts of every row record_flows wrote
    memos: dict[tuple[str, int], _Windows] = field(default_factory=dict)  # (start, window_s)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the web and the loop read


_WINDOWS: weakref.WeakKeyDictionary[Store, _WindowsState] = weakref.WeakKeyDictionary()


def forget_windows(store: Store) -> None:
    """Drop the remembered windows of :func:`peak_window_import_kw`: for code that writes
    energy_flows other than through :func:`record_flows` (:mod:`megastation.store.merge`)."""
    st = _windows_state(store)
    with st.lock:
        st.memos.clear()


def _windows_state(store: Store) -> _WindowsState:
    st = _WINDOWS.get(store)
    if st is None:
        st = _WINDOWS[store] = _WindowsState()
    return st


def _window_totals(
    store: Store, start: datetime, end: datetime, window_s: int
) -> tuple[float | None, int]:
    """Over the windows of ``[start, end)`` (see :class:`_Windows`): the highest mean
    import [kW] (None: no finite row) and the rows with a non-finite import. The control
    loop asks on every plan (#15): the windows are remembered and only those that
    :func:`record_flows` wrote to since, and the new ones up to ``end``, are read again;
    anything else (another connection's commit, a rollback, an earlier end) reads them
    afresh. Code that writes energy_flows on this connection other than by
    :func:`record_flows` calls :func:`forget_windows`."""
    st = _windows_state(store)
    with st.lock:
        memo = _read_windows(store, st, iso(start), iso(end), window_s)
        return _combined((memo.folded, *memo.sums.values()))


def _combined(windows: Iterable[tuple[float | None, int]]) -> tuple[float | None, int]:
    """The highest kW (None: none) and the sum of rows of ``(kW, rows)`` pairs."""
    windows = list(windows)
    kw = [w[0] for w in windows if w[0] is not None]
    return (max(kw) if kw else None, sum(w[1] for w in windows))


def _read_windows(store: Store, st: _WindowsState, lo: str, hi: str, window_s: int) -> _Windows:
    """The memo of ``(lo, window_s)`` brought up to ``hi`` (under the lock): the windows
    written to since, and those after its end, are read again; the ones before them are
    folded into one (a later write to a folded window reads all afresh)."""
    version = store.conn.execute("PRAGMA data_version").fetchone()[0]
    rollbacks = _state(store).rollbacks
    memo = st.memos.get((lo, window_s))
    fresh = memo is None or (memo.rollbacks, memo.data_version) != (rollbacks, version)
    if not fresh and hi >= memo.end:
        touched = [t for t in st.written[memo.read :] if lo <= t < memo.end] + [memo.end]
        first = max(lo, iso(_window_start(min(touched), window_s)))
        fresh = _epoch_s(first) // window_s < memo.folded_before
    if fresh or hi < memo.end:
        memo = _Windows(lo, 0, rollbacks, version)  # nothing read yet: all from lo
        if len(st.written) > _MAX_WRITTEN or len(st.memos) >= _MAX_MEMOS:  # start afresh
            st.written.clear()
            st.memos.clear()
        st.memos[(lo, window_s)] = memo
        first = lo
    if first < hi:
        w_first = _epoch_s(first) // window_s  # windows from here on are read again
        old = [w for w in memo.sums if w < w_first]
        memo.folded = _combined((memo.folded, *(memo.sums.pop(w) for w in old)))
        memo.folded_before = max(memo.folded_before, w_first)
        memo.sums.clear()
        rows = store.conn.execute(
            _WINDOWS_QUERY.format(finite=_FINITE_IMPORT), (window_s, window_s, first, hi)
        ).fetchall()
        memo.sums.update((w, (kw, bad)) for w, kw, bad in rows)
    memo.end, memo.read = hi, len(st.written)
    done = min(m.read for m in st.memos.values())  # rows every memo has taken in
    if done > _TRIM_WRITTEN:
        del st.written[:done]
        for m in st.memos.values():
            m.read -= done
    return memo


_MAX_WRITTEN = 100_000  # rows remembered as written (~3 years of 15-minute steps)
_TRIM_WRITTEN = 1_000  # rows every memo has read are dropped past this many
_MAX_MEMOS = 8  # (start, window) pairs remembered (the loop asks for this month's)


def _epoch_s(ts_iso: str) -> int:
    return int(datetime.fromisoformat(ts_iso).timestamp())


def _window_start(ts_iso: str, window_s: int) -> datetime:
    return datetime.fromtimestamp(_epoch_s(ts_iso) // window_s * window_s, UTC)


_FINITE_IMPORT = "grid_import_kw BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"
