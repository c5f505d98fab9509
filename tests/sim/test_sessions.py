"""Real sessions in (megastation.sim.sessions): each format, placement, re-basing, every
bad-file case named by file, row and field, stated needs reaching the controller."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.clock import SimClock
from megastation.core.config import Station, load_station, seeds_dir
from megastation.sim import sessions as ss
from megastation.store import Store, records

GENERIC = """arrival,departure,energy_kwh,requested_energy_kwh,stated_departure,max_power_kw,kind,charger_id,connector_id,id_token
2025-03-03T07:40:00+01:00,2025-03-03T08:10:00+01:00,30.5,40,,150,DC,,,TOKEN-A
2025-03-03T07:50:00+01:00,2025-03-03T17:00:00+01:00,12,,2025-03-03T15:00:00+01:00,,AC,GJDG-AC-01,2,
"""


def _acn_item(**over):
    item = {
        "connectionTime": "Mon, 04 Mar 2019 16:05:00 GMT",  # 08:05 in Los Angeles
        "disconnectTime": "Tue, 05 Mar 2019 01:35:00 GMT",
        "doneChargingTime": "Mon, 04 Mar 2019 18:00:00 GMT",
        "kWhDelivered": 11.2,
        "stationID": "2-39-79-378",
        "spaceID": "CA-496",
        "siteID": "2",
        "timezone": "America/Los_Angeles",
        "userID": 561,
        "userInputs": [
            {
                "kWhRequested": 20.0,
                "requestedDeparture": "Mon, 04 Mar 2019 23:00:00 GMT",
                "minutesAvailable": 415,
                "modifiedAt": "Mon, 04 Mar 2019 16:06:00 GMT",
            }
        ],
    }
    item.update(over)
    return item


@pytest.fixture(scope="module")
def st() -> Station:
    return load_station(seeds_dir() / "gwangju-donggu.toml")


# --------------------------------------------------------------------------- formats


def test_generic_csv_reads_every_column(st):
    rows = ss.parse_generic_csv(GENERIC, source="g.csv", timezone="Europe/Berlin")
    a, b = rows
    assert (a.row, b.row) == (2, 3)
    assert a.arrival == datetime(2025, 3, 3, 6, 40, tzinfo=UTC)
    assert a.energy_kwh == 30.5 and a.requested_energy_kwh == 40 and a.max_power_kw == 150
    assert a.kind == "DC" and a.id_token == "TOKEN-A" and a.charger_id is None
    assert b.charger_id == "GJDG-AC-01" and b.connector_id == 2
    assert b.stated_departure == datetime(2025, 3, 3, 14, 0, tzinfo=UTC)


def test_generic_csv_column_mapping_and_split_date_time():
    text = "Start Date,Start Time,End,kWh,Point\n2025-03-03,07:40,2025-03-03 09:00,7.5,CP-9\n"
    rows = ss.parse_generic_csv(
        text,
        columns=ss.parse_columns(
            "arrival=Start Date+Start Time,departure=End,energy_kwh=kWh,charger_id=Point"
        ),
        timezone="Europe/London",
    )
    assert rows[0].arrival == datetime(2025, 3, 3, 7, 40, tzinfo=UTC)
    assert rows[0].energy_kwh == 7.5 and rows[0].charger_id == "CP-9"


def test_acn_json_reads_the_api_format():
    rows = ss.parse_acn_json(json.dumps({"_items": [_acn_item()], "_meta": {}}), source="a.json")
    (s,) = rows
    assert s.arrival == datetime(2019, 3, 4, 16, 5, tzinfo=UTC)
    assert s.departure == datetime(2019, 3, 5, 1, 35, tzinfo=UTC)
    assert s.energy_kwh == 11.2 and s.requested_energy_kwh == 20.0
    assert s.stated_departure == datetime(2019, 3, 4, 23, 0, tzinfo=UTC)
    assert s.kind == "AC" and s.charger_id == "2-39-79-378"
    assert s.timezone == "America/Los_Angeles"


def test_acn_without_user_inputs_has_no_stated_needs():
    (s,) = ss.parse_acn_json([_acn_item(userInputs=None)])
    assert s.requested_energy_kwh is None and s.stated_departure is None


def test_export_csv_round_trips_a_stores_sessions(tmp_path, st):
    from megastation.reports.sessions import export_sessions

    t0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)
    store = Store(tmp_path / "s.db", SimClock(t0))
    records.register_station_chargers(store, st)
    tx = records.start_transaction(
        store, "GJDG-DC-03", connector_id=1, id_token="T1", auth_status="Accepted",
        meter_start_wh=1000.0, ts=t0,
    )  # fmt: skip
    records.stop_transaction(
        store, "GJDG-DC-03", tx.transaction_id, meter_stop_wh=31000.0,
        ts=t0 + timedelta(minutes=30), reason="EVDisconnected",
    )  # fmt: skip
    records.start_transaction(
        store,
        "GJDG-DC-04",
        connector_id=1,
        id_token="T2",
        auth_status="Accepted",
        meter_start_wh=0.0,
        ts=t0 + timedelta(minutes=5),
    )  # fmt: skip  (still open: skipped with a warning)
    path = tmp_path / "sessions.csv"
    export_sessions(store, path)
    store.close()
    assert ss.detect_format(path) == "export"
    report = ss.ImportReport(str(path))
    (s,) = ss.read_sessions(path, report=report)
    assert s.charger_id == "GJDG-DC-03" and s.connector_id == 1 and s.energy_kwh == 30.0
    assert s.arrival == t0 and s.id_token == "T1"
    assert report.skipped == 1 and "still open" in "\n".join(report.lines())
    (v,) = ss.place_sessions([s], st)
    assert (v.charger_id, v.connector_id, v.arrival) == ("GJDG-DC-03", 1, t0)


def test_format_detection(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"_items": []}))
    (tmp_path / "g.csv").write_text(GENERIC)
    assert ss.detect_format(tmp_path / "a.json") == "acn"
    assert ss.detect_format(tmp_path / "g.csv") == "generic"


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("text", "row", "field"),
    [
        # departure before arrival
        ("arrival,departure,energy_kwh\n2025-01-01T10:00Z,2025-01-01T09:00Z,3\n", 2, "departure"),
        # negative energy (third line)
        (
            "arrival,departure,energy_kwh\n2025-01-01T08:00Z,2025-01-01T09:00Z,3\n"
            "2025-01-01T10:00Z,2025-01-01T11:00Z,-2\n",
            3,
            "energy_kwh",
        ),
        ("arrival,departure,energy_kwh\nyesterday,2025-01-01T09:00Z,3\n", 2, "arrival"),
        (
            "arrival,departure,energy_kwh\n2025-01-01T08:00Z,2025-01-01T09:00Z,lots\n",
            2,
            "energy_kwh",
        ),
        ("arrival,departure,energy_kwh\n2025-01-01T08:00Z,,3\n", 2, "departure"),
        (
            "arrival,departure,energy_kwh,kind\n2025-01-01T08:00Z,2025-01-01T09:00Z,3,XY\n",
            2,
            "kind",
        ),
        (
            "arrival,departure,energy_kwh,max_power_kw\n2025-01-01T08:00Z,2025-01-01T09:00Z,3,0\n",
            2,
            "max_power_kw",
        ),
        (
            "arrival,departure,energy_kwh,connector_id\n2025-01-01T08:00Z,2025-01-01T09:00Z,3,1.5\n",
            2,
            "connector_id",
        ),
        # no offset and no zone given
        ("arrival,departure,energy_kwh\n2025-01-01 08:00,2025-01-01 09:00,3\n", 2, "arrival"),
    ],
)
def test_generic_bad_rows_are_named_by_file_row_and_field(text, row, field):
    with pytest.raises(ss.SessionImportError) as err:
        ss.parse_generic_csv(text, source="bad.csv")
    assert err.value.row == row and err.value.field == field
    assert str(err.value).startswith(f"bad.csv: row {row}: {field}: ")


def test_generic_missing_column_names_it_and_the_mapping():
    with pytest.raises(ss.SessionImportError, match=r"bad.csv: energy_kwh: no column 'kWh'"):
        ss.parse_generic_csv(
            "arrival,departure,energy\n", source="bad.csv", columns={"energy_kwh": "kWh"}
        )
    with pytest.raises(ValueError, match="columns: 'power'"):
        ss.parse_columns("power=P")


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"disconnectTime": None}, "disconnectTime"),
        ({"connectionTime": "not a time"}, "connectionTime"),
        ({"kWhDelivered": -1.0}, "kWhDelivered"),
        ({"disconnectTime": "Mon, 04 Mar 2019 15:00:00 GMT"}, "disconnectTime"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"userInputs": [{"kWhRequested": "x"}]}, "userInputs.kWhRequested"),
    ],
)
def test_acn_bad_items_are_named(over, field):
    items = [_acn_item(), _acn_item(**over)]
    with pytest.raises(ss.SessionImportError) as err:
        ss.parse_acn_json({"_items": items}, source="acn.json")
    assert "acn.json: row 2: " in str(err.value) and field in str(err.value)


def test_acn_not_json_or_not_the_format():
    with pytest.raises(ss.SessionImportError, match="not JSON"):
        ss.parse_acn_json("{", source="x.json")
    with pytest.raises(ss.SessionImportError, match="_items"):
        ss.parse_acn_json({"items": []}, source="x.json")


def test_skip_turns_bad_rows_into_counted_warnings():
    text = (
        "arrival,departure,energy_kwh\n2025-01-01T08:00Z,2025-01-01T09:00Z,3\n"
        "2025-01-01T10:00Z,2025-01-01T09:00Z,3\n2025-01-01T10:00Z,2025-01-01T11:00Z,-1\n"
    )
    report = ss.ImportReport("s.csv")
    rows = ss.parse_generic_csv(text, source="s.csv", errors="skip", report=report)
    assert len(rows) == 1 and report.skipped == 2
    text_out = "\n".join(report.lines())
    assert "s.csv: departure: bad value, row skipped (1 row: 3)" in text_out
    assert "s.csv: energy_kwh: bad value, row skipped (1 row: 4)" in text_out


# --------------------------------------------------------------------------- placement


def _s(row, arrival, minutes, energy=10.0, **kw):
    return ss.ImportedSession(
        source="p.csv",
        row=row,
        arrival=arrival,
        departure=arrival + timedelta(minutes=minutes),
        energy_kwh=energy,
        **kw,
    )


T = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)  # 09:00 in Seoul, a Wednesday


def test_placement_by_charger_id_then_by_kind_with_warnings(st):
    report = ss.ImportReport("p.csv")
    visits = ss.place_sessions(
        [
            _s(2, T, 60, charger_id="GJDG-DC-03", kind="DC"),
            _s(3, T + timedelta(minutes=10), 30, charger_id="GJDG-DC-03", kind="DC"),  # busy
            _s(4, T, 60, charger_id="HPC-9", kind="DC"),  # unknown charger
            _s(5, T, 300, max_power_kw=7.0),  # AC by power
            _s(6, T, 30, energy=60.0),  # 120 kW mean: DC by power
        ],
        st,
        report=report,
    )
    by_row = {v.id_token: v for v in visits}
    assert by_row["IMPORT000002"].charger_id == "GJDG-DC-03"
    assert by_row["IMPORT000003"].charger_id.startswith("GJDG-DC-")
    assert by_row["IMPORT000003"].charger_id != "GJDG-DC-03"
    assert by_row["IMPORT000005"].charger_id.startswith("GJDG-AC-")
    assert by_row["IMPORT000006"].charger_id.startswith("GJDG-DC-")
    w = {w.field + ":" + w.message.split(" ")[0]: w.rows for w in report.warnings.values()}
    assert w["charger_id:two"] == [3]
    assert w["charger_id:no"] == [4]
    # never two cars on one connector at once
    by_conn: dict = {}
    for v in visits:
        by_conn.setdefault((v.charger_id, v.connector_id), []).append(v)
    for vs in by_conn.values():
        vs.sort(key=lambda v: v.arrival)
        assert all(a.departure <= b.arrival for a, b in itertools.pairwise(vs))


def test_station_too_small_and_outside_the_period_are_counted(st):
    report = ss.ImportReport("p.csv")
    cars = [_s(i, T, 120, kind="DC") for i in range(2, 9)]  # 7 DC cars, 4 DC connectors
    late = _s(9, T + timedelta(days=3), 30, kind="DC")
    visits = ss.place_sessions([*cars, late], st, start=T, end=T + timedelta(days=1), report=report)
    assert len(visits) == 4 and report.dropped == 4
    lines = "\n".join(report.lines())
    assert "station too small: all 4 DC connectors busy, dropped (3 rows: 6, 7, 8)" in lines
    assert "arrival: outside the simulated period, dropped (1 row: 9)" in lines


def test_rebase_keeps_weekday_and_wall_clock(st):
    (s,) = ss.parse_acn_json([_acn_item()])  # Monday 08:05 in Los Angeles, stays 9.5 h
    (v,) = ss.place_sessions([s], st, align_to=date(2026, 7, 1))
    local = v.arrival.astimezone(st.site.tz)
    assert local.date() == date(2026, 7, 6) and local.weekday() == 0  # first Monday on/after
    assert (local.hour, local.minute) == (8, 5)
    assert v.departure - v.arrival == timedelta(hours=9, minutes=30)
    # stated departure keeps its offset from the arrival
    assert v.stated_departure - v.arrival == timedelta(hours=6, minutes=55)
    assert v.stated_energy_kwh == 20.0 and not v.sends_charging_needs


def test_wants_and_car_defaults(st):
    (s,) = ss.parse_acn_json([_acn_item()])
    (got,) = ss.place_sessions([s], st)
    (asked,) = ss.place_sessions([s], st, wants="requested")
    (silent,) = ss.place_sessions([s], st, stated=False)
    assert got.energy_wanted_kwh == 11.2 and asked.energy_wanted_kwh == 20.0
    assert silent.stated_departure is None and silent.stated_energy_kwh is None
    d = ss.CAR_DEFAULTS["AC"]
    assert got.battery_kwh == d.battery_kwh
    assert got.soc_arrival_frac == pytest.approx(d.target_soc_frac - 11.2 / d.battery_kwh, abs=1e-4)
    assert got.car_max_power_kw == 7.0  # the station's AC connector
    big = ss.place_sessions([_s(2, T, 600, energy=90.0, kind="AC")], st)[0]
    assert big.battery_kwh > 64.0 and big.soc_arrival_frac == pytest.approx(0.05)


def test_preload_history_and_history_alignment(tmp_path, st):
    (s,) = ss.parse_acn_json([_acn_item()])
    day = date(2026, 7, 1)
    align = ss.history_align_to([s], st, day)
    (v,) = ss.place_sessions([s], st, align_to=align)
    assert v.departure.astimezone(st.site.tz).date() < day
    assert day - v.departure.astimezone(st.site.tz).date() <= timedelta(days=7)
    store = Store(tmp_path / "h.db", SimClock(T))
    records.register_station_chargers(store, st)
    assert ss.preload_history(store, st, [v]) == 1
    (tx,) = records.list_transactions(store)
    assert tx["state"] == "closed" and tx["energy_kwh"] == pytest.approx(11.2)
    store.close()


def _preload_one_by_one(store, st, visits):
    """preload_history as it was: a start and a stop per visit (the rows to match)."""
    register = {}
    with records.group_commit(store):
        for v in sorted(visits, key=lambda v: v.arrival):
            if st.charger(v.charger_id) is None:
                continue
            conn = (v.charger_id, v.connector_id)
            wh = register.get(conn, 0.0)
            tx = records.start_transaction(
                store, v.charger_id, connector_id=v.connector_id, id_token=v.id_token,
                auth_status="Accepted", meter_start_wh=round(wh, 1), ts=v.arrival,
            )  # fmt: skip
            wh += 1000.0 * v.energy_wanted_kwh
            records.stop_transaction(
                store, v.charger_id, tx.transaction_id, meter_stop_wh=round(wh, 1),
                ts=v.departure, reason="EVDisconnected",
            )  # fmt: skip
            register[conn] = wh


def test_preload_history_stores_the_rows_of_a_start_and_stop_per_visit(tmp_path, st):
    """The bulk insert stores exactly the rows the per-visit start and stop stored: ids,
    texts, floats, a replayed start (same connector, time and meterStart), an open stored
    transaction the history closes, samples left without a transaction."""
    from dataclasses import replace

    from megastation.core.fleet import generate_visits

    t0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    visits = generate_visits(st, t0, t0 + timedelta(days=3), 1)
    a = visits[5]
    zero = replace(a, energy_wanted_kwh=0.0)  # before a, same time: a's start replays it
    first = min(visits, key=lambda v: v.arrival)
    elsewhere = replace(a, charger_id="NOT-A-CHARGER")
    history = [elsewhere, zero, *visits[::-1]]  # unsorted, as given

    def rows(method):
        store = Store(tmp_path / f"{method.__name__}.db", SimClock(t0 + timedelta(days=3)))
        records.register_station_chargers(store, st)
        # stored before: an open transaction the history replays, two loose samples
        records.start_transaction(
            store, first.charger_id, connector_id=first.connector_id, id_token="X",
            auth_status="Accepted", meter_start_wh=0.0, ts=first.arrival,
        )  # fmt: skip
        for dt in (timedelta(hours=-1), timedelta(days=2)):
            records.record_meter_values(
                store, a.charger_id, a.connector_id,
                [records.Sample(a.arrival + dt, records.ENERGY_REGISTER, 1.0, "kWh")],
            )  # fmt: skip
        method(store, st, history)
        got = [
            store.conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("transactions", "meter_samples")
        ]
        store.close()
        return got

    new, old = rows(ss.preload_history), rows(_preload_one_by_one)
    # the open one closed by first, a not stored again, zero stored
    assert len(new[0]) == len(visits) and new[0][0][13] == "closed"  # state
    assert len(new[1]) == 2
    assert any(r[3] is not None for r in new[1])  # a sample was claimed
    assert new == old


# --------------------------------------------------------------------------- simulator and CLI


def test_stated_needs_reach_the_controller_and_the_truth_drives_the_car(st, tmp_path):
    """A 1.6 charger gets an override, a 2.0.1 one ChargingNeeds, both with what the
    driver said; the car still leaves at its true departure with what it took."""
    from megastation.sim.simulator import simulate
    from megastation.store.control import session_overrides as read_overrides

    start = datetime(2026, 6, 30, 0, 0, tzinfo=UTC)  # 09:00 Seoul, clear-day weather
    rows = [
        _s(2, start + timedelta(minutes=5), 90, energy=8.0, charger_id="GJDG-AC-01",
           connector_id=1, requested_energy_kwh=15.0,
           stated_departure=start + timedelta(hours=4)),
        _s(3, start + timedelta(minutes=5), 90, energy=8.0, charger_id="GJDG-AC-03",
           connector_id=1, requested_energy_kwh=12.0,
           stated_departure=start + timedelta(hours=3)),
    ]  # fmt: skip
    visits = ss.place_sessions(rows, st)
    r = simulate(
        st,
        start=start,
        hours=2,
        policy="re100",
        weather="clear-day",
        visits=visits,
        db_path=tmp_path / "r.db",
        with_perfect_foresight=False,
    )
    store = Store(tmp_path / "r.db", SimClock(start))
    try:
        ov = list(read_overrides(store).values())
        assert ov == [(start + timedelta(hours=4), 15.0)]
        txs = {t["charger_id"]: t for t in records.list_transactions(store)}
        cn = records.latest_charging_needs(store, txs["GJDG-AC-03"]["id"])
        assert cn.requested_energy_kwh == 12.0
        assert cn.departure_time == start + timedelta(hours=3)
        for t in txs.values():
            assert records.parse_time(t["stop_time"]) == start + timedelta(minutes=95)
            assert t["energy_kwh"] <= 8.0 + 1e-6
    finally:
        store.close()
    assert r.kpis.energy_wanted_kwh == pytest.approx(16.0)


def _cli(tmp_path, *args):
    return CliRunner().invoke(
        main, ["--db", str(tmp_path / "unused.db"), "simulate", *args], catch_exceptions=False
    )


def test_simulate_cli_reads_each_format(tmp_path):
    """Both shipped files (ACN and generic) and an export, a few hours each."""
    acn = seeds_dir() / "sessions" / "workplace-ac.acn.json"
    hwy = seeds_dir() / "sessions" / "highway-dc.csv"
    for path, extra in ((acn, []), (hwy, ["--history", str(hwy)])):
        out = tmp_path / path.stem
        res = _cli(
            tmp_path,
            "--sessions", str(path), "--days", "0.5", "--policy", "uncontrolled",
            "--align-to", "2026-07-01", "--weather", "clear-day", "--out", str(out), *extra,
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "sessions read" in res.output and "uncontrolled" in res.output
    exported = tmp_path / "export.csv"
    exported.write_text(
        "transaction_id,charger_id,connector_id,id_token,start_time_utc,stop_time_utc,energy_kwh,state\n"
        "1,GJDG-DC-01,1,T,2026-06-30T01:00:00+00:00,2026-06-30T01:40:00+00:00,35.0,closed\n"
    )
    res = _cli(
        tmp_path, "--sessions", str(exported), "--days", "0.25", "--start", "2026-06-30T09:00",
        "--policy", "uncontrolled", "--weather", "clear-day", "--out", str(tmp_path / "e"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "1 sessions read, 1 placed" in res.output


def test_simulate_cli_bad_session_file_names_row_and_field(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "arrival,departure,energy_kwh\n2026-06-30T10:00+09:00,2026-06-30T09:00+09:00,3\n"
    )
    res = _cli(tmp_path, "--sessions", str(bad), "--out", str(tmp_path / "o"))
    assert res.exit_code != 0
    assert f"{bad}: row 2: departure:" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()
    res = _cli(
        tmp_path, "--sessions", str(bad), "--columns", "nonsense", "--out", str(tmp_path / "o")
    )
    assert res.exit_code != 0 and "--columns" in res.output
    res = _cli(tmp_path, "--sessions", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"))
    assert res.exit_code != 0 and "none.csv: no such file" in res.output


def test_uncontrolled_battery_in_self_consumption_beside_the_idle_one(st):
    """Same cars at full power; the self-consumption battery imports less, never exports."""
    from megastation.sim.simulator import simulate

    start = datetime(2026, 6, 30, 0, 0, tzinfo=UTC)  # 09:00 Seoul, clear day
    kw = {"start": start, "hours": 6, "weather": "clear-day", "with_perfect_foresight": False}
    idle = simulate(st, policy="uncontrolled-idle", **kw)
    selfc = simulate(st, policy="uncontrolled", **kw)
    assert selfc.kpis.energy_delivered_kwh == pytest.approx(idle.kpis.energy_delivered_kwh)
    assert selfc.kpis.grid_import_kwh < idle.kpis.grid_import_kwh
    f = selfc.flows
    assert (f["battery_charge_kw"] + f["battery_discharge_kw"]).sum() > 0
    assert float((f["battery_discharge_kw"].clip(upper=f["grid_export_kw"])).max()) < 1e-6
    assert float(idle.flows["battery_discharge_kw"].abs().sum()) == 0.0
    assert selfc.battery_export_kwh < 1e-6 and idle.battery_export_kwh == 0.0
