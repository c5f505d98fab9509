"""Nowcast safeguards on numbers worked out by hand: the minimum-sun gate, the bounds
on the measured index, negative leads, what the blend mixes, the inverter clip, and
missing or misplaced measurements. Raw forecasts differ from clear sky throughout."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from forecasts.forecast import forecast_pv
from forecasts.nowcast import (
    BLEND_CLEARSKY,
    BLEND_LEADS_H,
    BLEND_WEATHER,
    K_MAX,
    MIN_CLEAR_FRAC,
    blend_weights,
    measured_clear_sky_index,
    nowcast,
    step_means,
)

IDX = pd.date_range("2026-06-15 00:00", periods=4, freq="15min", tz="UTC")
STEP = pd.Timedelta(minutes=15)


# --------------------------------------------------------------------------- step means


def test_step_means_average_each_interval_and_leave_gaps_nan():
    t = pd.DatetimeIndex(
        ["2026-06-15 00:00", "2026-06-15 00:05", "2026-06-15 00:14:59", "2026-06-15 00:15",
         "2026-06-15 00:44", "2026-06-14 23:59", "2026-06-15 01:00"],
        tz="UTC",
    )  # fmt: skip
    m = pd.Series([10.0, 20.0, 60.0, 5.0, np.nan, 99.0, 99.0], index=t)
    out = step_means(m, IDX, STEP)
    # [00:00, 00:15): 30; [00:15, 00:30): 5; [00:30, 00:45): only a NaN; before/after: out.
    np.testing.assert_allclose(out, [30.0, 5.0, np.nan, np.nan])


def test_step_means_in_another_zone_and_empty_input():
    local = pd.Series([8.0, 12.0], index=pd.DatetimeIndex(
        ["2026-06-15 09:30", "2026-06-15 09:40"], tz="Asia/Seoul"))  # fmt: skip
    np.testing.assert_allclose(step_means(local, IDX, STEP), [np.nan, np.nan, 10.0, np.nan])
    empty = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float)
    assert np.isnan(step_means(empty, IDX, STEP)).all()
    none = step_means(local, IDX[:0], STEP)
    assert len(none) == 0 and none.dtype == float
    with pytest.raises(ValueError, match=r"^measured_kw: index must be timezone-aware timestamps$"):
        step_means(pd.Series([1.0], index=pd.DatetimeIndex(["2026-06-15"])), IDX, STEP)


# --------------------------------------------------------------------------- measured index


def test_index_is_energy_weighted_over_measured_steps_only():
    # Steps with a measurement: clear 40 + 80, measured 20 + 64 -> 84 / 120 = 0.7.
    meas = np.array([20.0, np.nan, 64.0])
    clear = np.array([40.0, 500.0, 80.0])
    assert measured_clear_sky_index(meas, clear, 100.0) == pytest.approx(0.7)
    assert measured_clear_sky_index(np.full(3, np.nan), clear, 100.0) is None


def test_minimum_sun_gate_at_dawn_and_dusk():
    # 100 kW of inverters: a mean clear-sky PV below 5 kW per measured step is too
    # little sun to judge (dawn); at exactly 5 kW the index counts.
    cap = 100.0
    edge = MIN_CLEAR_FRAC * cap
    dawn = np.array([edge - 1.0, edge - 0.5, edge + 1.0])  # mean below the edge
    assert measured_clear_sky_index(np.array([1.0, 1.0, 1.0]), dawn, cap) is None
    at_edge = np.full(2, edge)
    assert measured_clear_sky_index(np.array([4.0, 3.0]), at_edge, cap) == pytest.approx(0.7)
    # The gate counts measured steps only: one sunny measured step passes.
    assert measured_clear_sky_index(np.array([np.nan, 6.0]), np.array([0.0, 10.0]), cap) == (
        pytest.approx(0.6)
    )


def test_measured_index_is_bounded():
    clear = np.array([50.0, 50.0])
    assert measured_clear_sky_index(np.array([100.0, 100.0]), clear, 100.0) == K_MAX
    assert measured_clear_sky_index(np.array([60.0, 60.0]), clear, 100.0) == pytest.approx(1.2)
    # Negative night readings of an inverter never make a negative index.
    assert measured_clear_sky_index(np.array([-5.0, -5.0]), clear, 100.0) == 0.0


# --------------------------------------------------------------------------- blend


def test_blend_weights_by_lead_and_negative_leads_count_as_now():
    assert BLEND_LEADS_H[:2] == (0.125, 0.375) and BLEND_LEADS_H[-1] == 24.0
    w = blend_weights(np.array([-0.5, 0.0, 0.125, 0.25, 1.5, 30.0]))
    first, second = BLEND_WEATHER[0], BLEND_WEATHER[1]
    at_1_5 = BLEND_WEATHER[BLEND_LEADS_H.index(1.5)]
    np.testing.assert_allclose(w, [first, first, first, (first + second) / 2, at_1_5, 0.0])
    assert (np.diff(BLEND_WEATHER) <= 0).all() and (np.diff(BLEND_CLEARSKY) <= 0).all()
    # without a weather forecast the measured index keeps more weight
    lead = np.array([0.125, 1.0, 3.0, 6.0])
    assert (blend_weights(lead, with_weather=False) > blend_weights(lead)).all()


def test_blend_mixes_measured_index_times_clear_with_raw():
    # Two arrays; raw is not clear sky. k = 0.6.
    raw = np.array([[30.0, 10.0], [30.0, 10.0], [30.0, 10.0]])
    clear = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 50.0]])
    lead = np.array([0.125, 1.5, 30.0])
    out = nowcast(raw, clear, np.array([110.0, 70.0]), lead, 0.6)
    w0, w1 = BLEND_WEATHER[0], BLEND_WEATHER[BLEND_LEADS_H.index(1.5)]
    np.testing.assert_allclose(out[0], [w0 * 60 + (1 - w0) * 30, w0 * 30 + (1 - w0) * 10])
    np.testing.assert_allclose(out[1], [w1 * 60 + (1 - w1) * 30, w1 * 30 + (1 - w1) * 10])
    np.testing.assert_allclose(out[2], [30.0, 10.0], atol=1e-6)  # far ahead: raw
    # Without an index the raw forecast stands, unclipped and unchanged.
    assert nowcast(raw, clear, np.array([1.0, 1.0]), lead, None) is raw


def test_blend_is_clipped_per_array_at_the_inverter_limit():
    raw = np.array([[120.0, 90.0]])
    clear = np.array([[100.0, 80.0]])
    out = nowcast(raw, clear, np.array([110.0, 70.0]), np.array([0.0]), 1.3)
    np.testing.assert_allclose(out, [[110.0, 70.0]])
    # k = 0 (panels dark): only the raw forecast's share is left, (1 - w) x raw
    out = nowcast(raw, clear, np.array([110.0, 70.0]), np.array([0.0]), 0.0)
    np.testing.assert_allclose(out, [[(1 - BLEND_WEATHER[0]) * 120, (1 - BLEND_WEATHER[0]) * 90]])


# --------------------------------------------------------------------------- through forecast_pv

T = pd.Timestamp("2026-06-15 03:00", tz="UTC")  # 12:00 in Gwangju


def _measured(station, end, hours, factor, freq="5min"):
    """Measured PV = ``factor`` x the station's clear-sky PV over the hours before ``end``."""
    start = end - pd.Timedelta(hours=hours)
    ref = forecast_pv(station.pv_site(), start, int(hours * 4), 15)
    idx = pd.date_range(start, end, freq=freq, inclusive="left")
    return pd.Series(factor * ref["pv_clear_kw"].reindex(idx, method="ffill").to_numpy(), index=idx)


