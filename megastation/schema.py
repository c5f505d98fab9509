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
