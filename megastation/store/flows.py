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
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from megastation.core.accounting import step_hours
from megastation.store import Store, iso, time_range
from megastation.store.records import _tx

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
    d = asdict(step)
    return (iso(step.ts), float(step.step_s), *[d[f] for f in FLOW_FIELDS])


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
