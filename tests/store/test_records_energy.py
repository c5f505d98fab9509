"""The cached energy registers give the same energy as a recomputation from the store."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from megastation.store import records
from tests.conftest import T0


def sample(minute: int, kwh: float) -> records.Sample:
    return records.Sample(T0 + timedelta(minutes=minute), records.ENERGY_REGISTER, kwh, "kWh")


@pytest.mark.parametrize("seed", range(5))
def test_cached_energy_matches_store(store, station, seed: int):
    rng = random.Random(seed)
    records.register_station_chargers(store, station)
    res16 = records.start_transaction(
        store,
        "GJDG-AC-01",
        connector_id=1,
        id_token="T",
        auth_status="Accepted",
        meter_start_wh=1000.0,
        ts=T0,
    )
    res201 = records.transaction_event(
        store,
        "GJDG-AC-03",
        event_type="Started",
        ocpp_tx_id="a",
        seq_no=0,
        ts=T0,
        trigger_reason="Authorized",
        connector_id=1,
    )
    batches = [[sample(m, 1.0 + m * 0.5)] for m in range(1, 40)]
    batches += [b for b in batches if rng.random() < 0.3]  # re-sent
    rng.shuffle(batches)
    for b in batches:
        records.record_meter_values(store, "GJDG-AC-01", 1, b, transaction_id=res16.transaction_id)
        records.record_meter_values(store, "GJDG-AC-03", 1, b)  # linked by time
    cached = [
        records.get_transaction(store, t)["energy_kwh"]
        for t in (res16.transaction_id, res201.transaction_id)
    ]
    records.forget_caches(store)
    for t in (res16.transaction_id, res201.transaction_id):
        records._update_energy(store, t)
    fresh = [
        records.get_transaction(store, t)["energy_kwh"]
        for t in (res16.transaction_id, res201.transaction_id)
    ]
    assert cached == pytest.approx(fresh)
    assert cached[0] == pytest.approx(1.0 + 39 * 0.5 - 1.0)
    assert cached[1] == pytest.approx(39 * 0.5 - 0.5)


def test_closed_transactions_in_any_order_are_the_rows_of_a_start_and_stop_each(tmp_path, station):
    """insert_closed_transactions on unsorted starts: the same rows as start_transaction
    then stop_transaction per session (ids, energy, which loose samples each claims)."""
    from megastation.core.clock import SimClock
    from megastation.store import Store

    h = timedelta(hours=1)
    txs = [
        records.ClosedTransaction("GJDG-AC-01", 1, "A", T0 + 5 * h, 0.0, T0 + 6 * h, 900.0, None),
        records.ClosedTransaction("GJDG-AC-01", 1, "B", T0 + 2 * h, 0.0, T0 + 3 * h, 500.5, "X"),
        records.ClosedTransaction("GJDG-AC-01", 2, "C", T0 + 1 * h, 10.0, T0 + 4 * h, 9.0, "Y"),
        records.ClosedTransaction("GJDG-AC-01", 1, "D", T0 + 1 * h, 0.0, T0 + 2 * h, 70.0, "Z"),
    ]

    def rows(name, write):
        store = Store(tmp_path / f"{name}.db", SimClock(T0 + 10 * h))
        records.register_station_chargers(store, station)
        for minute in (30, 90, 150, 330, 400):  # samples without a transaction
            for connector in (1, 2):
                records.record_meter_values(store, "GJDG-AC-01", connector, [sample(minute, 1.0)])
        write(store)
        got = [
            store.conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("transactions", "meter_samples")
        ]
        store.close()
        return got

    def one_by_one(store):
        for t in txs:
            tx = records.start_transaction(
                store, t.charger_id, connector_id=t.connector_id, id_token=t.id_token,
                auth_status="Accepted", meter_start_wh=t.meter_start_wh, ts=t.start,
            )  # fmt: skip
            records.stop_transaction(
                store, t.charger_id, tx.transaction_id, meter_stop_wh=t.meter_stop_wh,
                ts=t.stop, reason=t.reason,
            )  # fmt: skip

    new = rows("bulk", lambda store: records.insert_closed_transactions(store, txs))
    assert new == rows("one_by_one", one_by_one)
    claimed = [r[3] for r in new[1]]
    assert {1, 2, 3, 4} <= set(claimed) and None in claimed
    assert [r[11] for r in new[0]] == [0.9, 0.5005, 0, 0.07]  # energy_kwh (C: meter went back)


@pytest.mark.parametrize("seed", range(20))
def test_closed_sessions_read_in_the_order_the_sort_gave(tmp_path, seed: int):
    """records.closed_sessions walks the partial index ix_tx_closed_start: the same rows
    in the same order as the query before it, which sorted the closed transactions found
    through ix_tx_open (ties in start time, many here, in charger, connector, id order),
    for every limit."""
    from megastation.core.clock import SimClock
    from megastation.store import Store

    rng = random.Random(seed)
    store = Store(tmp_path / "t.db", SimClock(T0))
    store.conn.execute("PRAGMA foreign_keys=OFF")  # no chargers needed for this
    n = rng.randint(20, 300)
    with store.conn:
        for i in range(n):
            start = T0 + timedelta(minutes=rng.randint(0, n // 4))  # ties
            closed = rng.random() < 0.8
            store.conn.execute(
                "INSERT INTO transactions (charger_id, ocpp_tx_id, ocpp_version, connector_id, "
                "start_time, stop_time, energy_kwh, state, created_at, updated_at) "
                "VALUES (?, ?, '1.6', ?, ?, ?, ?, ?, 'x', 'x')",
                (
                    rng.choice("DCBA"), str(i), rng.choice([1, 2, None]), start.isoformat(),
                    (start + timedelta(hours=1)).isoformat() if closed else None,
                    rng.choice([1.5, 2.5, float("inf")]), "closed" if closed else "open",
                ),
            )  # fmt: skip
        for i in rng.sample(range(1, n + 1), n // 5):  # closed later: another index order
            store.conn.execute(
                "UPDATE transactions SET state = 'closed', stop_time = ? WHERE id = ?",
                ((T0 + timedelta(days=1)).isoformat(), i),
            )
    sorted_before = (
        "SELECT charger_id, start_time, stop_time, energy_kwh FROM transactions "
        "INDEXED BY ix_tx_open WHERE state = 'closed' AND stop_time IS NOT NULL "
        "AND energy_kwh BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308 "
        "ORDER BY start_time DESC LIMIT ?"
    )
    for limit in (1, 2, 5, 17, 100, 20000):
        want = store.conn.execute(sorted_before, [limit]).fetchall()
        got = records.closed_sessions(store, limit=limit)
        assert [(c, a.isoformat(), b.isoformat(), e) for c, a, b, e in got] == want
    store.close()
