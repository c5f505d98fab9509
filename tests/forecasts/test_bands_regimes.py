"""Heteroscedastic bands: the P10/P90 spread depends on the forecast's own clear-sky index
(regime) as well as on the lead, fitted on some days and checked on others."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forecasts import bands as _bands
from forecasts import calibration as cal
from forecasts.bands import (
    CLEARSKY_BANDS,
    DEFAULT_BANDS,
    FITTED_FILE,
    MIN_REGIME_SAMPLES,
    REGIME_EDGES,
    Bands,
    apply_bands,
    bands_from_dict,
    bands_to_dict,
    fit_bands,
    regime,
)

CAP = 100.0


def _two_regimes(n: int, seed: int):
    """Half the steps forecast clear (p50/clear 0.95, errors sd 0.03 of clear sky), half
    broken cloud (0.55, sd 0.20): measured, forecast, clear [kW] and the regime mask."""
    rng = np.random.default_rng(seed)
    clear = rng.uniform(20.0, 90.0, n)
    cloudy = rng.random(n) < 0.5
    kf = np.where(cloudy, 0.55, 0.95)
    sd = np.where(cloudy, 0.20, 0.03)
    forecast = kf * clear
    measured = np.clip(forecast + rng.normal(0.0, 1.0, n) * sd * clear, 0.0, None)
    return measured, forecast, clear, cloudy


def _covered(m, p10, p90):
    return float(((m >= p10 - 1e-9) & (m <= p90 + 1e-9)).mean())


def test_fit_bands_conditions_on_the_regime_and_covers_80_percent_held_out():
    m, f, c, _ = _two_regimes(4000, seed=1)
    b = fit_bands(m, f, c, CAP)
    r_clear, r_cloudy = regime(np.array([0.95, 0.55]), np.ones(2), b.regime_edges)
    assert b.regime_edges == REGIME_EDGES and r_clear != r_cloudy
    width = np.subtract(b.q90_by_regime, b.q10_by_regime)
    assert width[r_cloudy] > 4 * width[r_clear]  # the bands must differ by regime
    m2, f2, c2, cloudy2 = _two_regimes(4000, seed=2)  # held out
    p10, p90 = apply_bands(f2, c2, 200.0, b)
    for part in (cloudy2, ~cloudy2):
        assert 0.75 <= _covered(m2[part], p10[part], p90[part]) <= 0.85
    # dropping the conditioning (one pooled spread) misses in both regimes
    pooled = Bands(b.q10, b.q90)
    p10, p90 = apply_bands(f2, c2, 200.0, pooled)
    assert _covered(m2[~cloudy2], p10[~cloudy2], p90[~cloudy2]) > 0.95
    assert _covered(m2[cloudy2], p10[cloudy2], p90[cloudy2]) < 0.7


def test_a_sparse_regime_takes_the_pooled_percentiles():
    m, f, c, _ = _two_regimes(400, seed=3)
    b = fit_bands(m, f, c, CAP)
    r_empty = int(regime(np.array([0.1]), np.ones(1), b.regime_edges)[0])
    assert (b.q10_by_regime[r_empty], b.q90_by_regime[r_empty]) == (b.q10, b.q90)


def _issues(n_issues: int, seed: int) -> tuple[cal.Issues, np.ndarray]:
    """Issues with a measured index, 8 leads; p50 clear (0.95) or broken (0.55) per
    issue, errors growing with lead, three times larger when broken."""
    rng = np.random.default_rng(seed)
    n_leads = 8
    lead_h = (np.arange(n_leads) + 0.5) * 0.25
    clear = rng.uniform(30.0, 90.0, (n_issues, n_leads))
    broken = rng.random((n_issues, 1)) < 0.5
    p50 = np.where(broken, 0.55, 0.95) * clear
    sd = np.where(broken, 0.15, 0.05) * (0.3 + lead_h)[None, :]
    measured = p50 + rng.normal(0.0, 1.0, p50.shape) * sd * clear
    x = cal.Issues(
        lead_h=lead_h, measured=measured, clear=clear, raw=p50,
        k_meas=np.full((n_issues, 1), 0.8), persistence=p50, daylight=np.ones_like(p50, bool),
    )  # fmt: skip
    return x, p50


def test_band_table_by_lead_and_regime_covers_80_percent_held_out():
    x, p50 = _issues(3000, seed=4)
    b = cal.fit_band_table(x, p50)
    assert len(b.q10_by_regime_lead) == len(REGIME_EDGES) + 1
    y, q50 = _issues(3000, seed=5)
    p10, p90 = cal.band_limits(y, q50, b, 500.0)
    broken = (q50 / y.clear < 0.75)[:, 0]
    for part in (broken, ~broken):
        for h in range(len(y.lead_h)):
            cov = _covered(y.measured[part, h], p10[part, h], p90[part, h])
            assert 0.75 <= cov <= 0.85, (h, cov)
    width = (p90 - p10) / y.clear
    assert width[broken].mean() > 2 * width[~broken].mean()
    assert (np.diff(width[~broken].mean(axis=0)) > 0).all()  # wider with lead


def test_shipped_bands_differ_by_regime():
    for b in (DEFAULT_BANDS, CLEARSKY_BANDS):
        assert b.regime_edges == REGIME_EDGES
        clear = np.full(2, 100.0)
        p50 = np.array([60.0, 105.0])  # broken cloud, clear sky
        for season in (-1.0, 1.0):  # winter, summer
            q10, q90 = b.quantiles(p50, clear, np.full(2, 3.0), np.full(2, season))
            assert q90[0] - q10[0] > 1.3 * (q90[1] - q10[1])
            assert q90[1] < q90[0]  # little upside over a clear-sky forecast


def test_bands_round_trip_through_json():
    assert bands_from_dict(json.loads(json.dumps(bands_to_dict(DEFAULT_BANDS)))) == DEFAULT_BANDS
    data = json.loads(FITTED_FILE.read_text())
    assert bands_from_dict(data["clearsky"]) == CLEARSKY_BANDS


def test_bands_without_regimes_use_the_pooled_rows():
    b = Bands(-0.3, 0.4, leads_h=(0.5, 2.5), q10_by_lead=(-0.1, -0.3), q90_by_lead=(0.1, 0.5))
    q10, q90 = b.quantiles(np.full(2, 50.0), np.full(2, 100.0), np.array([0.5, 2.5]))
    np.testing.assert_allclose(q10, [-0.1, -0.3])
    np.testing.assert_allclose(q90, [0.1, 0.5])
    q10, _ = b.quantiles(np.full(2, 50.0), np.full(2, 100.0))
    np.testing.assert_allclose(q10, -0.3)
    assert regime(np.array([0.0, 30.0, 100.0]), np.array([0.0, 100.0, 100.0]), (0.25, 1.0)).tolist() == [0, 1, 2]  # fmt: skip


def test_shipped_bands_keep_p50_inside():
    rng = np.random.default_rng(6)
    clear = rng.uniform(0.0, 150.0, 500)
    p50 = clear * rng.uniform(0.0, 1.3, 500)
    season = rng.uniform(-1.0, 1.0, 500)
    for lead in (None, rng.uniform(0.0, 12.0, 500)):
        p10, p90 = apply_bands(p50, clear, 180.0, DEFAULT_BANDS, lead, season)
        assert (p10 <= p50 + 1e-12).all() and (p90 >= np.minimum(p50, 180.0) - 1e-12).all()
        assert (p10 >= 0).all() and (p90 <= np.maximum(p50, 180.0)).all()
    with pytest.raises(TypeError):
        Bands()  # q10 and q90 are required


def _table_bands() -> Bands:
    """Two regimes (edge 0.5) and three lead nodes (1, 2, 4 h), every row different."""
    return Bands(
        -0.2, 0.2, leads_h=(1.0, 2.0, 4.0), q10_by_lead=(-0.1, -0.2, -0.3),
        q90_by_lead=(0.1, 0.2, 0.3), regime_edges=(0.5,), q10_by_regime=(-0.15, -0.05),
        q90_by_regime=(0.25, 0.08),
        q10_by_regime_lead=((-0.1, -0.2, -0.4), (-0.02, -0.04, -0.1)),
        q90_by_regime_lead=((0.2, 0.3, 0.7), (0.03, 0.05, 0.09)),
    )  # fmt: skip


def test_band_of_a_regime_and_lead_is_its_row_linear_between_nodes_held_outside():
    b = _table_bands()
    lead = np.array([0.0, 1.0, 1.5, 3.0, 4.0, 9.0])
    for p50, q10_row, q90_row in ((20.0, (-0.1, -0.2, -0.4), (0.2, 0.3, 0.7)),
                                  (80.0, (-0.02, -0.04, -0.1), (0.03, 0.05, 0.09))):  # fmt: skip
        q10, q90 = b.quantiles(np.full(6, p50), np.full(6, 100.0), lead)
        np.testing.assert_allclose(q10, np.interp(lead, b.leads_h, q10_row), atol=1e-12)
        np.testing.assert_allclose(q90, np.interp(lead, b.leads_h, q90_row), atol=1e-12)
    # without a lead (no nowcast) the regime's scalars
    q10, q90 = b.quantiles(np.array([20.0, 80.0]), np.full(2, 100.0))
    np.testing.assert_allclose(q10, [-0.15, -0.05])
    np.testing.assert_allclose(q90, [0.25, 0.08])


def test_bands_with_one_lead_node_hold_it_for_every_regime():
    b = Bands(
        -0.2, 0.2, leads_h=(2.0,), q10_by_lead=(-0.2,), q90_by_lead=(0.2,), regime_edges=(0.5,),
        q10_by_regime=(-0.3, -0.1), q90_by_regime=(0.3, 0.1),
        q10_by_regime_lead=((-0.25,), (-0.05,)), q90_by_regime_lead=((0.35,), (0.06,)),
    )  # fmt: skip
    q10, q90 = b.quantiles(
        np.array([20.0, 80.0, 80.0]), np.full(3, 100.0), np.array([0.5, 2.0, 7.0])
    )
    np.testing.assert_allclose(q10, [-0.25, -0.05, -0.05])
    np.testing.assert_allclose(q90, [0.35, 0.06, 0.06])


def test_regime_bands_without_lead_nodes_ignore_the_lead():
    m, f, c, _ = _two_regimes(400, seed=7)
    b = fit_bands(m, f, c, CAP)  # per regime, no lead nodes
    lead = np.full(len(f), 3.0)
    for got, want in zip(b.quantiles(f, c, lead), b.quantiles(f, c), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_regime_with_exactly_the_minimum_steps_gets_its_own_percentiles():
    m, f, c, cloudy = _two_regimes(400, seed=8)
    keep = ~cloudy | (np.cumsum(cloudy) <= MIN_REGIME_SAMPLES)  # just enough broken steps
    b = fit_bands(m[keep], f[keep], c[keep], CAP)
    r = int(regime(np.array([0.55]), np.ones(1), b.regime_edges)[0])
    e = ((m - f) / c)[keep & cloudy]
    assert len(e) == MIN_REGIME_SAMPLES
    assert (b.q10_by_regime[r], b.q90_by_regime[r]) == pytest.approx(
        tuple(np.percentile(e, [10, 90]))
    )
    fewer = keep & ~(cloudy & (np.cumsum(cloudy) == MIN_REGIME_SAMPLES))  # one short: pooled
    b = fit_bands(m[fewer], f[fewer], c[fewer], CAP)
    assert (b.q10_by_regime[r], b.q90_by_regime[r]) == (b.q10, b.q90)


def test_regime_at_night_or_without_a_forecast_is_the_first_and_broadcasts():
    # clear sky 0 (night) with a P50 above 0, a missing P50: regime 0, never a stale value
    p50, clear = np.array([5.0, np.nan, 60.0]), np.array([0.0, 80.0, 80.0])
    for _ in range(3):
        junk = [np.full(3, 0.9) for _ in range(8)]  # leave non-zero memory for the next arrays
        del junk
        assert regime(p50, clear, (0.25, 0.5)).tolist() == [0, 0, 2]
    # a scalar on either side broadcasts
    assert regime(np.array([10.0, 30.0]), 40.0, (0.5,)).tolist() == [0, 1]
    assert regime(30.0, np.array([40.0, 100.0]), (0.5,)).tolist() == [1, 0]


def test_bands_json_is_rounded_to_4_decimals_and_extra_keys_are_ignored():
    b = Bands(-0.123456, 0.987654, 500, leads_h=(1.0,), q10_by_lead=(-0.11119,), q90_by_lead=(0.2,))
    d = bands_to_dict(b)
    assert (d["q10"], d["q90"], d["q10_by_lead"]) == (-0.1235, 0.9877, [-0.1112])
    assert d["n_samples"] == 500 and isinstance(d["n_samples"], int)
    assert bands_from_dict({**d, "note": "fitted on 2026"}) == bands_from_dict(d)


def test_the_defaults_are_the_shipped_file():
    assert _bands._fitted() == {"weather": DEFAULT_BANDS, "clearsky": CLEARSKY_BANDS}
