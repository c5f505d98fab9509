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
