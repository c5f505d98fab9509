"""Bad input at the CLI: one clear line naming what is wrong, exit code 1, no traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from ocpp.v16 import call as call16

from megastation.cli import main
from megastation.store import records
from tests.ocpp_clients import connect_charger


def _run(*args: str, env: dict | None = None):
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--db", "/nonexistent/dir/x.db", "status"), "--db /nonexistent/dir/x.db"),
        (("export", "sessions", "-o", "s.xlsx"), "unknown file type '.xlsx'"),
        (("export", "sessions", "--from", "yesterday", "-o", "s.csv"), "--from"),
        (("limit", "--grid-kw", "nan"), "--grid-kw"),
        (("limit", "--grid-kw", "inf"), "--grid-kw"),
        (("limit", "--grid-kw", "250", "--until", "2020-01-01T00:00"), "--until"),
        (("limit", "--grid-kw", "-5"), "--grid-kw"),
        (("limit", "--grid-kw", "5000"), "above the connection's 400 kW"),  # needs --force
        (("session", "1", "--energy-kwh", "-3"), "no session 1"),  # an empty store
    ],
)
def test_bad_input_is_named(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = _run(*args)
    assert result.exit_code != 0
    assert message in result.output


def test_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite")
    result = _run("--db", str(bad), "sessions")
    assert result.exit_code == 1
    assert f"--db {bad}: file is not a database" in result.output


def test_export_creates_the_folder_and_writes_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    db = str(tmp_path / "m.db")
    out = tmp_path / "new" / "folder"
    assert _run("--db", db, "export", "sessions", "-o", str(out / "s.csv")).exit_code == 0
    assert _run("--db", db, "export", "meter-values", "-o", str(out / "m.parquet")).exit_code == 0
    assert (out / "s.csv").read_text().startswith("transaction_id,")
    assert "soc_percent" in pd.read_parquet(out / "m.parquet").columns


async def test_meter_values_export_has_soc_from_the_ev_and_phase_current(central, store, tmp_path):
    records.set_id_token(store, "TAG-1")
    async with connect_charger(central.port, "GJDG-AC-01", "1.6") as cp:
        await cp.call(
            call16.BootNotification(charge_point_model="EV7", charge_point_vendor="Everon")
        )
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="TAG-1", meter_start=0, timestamp="2026-06-15T00:00:00Z"
            )
        )
        sampled = [
            {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "55", "measurand": "SoC", "location": "EV", "unit": "Percent"},
        ] + [
            {"value": str(a), "measurand": "Current.Import", "phase": ph, "unit": "A"}
            for a, ph in ((16, "L1"), (15.5, "L2"), (10, "L3"))
        ]
        await cp.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=start.transaction_id,
                meter_value=[{"timestamp": "2026-06-15T00:05:00Z", "sampled_value": sampled}],
            )
        )
    out = tmp_path / "m.csv"
    result = _run("--db", store.path, "export", "meter-values", "-o", str(out))
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.read_csv(out)
    assert rows["soc_percent"].tolist() == [55]
    assert rows["current_a"].tolist() == [16]  # the highest phase, not 41.5 A summed


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--hours", "0"), "--hours"),
        (("--speed", "0"), "--speed"),
        (("--start-hour", "25"), "--start-hour"),
        (("--weather", "nope"), "--weather"),
    ],
)
def test_demo_refuses_impossible_options(tmp_path, args, option):
    result = _run("demo", "--out", str(tmp_path / "d"), *args)
    assert result.exit_code == 2 and option in result.output
    assert not (tmp_path / "d").exists()
