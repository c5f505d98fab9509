"""Schema migrations, one registered function each, applied in name order.

Name prefixes group them by owner so that parts of the system can grow their own
tables without clashing: ``00xx`` core, ``01xx`` OCPP central system, ``02xx``
forecasts, ``03xx`` dispatch and control loop, ``04xx`` simulator, ``05xx`` web console and API, ``06xx`` site devices. Never edit a
migration that has shipped: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: dict[str, Migration] = {}


def migration(name: str) -> Callable[[Migration], Migration]:
    """Register a schema migration; ``name`` sorts it (``0100_ocpp_core``)."""

    def register(fn: Migration) -> Migration:
        if name in MIGRATIONS:
            raise ValueError(f"migration {name!r} registered twice")
        MIGRATIONS[name] = fn
        return fn

    return register


@migration("0001_core_settings")
def _settings(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )


# --------------------------------------------------------------------------- 01xx OCPP central system


@migration("0100_ocpp_core")
def _ocpp_core(db: sqlite3.Connection) -> None:
    """Chargers, connectors, id tokens, transactions, meter samples, needs, commands, raw log."""
    for statement in _OCPP_CORE_SQL.split(";"):
        if statement.strip():
            db.execute(statement)


_OCPP_CORE_SQL = """
        CREATE TABLE chargers (
            id TEXT PRIMARY KEY,
            registration TEXT NOT NULL DEFAULT 'Accepted',  -- Accepted | Pending | Rejected
            source TEXT NOT NULL DEFAULT 'config',           -- config | auto
            password_hash TEXT,
            ocpp_version TEXT,                               -- negotiated: 1.6 | 2.0.1
            vendor TEXT, model TEXT, serial_number TEXT, firmware_version TEXT,
            boot_reason TEXT,
            boot_payload TEXT,
            registered_at TEXT NOT NULL,
            last_boot_at TEXT,
            last_seen_at TEXT,
            connected INTEGER NOT NULL DEFAULT 0,
            connected_at TEXT,
            disconnected_at TEXT
        );
        CREATE TABLE connectors (
            charger_id TEXT NOT NULL REFERENCES chargers(id),
            connector_id INTEGER NOT NULL,                   -- 1.6 connectorId / 2.0.1 evseId
            status TEXT NOT NULL,
            error_code TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (charger_id, connector_id)
        );
        CREATE TABLE connector_status_history (
            id INTEGER PRIMARY KEY,
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            status TEXT NOT NULL,
            error_code TEXT,
            info TEXT,
            ts TEXT NOT NULL,                                -- charger's timestamp
            received_at TEXT NOT NULL
        );
        CREATE INDEX ix_status_history ON connector_status_history (charger_id, connector_id, ts);
        CREATE TABLE id_tokens (
            id_token TEXT PRIMARY KEY,
            status TEXT NOT NULL,                            -- Accepted | Blocked | Expired | Invalid
            expiry TEXT,
            parent_id_token TEXT,
            note TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE transactions (
            id INTEGER PRIMARY KEY,                          -- internal id = 1.6 transactionId
            charger_id TEXT NOT NULL,
            ocpp_tx_id TEXT NOT NULL,                        -- 1.6: str(id), 2.0.1: transactionId
            ocpp_version TEXT NOT NULL,
            connector_id INTEGER,
            id_token TEXT,
            auth_status TEXT,
            start_time TEXT NOT NULL,
            stop_time TEXT,
            meter_start_wh REAL,
            meter_stop_wh REAL,
            energy_kwh REAL,
            stop_reason TEXT,
            state TEXT NOT NULL DEFAULT 'open',              -- open | closed
            last_seq_no INTEGER,
            offline INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (charger_id, ocpp_tx_id)
        );
        CREATE INDEX ix_tx_open ON transactions (state, charger_id, connector_id);
        CREATE INDEX ix_tx_start ON transactions (start_time);
        CREATE TABLE transaction_events (
            charger_id TEXT NOT NULL,
            ocpp_tx_id TEXT NOT NULL,
            seq_no INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            trigger_reason TEXT,
            ts TEXT NOT NULL,
            offline INTEGER NOT NULL DEFAULT 0,
            received_at TEXT NOT NULL,
            PRIMARY KEY (charger_id, ocpp_tx_id, seq_no)
        );
        CREATE TABLE meter_samples (
            id INTEGER PRIMARY KEY,
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            transaction_id INTEGER,                          -- internal transactions.id
            ts TEXT NOT NULL,
            measurand TEXT NOT NULL,
            phase TEXT NOT NULL DEFAULT '',
            location TEXT NOT NULL DEFAULT '',
            context TEXT NOT NULL DEFAULT '',
            value REAL NOT NULL,
            unit TEXT NOT NULL,                              -- normalised: kW, kWh, kvarh, A, V, Percent, ...
            received_at TEXT NOT NULL
        );
        CREATE UNIQUE INDEX ux_meter_samples
            ON meter_samples (charger_id, connector_id, ts, measurand, phase, location, context);
        CREATE INDEX ix_meter_tx ON meter_samples (transaction_id, measurand, ts);
        CREATE INDEX ix_meter_ts ON meter_samples (ts);
        CREATE TABLE charging_needs (
            id INTEGER PRIMARY KEY,
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,                   -- evseId
            transaction_id INTEGER,
            requested_energy_kwh REAL,
            departure_time TEXT,
            max_power_kw REAL,
            energy_transfer_mode TEXT,
            payload TEXT NOT NULL,
            received_at TEXT NOT NULL
        );
        CREATE INDEX ix_needs ON charging_needs (charger_id, connector_id, received_at);
        CREATE TABLE commands (
            id INTEGER PRIMARY KEY,
            charger_id TEXT NOT NULL,
            action TEXT NOT NULL,
            payload TEXT NOT NULL,                           -- snake_case, for the charger's version
            source TEXT NOT NULL DEFAULT 'operator',
            status TEXT NOT NULL DEFAULT 'pending',          -- pending | sent | accepted | rejected | timeout | offline | error
            response TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX ix_commands_pending ON commands (status, id);
        CREATE TABLE message_log (
            id INTEGER PRIMARY KEY,
            charger_id TEXT,
            direction TEXT NOT NULL,                         -- in | out
            message_type INTEGER,
            unique_id TEXT,
            action TEXT,
            payload TEXT NOT NULL,
            ts TEXT NOT NULL
        );
        CREATE INDEX ix_message_log_ts ON message_log (ts);
"""


# --------------------------------------------------------------------------- 03xx control loop


@migration("0300_control_loop")
def _control_loop(db: sqlite3.Connection) -> None:
    """Plans, set points sent, profiles active on chargers, charger capabilities, overrides."""
    for statement in _CONTROL_SQL.split(";"):
        if statement.strip():
            db.execute(statement)


_CONTROL_SQL = """
        CREATE TABLE control_plans (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            reason TEXT NOT NULL,                            -- interval | event names | guard
            policy TEXT NOT NULL,
            grid_limit_kw REAL NOT NULL,
            status TEXT NOT NULL,                            -- solver status
            solve_ms REAL, cycle_ms REAL,
            grid_import_kw REAL,                             -- measured at planning time
            pv_kw REAL, battery_soc_frac REAL, battery_kw REAL,
            inputs TEXT NOT NULL,                            -- JSON summary of the problem
            first_step TEXT NOT NULL,                        -- JSON set points of step 0
            horizon TEXT NOT NULL                            -- JSON per-step plan
        );
        CREATE INDEX ix_control_plans_time ON control_plans (created_at);
        CREATE TABLE control_setpoints (
            id INTEGER PRIMARY KEY,
            plan_id INTEGER,
            charger_id TEXT,                                 -- NULL for the battery
            connector_id INTEGER,
            transaction_id INTEGER,
            target TEXT NOT NULL,                            -- tx | max | tx_default | battery | clear
            power_kw REAL,                                   -- first-step set point
            payload TEXT,                                    -- what was sent (JSON)
            status TEXT NOT NULL,                            -- accepted | rejected | timeout | offline | error | deadband
            detail TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX ix_control_setpoints_time ON control_setpoints (created_at);
        CREATE TABLE control_profiles_active (
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,                   -- 0 for max / default
            purpose TEXT NOT NULL,                           -- tx | max | tx_default
            transaction_id INTEGER,
            schedule TEXT NOT NULL,                          -- JSON KwSchedule the charger follows
            payload TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (charger_id, connector_id, purpose)
        );
        CREATE TABLE control_chargers (
            charger_id TEXT PRIMARY KEY,
            config_keys TEXT,                                -- JSON, read once per boot
            controllable INTEGER NOT NULL DEFAULT 1,
            reason TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE control_session_overrides (
            transaction_id INTEGER PRIMARY KEY,
            departure TEXT,
            energy_kwh REAL,
            set_at TEXT NOT NULL
        )
"""


# --------------------------------------------------------------------------- 04xx simulator / exports


@migration("0400_energy_flows")
def _energy_flows(db: sqlite3.Connection) -> None:
    """Site energy flows per step and connector power per step (see megastation.store.flows)."""
    db.execute(
        """CREATE TABLE energy_flows (
            ts TEXT PRIMARY KEY,                 -- step start, UTC
            step_s REAL NOT NULL,                -- step length [s]
            pv_kw REAL NOT NULL, curtailed_kw REAL NOT NULL DEFAULT 0,
            ev_kw REAL NOT NULL, base_load_kw REAL NOT NULL DEFAULT 0,
            battery_charge_kw REAL NOT NULL, battery_discharge_kw REAL NOT NULL,
            grid_import_kw REAL NOT NULL, grid_export_kw REAL NOT NULL,
            soc_frac REAL, grid_limit_kw REAL,
            pv_forecast_kw REAL, pv_p10_kw REAL, pv_p90_kw REAL
        )"""
    )
    db.execute(
        """CREATE TABLE connector_flows (
            ts TEXT NOT NULL,                    -- step start, UTC
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            transaction_id INTEGER,              -- transactions.id, when the session is stored
            session_key TEXT,                    -- simulator's own key otherwise
            power_kw REAL NOT NULL,              -- mean power over the step
            PRIMARY KEY (ts, charger_id, connector_id)
        )"""
    )
    db.execute("CREATE INDEX ix_connector_flows_tx ON connector_flows (transaction_id)")
    db.execute(
        """CREATE TABLE sim_sessions (
            id INTEGER PRIMARY KEY,
            run TEXT NOT NULL,                   -- policy / run name
            session_key TEXT NOT NULL,
            transaction_id INTEGER,              -- transactions.id when stored over OCPP
            charger_id TEXT NOT NULL,
            connector_id INTEGER NOT NULL,
            car_model TEXT,
            arrival TEXT NOT NULL, departure TEXT NOT NULL,
            energy_wanted_kwh REAL NOT NULL,
            energy_kwh REAL NOT NULL,            -- delivered
            unmet_kwh REAL NOT NULL,
            UNIQUE (run, session_key)
        )"""
    )
    db.execute(
        """CREATE TABLE sim_daily_reference (
            day TEXT NOT NULL,                   -- local date
            reference TEXT NOT NULL,             -- perfect_foresight | uncontrolled | ...
            energy_kwh REAL, unmet_kwh REAL, renewable_frac REAL,
            grid_import_kwh REAL, peak_import_kw REAL, cost_krw REAL,
            PRIMARY KEY (day, reference)
        )"""
    )


@migration("0200_pv_forecasts")
def _pv_forecasts(db: sqlite3.Connection) -> None:
    """Every issued PV forecast (megastation.store.forecasts), series as JSON arrays in kW."""
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


@migration("0201_weather_forecasts")
def _weather_forecasts(db: sqlite3.Connection) -> None:
    """Weather forecasts fetched from a provider (megastation.control.weather_feed), as issued."""
    db.execute(
        "CREATE TABLE weather_forecasts ("
        " id INTEGER PRIMARY KEY,"
        " fetched_at TEXT NOT NULL,"  # UTC ISO 8601
        " start TEXT NOT NULL,"  # first interval start, UTC
        " step_min INTEGER NOT NULL,"
        " n_steps INTEGER NOT NULL,"
        " source TEXT NOT NULL,"  # provider URL without the query
        " data TEXT NOT NULL)"  # {"ghi": [...], "temp_air": [...], ...} canonical columns
    )
    db.execute("CREATE INDEX weather_forecasts_fetched_at ON weather_forecasts (fetched_at)")


@migration("0202_weather_feed_status")
def _weather_feed_status(db: sqlite3.Connection) -> None:
    """The live weather feed's latest fetch (megastation.store.forecasts.record_feed_status)."""
    db.execute(
        "CREATE TABLE weather_feed_status ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"  # one row: the station's feed
        " provider TEXT NOT NULL,"  # URL fetched
        " attempted_at TEXT NOT NULL,"  # UTC, the latest fetch
        " ok INTEGER NOT NULL,"  # 1: that fetch gave a stored forecast
        " error TEXT,"  # why it failed; NULL when ok
        " failing_since TEXT,"  # UTC, first failure of the current run of failures
        " last_ok_at TEXT,"  # UTC, the latest good fetch (also one from before a restart)
        " fetches INTEGER NOT NULL, failures INTEGER NOT NULL,"  # since the feed started
        " source TEXT NOT NULL)"  # what the PV forecast uses: weather | clearsky-index | clearsky
    )


@migration("0101_command_expiry")
def _command_expiry(db: sqlite3.Connection) -> None:
    """Queued operator commands expire (status 'expired') when no server sends them in time."""
    db.execute("ALTER TABLE commands ADD COLUMN expires_at TEXT")  # UTC ISO; NULL = never


@migration("0105_auto_charger_ratings")
def _auto_charger_ratings(db: sqlite3.Connection) -> None:
    """What an operator says of an auto-registered charger on accepting it (issue #13)."""
    db.execute("ALTER TABLE chargers ADD COLUMN kind TEXT")  # AC | DC; NULL = AC
    db.execute("ALTER TABLE chargers ADD COLUMN max_power_kw REAL")  # NULL: the kind's default
    db.execute("ALTER TABLE chargers ADD COLUMN connectors INTEGER")  # NULL: the kind's default


@migration("0106_closed_sessions_index")
def _closed_sessions_index(db: sqlite3.Connection) -> None:
    """The closed transactions newest first, for records.closed_sessions (the controller's
    history, re-read every relearn): without it every read sorted all of them (#15). Ties
    in start time come in charger, connector, id order: the order that sort gave them."""
    db.execute(
        "CREATE INDEX ix_tx_closed_start ON transactions (start_time DESC, charger_id, "
        "connector_id) WHERE state = 'closed'"
    )


# --------------------------------------------------------------------------- 06xx site devices


@migration("0600_device_status")
def _device_status(db: sqlite3.Connection) -> None:
    """The latest state of each site device (see megastation.store.devices)."""
    db.execute(
        """CREATE TABLE device_status (
            name TEXT PRIMARY KEY,               -- [[devices]] name, or battery/pv/meter
            kind TEXT NOT NULL,                  -- battery | pv | meter
            address TEXT NOT NULL,               -- host:port/unit, or 'simulated' / 'none'
            model TEXT NOT NULL,                 -- sunspec | profile | registers | simulated
            updated_at TEXT NOT NULL,            -- UTC, the latest poll
            reading_at TEXT,                     -- UTC, the latest good reading
            reading TEXT NOT NULL DEFAULT '{}',  -- JSON: that reading (units in the keys)
            fault TEXT,                          -- why it cannot be used; NULL = healthy
            fault_since TEXT                     -- UTC
        )"""
    )


# --------------------------------------------------------------------------- 05xx web console and API


@migration("0500_web_accounts")
def _web_accounts(db: sqlite3.Connection) -> None:
    """Console/API accounts, login sessions, script tokens and the operator action audit log."""
    for statement in _WEB_SQL.split(";"):
        if statement.strip():
            db.execute(statement)


_WEB_SQL = """
        CREATE TABLE web_users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
            password_hash TEXT NOT NULL,                     -- scrypt, as chargers' (ocpp_central.auth)
            created_at TEXT NOT NULL
        );
        CREATE TABLE web_sessions (
            token_hash TEXT PRIMARY KEY,                     -- sha256 of the cookie value
            user_name TEXT NOT NULL REFERENCES web_users(name) ON DELETE CASCADE,
            csrf_token TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL                         -- UTC, wall time
        );
        CREATE TABLE web_api_tokens (
            token_hash TEXT PRIMARY KEY,                     -- sha256 of the bearer token
            user_name TEXT NOT NULL REFERENCES web_users(name) ON DELETE CASCADE,
            label TEXT,
            created_at TEXT NOT NULL,
            last_used_at TEXT
        );
        CREATE TABLE web_audit (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,                              -- UTC, station clock
            user_name TEXT NOT NULL,
            via TEXT NOT NULL,                               -- console | token
            action TEXT NOT NULL,                            -- grid_limit | policy | session | ...
            params TEXT NOT NULL,                            -- JSON
            outcome TEXT NOT NULL,                           -- ok | refused | queued
            detail TEXT
        );
        CREATE INDEX web_audit_time ON web_audit (time)
"""
