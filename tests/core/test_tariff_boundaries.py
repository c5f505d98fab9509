"""The seed tariff at every season and load-period boundary, against KEPCO's table as
published (written out here, not read from the station file), in local time."""

from __future__ import annotations

import pandas as pd
import pytest

from megastation.core.config import load_station, seeds_dir
from megastation.core.tariff import Tariff

TZ = "Asia/Seoul"
SUMMER, SPRING_AUTUMN, WINTER = "summer", "spring_autumn", "winter"
SEASON_OF_MONTH = {
    **dict.fromkeys((6, 7, 8), SUMMER),
    **dict.fromkeys((3, 4, 5, 9, 10), SPRING_AUTUMN),
    **dict.fromkeys((11, 12, 1, 2), WINTER),
}
# KRW/kWh, high voltage, 2022 base: light / mid / peak.
RATES = {
    SUMMER: {"light": 63.1, "mid": 103.2, "peak": 124.5},
    SPRING_AUTUMN: {"light": 53.5, "mid": 64.3, "peak": 68.2},
    WINTER: {"light": 72.7, "mid": 91.7, "peak": 105.7},
}


def _period(season: str, hour: int) -> str:
    """Light 23-09 in all seasons; mid and peak hours as KEPCO publishes them."""
    if hour >= 23 or hour < 9:
        return "light"
    if season == WINTER:
        peak = (10 <= hour < 12) or (17 <= hour < 20) or hour == 22
    else:
        peak = (10 <= hour < 12) or (13 <= hour < 17)
    return "peak" if peak else "mid"


@pytest.fixture(scope="module")
def tariff() -> Tariff:
    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    return Tariff(station.tariff, station.site.timezone)


def _boundaries() -> list[pd.Timestamp]:
    """Every hour of one day in each month (each period boundary), its last second,
    and the last second of each month (each season boundary), local time."""
    out = []
    for month in range(1, 13):
        day = pd.Timestamp(2026, month, 15, tz=TZ)
        for hour in range(24):
            start = day + pd.Timedelta(hours=hour)
            out += [start, start + pd.Timedelta(minutes=59, seconds=59)]
        out.append(
            pd.Timestamp(2026, month, 1, tz=TZ)
            + pd.offsets.MonthEnd(0)
            + pd.Timedelta(hours=23, minutes=59, seconds=59)
        )
        out.append(pd.Timestamp(2026, month, 1, tz=TZ))
    return out


def test_every_hour_of_every_month_has_the_published_price(tariff):
    local = pd.DatetimeIndex(_boundaries())
    # The tariff is asked in UTC, as everything inside is: 09:00 in Seoul is 00:00 UTC.
    prices = tariff.price_krw_per_kwh(local.tz_convert("UTC"))
    expected = [
        RATES[SEASON_OF_MONTH[t.month]][_period(SEASON_OF_MONTH[t.month], t.hour)] for t in local
    ]
    wrong = [
        (str(t), p, e)
        for t, p, e in zip(local, prices, expected, strict=True)
        if p != pytest.approx(e)
    ]
    assert not wrong, wrong[:10]


@pytest.mark.parametrize(
    ("local", "price"),
    [
        ("2026-05-31 23:59:59", 53.5),  # spring light ...
        ("2026-06-01 00:00:00", 63.1),  # ... summer light at midnight local (15:00 UTC)
        ("2026-08-31 16:59:59", 124.5),
        ("2026-09-01 16:59:59", 68.2),
        ("2026-10-31 22:30:00", 64.3),
        ("2026-11-01 22:30:00", 105.7),  # winter: 22-23 is peak
        ("2026-02-28 12:00:00", 91.7),
        ("2026-03-01 12:00:00", 64.3),
        ("2026-01-01 08:59:59", 72.7),
        ("2026-01-01 09:00:00", 91.7),
    ],
)
def test_season_change_at_local_midnight(tariff, local, price):
    t = pd.DatetimeIndex([pd.Timestamp(local, tz=TZ)]).tz_convert("UTC")
    assert tariff.price_krw_per_kwh(t)[0] == pytest.approx(price)


def test_naive_times_are_refused(tariff):
    with pytest.raises(ValueError, match=r"^times: must be timezone-aware$"):
        tariff.price_krw_per_kwh(pd.DatetimeIndex(["2026-06-15 10:00"]))


def test_export_and_demand_charge_come_from_the_config(tariff):
    assert tariff.export_price_krw_per_kwh == 0.0
    assert tariff.demand_charge_krw_per_kw_month == 2580.0
