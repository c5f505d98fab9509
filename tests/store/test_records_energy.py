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
