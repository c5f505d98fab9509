"""The store: migrations recorded once, WAL mode, settings round-trip."""

from __future__ import annotations

from megastation.store import MIGRATIONS, Store


def test_migrations_apply_once_and_are_recorded(db_path, clock):
    first = Store(db_path, clock)
    assert first.applied_migrations() == sorted(MIGRATIONS)
    first.close()
    again = Store(db_path, clock)
    assert again.migrate() == []
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_settings_survive_a_reopen(db_path, clock):
    s = Store(db_path, clock)
    s.set_setting("grid_limit_kw", {"kw": 250.0})
    s.close()
    assert Store(db_path, clock).get_setting("grid_limit_kw") == {"kw": 250.0}
