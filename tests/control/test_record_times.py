"""record.iso_times (#15) writes a plan's step starts as Timestamp.isoformat did."""

from datetime import UTC, datetime, timedelta

from megastation.control.record import iso_times
from megastation.dispatch import TimeGrid


def test_iso_times_equal_timestamp_isoformat_with_and_without_fractions():
    t0 = datetime(2026, 3, 1, 10, 7, 13, tzinfo=UTC)
    for start in (t0, t0 + timedelta(microseconds=250), t0.replace(second=0)):
        grid = TimeGrid.aligned(start, 48, 900, coarse_after_h=6)
        assert iso_times(grid) == [ts.isoformat() for ts in grid.times]
