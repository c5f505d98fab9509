"""Tariff.price_at_us (#15): the price of each time as price_krw_per_kwh gives it, in
any zone (half-hour offsets, daylight saving), remembered or not."""

import numpy as np
import pandas as pd
import pytest

from megastation.core.config import load_station, seeds_dir
from megastation.core.tariff import Tariff


@pytest.mark.parametrize("tz", ["Asia/Seoul", "America/New_York", "Asia/Kathmandu", "UTC"])
def test_price_at_us_equals_price_krw_per_kwh(tz):
    tariff = Tariff(load_station(seeds_dir() / "gwangju-donggu.toml").tariff, tz)
    us = np.sort(np.random.default_rng(15).integers(1.6e15, 1.9e15, 20_000))
    us[::3] = us[::3] // 900_000_000 * 900_000_000  # quarter hours, as plans' steps
    want = tariff.price_krw_per_kwh(pd.DatetimeIndex(us.view("M8[us]"), dtype="M8[us, UTC]"))
    assert np.array_equal(tariff.price_at_us(us), want)
    assert np.array_equal(tariff.price_at_us(us[::-1]), want[::-1])  # from the memo
