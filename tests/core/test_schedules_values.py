"""KwSchedule: the power schedule the controller hands to the profile builder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from megastation.core.schedules import KwSchedule

T0 = datetime(2026, 6, 15, tzinfo=UTC)
M = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("starts", "limits", "end", "message"),
    [
        ((T0, T0 + M), (1.0,), T0 + 2 * M, "non-empty and equal length"),
        ((), (), T0, "non-empty and equal length"),
        ((T0, T0 + M, T0 + M), (1.0, 2.0, 3.0), T0 + 2 * M, "starts must increase"),
        ((T0, T0 + 2 * M, T0 + M), (1.0, 2.0, 3.0), T0 + 3 * M, "starts must increase"),
        ((T0, T0 + M), (1.0, 2.0), T0 + M, "end must be after the last start"),
    ],
)
def test_bad_schedules_are_refused_with_a_reason(starts, limits, end, message):
    with pytest.raises(ValueError, match=f"^KwSchedule: .*{message}"):
        KwSchedule(starts, limits, end)


def test_value_at_inside_and_at_the_edges():
    s = KwSchedule((T0, T0 + 10 * M), (5.0, 7.0), T0 + 20 * M)
    assert s.value_at(T0 - M) is None
    assert s.value_at(T0) == 5.0
    assert s.value_at(T0 + 10 * M) == 7.0
    assert s.value_at(T0 + 20 * M - timedelta(seconds=1)) == 7.0
    assert s.value_at(T0 + 20 * M) is None


def test_capped_after_inside_a_middle_period_keeps_the_rest():
    s = KwSchedule.regular(T0, 600, [50.0, 40.0, 30.0])
    c = s.capped_after(T0 + 15 * M, 35.0)
    assert c.starts == (T0, T0 + 10 * M, T0 + 15 * M, T0 + 20 * M)
    assert c.limits_kw == (50.0, 40.0, 35.0, 30.0)
    assert c.end == s.end


def test_capped_after_on_a_period_start_does_not_split():
    s = KwSchedule.regular(T0, 600, [50.0, 40.0, 30.0])
    c = s.capped_after(T0 + 10 * M, 35.0)
    assert c.starts == s.starts
    assert c.limits_kw == (50.0, 35.0, 30.0)
    c = s.capped_after(T0, 10.0)
    assert c.limits_kw == (10.0, 10.0, 10.0)
    c = s.capped_after(s.end, 10.0)  # from the end on: nothing changes
    assert c == s


def _capped_after_period_by_period(s: KwSchedule, ts, cap_kw: float) -> KwSchedule:
    """capped_after as it was written first: one pass over the periods."""
    starts, limits = [], []
    for i, a in enumerate(s.starts):
        nxt = s.starts[i + 1] if i + 1 < len(s.starts) else s.end
        if a < ts < nxt:
            starts += [a, ts]
            limits += [s.limits_kw[i], min(s.limits_kw[i], cap_kw)]
        else:
            starts.append(a)
            limits.append(s.limits_kw[i] if a < ts else min(s.limits_kw[i], cap_kw))
    return KwSchedule(tuple(starts), tuple(limits), s.end)


def test_capped_after_by_bisection_is_the_period_by_period_schedule():
    import random

    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(1, 8)
        s = KwSchedule.regular(T0, 600, [rng.choice([0.0, 7.4, 22.0, 50.0]) for _ in range(n)])
        ts = T0 + rng.randint(-2, 6 * n + 2) * 2 * M  # before, on, inside, at and after the end
        cap = rng.choice([0.0, 10.0, 40.0])
        assert s.capped_after(ts, cap) == _capped_after_period_by_period(s, ts, cap)
