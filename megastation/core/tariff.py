"""Time-of-use tariff: the import price of every step, from the station's rate table.

Rates are data (``[tariff]`` in the station TOML), not code: KEPCO's seasons, load
periods and KRW/kWh rates change, the model does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from megastation.core.config import TariffConfig

PERIODS = ("light", "mid", "peak")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEMO_MAX_TIMES = 50_000  # prices remembered by price_at_us (~5 months of plans; a few MB)


@dataclass(frozen=True)
class Tariff:
    """Vectorised look-up of the price by local month and hour."""

    config: TariffConfig
    timezone: str

    def __post_init__(self) -> None:
        # 12 x 24 table: price per month-hour (period code 0 light, 1 mid, 2 peak per hour).
        price = np.zeros((12, 24))
        for season in self.config.seasons:
            hours = np.zeros(24, dtype=np.int8)
            hours[list(season.mid_hours)] = 1
            hours[list(season.peak_hours)] = 2
            rates = np.array([season.rates_krw_per_kwh[p] for p in PERIODS])
            for month in season.months:
                price[month - 1] = rates[hours]
        object.__setattr__(self, "_price", price)
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))
        object.__setattr__(self, "_by_us", {})  # price_at_us's memo: epoch us -> price

    def _local(self, times: pd.DatetimeIndex) -> pd.DatetimeIndex:
        if times.tz is None:
            raise ValueError("times: must be timezone-aware")
        return times.tz_convert(self.timezone)

    def price_krw_per_kwh(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Import price [KRW/kWh] of the step starting at each time."""
        local = self._local(times)
        return self._price[local.month - 1, local.hour]

    def price_at_us(self, times_us: np.ndarray) -> np.ndarray:
        """:meth:`price_krw_per_kwh` of times given as microseconds since the epoch (UTC),
        remembered per time: a plan's steps recur in every plan of the next hours (#15)."""
        memo: dict[int, float] = self._by_us
        if len(memo) > MEMO_MAX_TIMES:  # a long-running loop: start afresh
            memo.clear()
        out = []
        for t in np.asarray(times_us, dtype=np.int64).tolist():
            price = memo.get(t)
            if price is None:
                local = (_EPOCH + timedelta(microseconds=t)).astimezone(self._zone)
                price = memo[t] = float(self._price[local.month - 1, local.hour])
            out.append(price)
        return np.array(out, dtype=float)

    @property
    def export_price_krw_per_kwh(self) -> float:
        return self.config.export_price_krw_per_kwh

    @property
    def demand_charge_krw_per_kw_month(self) -> float:
        return self.config.demand_charge_krw_per_kw_month
