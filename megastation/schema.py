"""Schema migrations, one registered function each, applied in name order.

Name prefixes group them by owner so that parts of the system can grow their own
tables without clashing: ``00xx`` core, ``01xx`` OCPP central system, ``02xx``
forecasts, ``03xx`` dispatch and control loop, ``04xx`` simulator. Never edit a
migration that has shipped: add a new one.
"""

from __future__ import annotations

import sqlite_utils

from megastation.store import migration


@migration("0001_core_settings")
def _settings(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )


@migration("0200_pv_forecasts")
def _pv_forecasts(db: sqlite_utils.Database) -> None:
    """Every issued PV forecast (forecasts.issued), series as JSON arrays in kW."""
    db.execute(
        "CREATE TABLE pv_forecasts ("
        " id INTEGER PRIMARY KEY,"
        " issued_at TEXT NOT NULL,"  # UTC ISO 8601
        " start TEXT NOT NULL,"  # first step start, UTC
        " step_min INTEGER NOT NULL,"
        " n_steps INTEGER NOT NULL,"
        " source TEXT NOT NULL,"  # clearsky | weather | ...
        " k_meas REAL,"  # measured clear-sky index used by the nowcast
        " p50_kw TEXT NOT NULL, p10_kw TEXT NOT NULL, p90_kw TEXT NOT NULL,"
        " clear_kw TEXT NOT NULL, raw_kw TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX pv_forecasts_issued_at ON pv_forecasts (issued_at)")