def test_forecast_uses_only_the_last_window_before_the_issue_time(station):
    # Two hours ago the panels gave 0.9 of clear sky, in the last hour 0.4: the index is
    # the last hour's, measured at or after the issue time does not count.
    old = _measured(station, T - pd.Timedelta(hours=1), 1, 0.9)
    recent = _measured(station, T, 1, 0.4)
    after = pd.Series(0.0, index=pd.date_range(T, periods=30, freq="1min"))
    fc = forecast_pv(station.pv_site(), T, 16, 15, measured_kw=pd.concat([old, recent, after]))
    assert fc.attrs["k_meas"] == pytest.approx(0.4, abs=0.01)
    fc_long = forecast_pv(
        station.pv_site(), T, 16, 15, measured_kw=pd.concat([old, recent]), window_h=2.0
    )
    assert fc_long.attrs["k_meas"] == pytest.approx(0.65, abs=0.03)
    # First step (lead 7.5 min): no weather, so BLEND_CLEARSKY's first weight on 0.4 x clear.
    w = BLEND_CLEARSKY[0]
    first = fc.iloc[0]
    assert first["pv_ac_kw"] == pytest.approx(
        w * 0.4 * first["pv_clear_kw"] + (1 - w) * first["pv_raw_kw"], rel=1e-6
    )


def test_forecast_at_dawn_ignores_the_measured_index(station):
    # 06:00 local: the hour before sunrise-ish holds too little clear-sky PV to judge.
    dawn = pd.Timestamp("2026-06-14 21:00", tz="UTC")  # 06:00 in Gwangju
    measured = _measured(station, dawn, 1, 3.0)
    fc = forecast_pv(station.pv_site(), dawn, 8, 15, measured_kw=measured)
    assert fc.attrs["k_meas"] is None
    np.testing.assert_allclose(fc["pv_ac_kw"], fc["pv_raw_kw"])
    # At noon the same shape of data is used.
    assert forecast_pv(
        station.pv_site(), T, 8, 15, measured_kw=_measured(station, T, 1, 0.5)
    ).attrs["k_meas"] == pytest.approx(0.5, abs=0.01)


def test_forecast_with_gaps_in_the_measurements(station):
    m = _measured(station, T, 1, 0.5)
    m.iloc[::2] = np.nan  # every other reading lost
    fc = forecast_pv(station.pv_site(), T, 8, 15, measured_kw=m)
    assert fc.attrs["k_meas"] == pytest.approx(0.5, abs=0.01)
    # Only the last quarter-hour measured: still an index, from that step alone.
    last = m[m.index >= T - timedelta(minutes=15)].dropna()
    fc = forecast_pv(station.pv_site(), T, 8, 15, measured_kw=last * 1.6)
    assert fc.attrs["k_meas"] == pytest.approx(0.8, abs=0.02)


def test_blend_uses_the_table_it_is_given_and_never_goes_negative():
    raw = np.array([[40.0], [-1.0]])
    clear = np.array([[100.0], [0.0]])
    lead = np.array([1.0, 0.0])
    out = nowcast(raw, clear, np.array([110.0]), lead, 0.5, with_weather=False)
    w = 0.5 * (0.9 + 0.86)  # clear-sky table, halfway between the 0.875 h and 1.125 h nodes
    np.testing.assert_allclose(out[:, 0], [w * 50.0 + (1 - w) * 40.0, 0.0])
    w = 0.5 * (0.61 + 0.54)  # weather table
    np.testing.assert_allclose(nowcast(raw, clear, np.array([110.0]), lead, 0.5)[0, 0],
                               w * 50.0 + (1 - w) * 40.0)  # fmt: skip
