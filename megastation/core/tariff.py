"""Time-of-use tariff: the import price of every step, from the station's rate table.

Rates are data (``[tariff]`` in the station TOML), not code: KEPCO's seasons, load
periods and KRW/kWh rates change, the model does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from megastation.core.config import TariffConfig

PERIODS = ("light", "mid", "peak")


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

    def _local(self, times: pd.DatetimeIndex) -> pd.DatetimeIndex:
        if times.tz is None:
            raise ValueError("times: must be timezone-aware")
        return times.tz_convert(self.timezone)

    def price_krw_per_kwh(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Import price [KRW/kWh] of the step starting at each time."""
        local = self._local(times)
        return self._price[local.month - 1, local.hour]

    @property
    def export_price_krw_per_kwh(self) -> float:
        return self.config.export_price_krw_per_kwh

    @property
    def demand_charge_krw_per_kw_month(self) -> float:
        return self.config.demand_charge_krw_per_kw_month
