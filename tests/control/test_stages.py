"""The control cycle's stages as pure functions on hand-computed inputs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from megastation.control.caps import (
    CAR_CAP_TTL_S,
    CAR_PROBE_KW,
    UNPROVEN_DC_KW,
    CarCaps,
)
from megastation.control.gather import TxReading
from megastation.control.needs import DEFAULT_EV_BATTERY_KWH, ev_battery_kwh
from megastation.control.problem import (
    EXTRA_SUFFIX,
    firm_power_kw,
    presence,
    site_load_kw,
    unsampled_kw,
)
from megastation.control.setpoints import TxPowers, fit_headroom, tx_powers
from megastation.core.schedules import KwSchedule
from megastation.dispatch import SessionNeed, TimeGrid
from megastation.store.records import OpenTransaction

T0 = datetime(2026, 6, 15, 0, 0, tzinfo=UTC)


def sched(kw: float, start: datetime = T0) -> KwSchedule:
    return KwSchedule((start,), (kw,), start + timedelta(hours=1))


def tx(tid: int, power_kw: float | None = None, connector: int = 1) -> OpenTransaction:
    return OpenTransaction(tid, "C1", connector, "1.6", None, T0, 0.0, power_kw, None)


def reading(t: OpenTransaction, sample_at: datetime | None = None) -> TxReading:
    return TxReading(t, None, None, sample_at, str(t.transaction_id))


# --------------------------------------------------------------------------- caps


def test_a_cap_is_learned_from_the_second_settled_sample_below_the_limit():
    caps = CarCaps()
    caps.sent[7] = (T0, sched(50.0))
    # a sample taken before the limit settled tells nothing
    assert caps.cap(7, 20.0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=2)) == math.inf
    # the first settled sample below 50 - max(1, 5) kW is only noted ...
    assert caps.cap(7, 20.0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=10)) == math.inf
    # ... the second one sets the cap to what it drew
    assert caps.cap(7, 20.0, T0 + timedelta(seconds=20), T0 + timedelta(seconds=20)) == 20.0
    assert caps.cap_kw[7] == (20.0, T0 + timedelta(seconds=20))
    # more, still clearly below the limit: the new cap
    assert caps.cap(7, 30.0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=30)) == 30.0
    # a car that follows its limit has none, and has shown what it takes
    assert caps.cap(7, 48.0, T0 + timedelta(seconds=40), T0 + timedelta(seconds=40)) == math.inf
    assert 7 not in caps.cap_kw and caps.proven_kw[7] == 48.0


def test_a_car_that_drew_nothing_is_probed_after_the_ttl():
    caps = CarCaps()
    caps.cap_kw[3] = (0.0, T0)
    assert caps.cap(3, None, None, T0 + timedelta(seconds=CAR_CAP_TTL_S)) == 0.0
    later = T0 + timedelta(seconds=CAR_CAP_TTL_S + 1)
    assert caps.cap(3, None, None, later) == CAR_PROBE_KW
    assert 3 in caps.probing


def test_sent_limit_is_the_one_in_force_just_before_now():
    caps = CarCaps()
    caps.sent[1] = (
        T0,
        KwSchedule((T0, T0 + timedelta(minutes=15)), (40.0, 10.0), T0 + timedelta(hours=1)),
    )
    assert caps.sent_kw(1, T0 + timedelta(minutes=15)) == 40.0  # the step that just ended
    assert caps.sent_kw(1, T0) == 40.0  # nothing before the start: the first value
    assert caps.sent_kw(2, T0) is None


def test_an_unproven_dc_car_is_planned_at_100_kw_until_it_takes_more():
    caps = CarCaps()
    assert caps.firm_kw(5, 200.0) == UNPROVEN_DC_KW
    caps.proven_kw[5] = 150.0
    assert caps.firm_kw(5, 200.0) == 150.0
    assert caps.firm_kw(5, 60.0) == 60.0


def test_a_dc_car_that_needs_more_than_100_kw_for_its_firm_energy_gets_it():
    # 48 kWh firm by its pessimistic departure 19 min away: 151.6 kW on average, more than
    # an unproven car is planned with (100 kW) and less than its 200 kW connector (#11)
    need = SimpleNamespace(departure=T0 + timedelta(minutes=19), energy_kwh=48.0)
    assert firm_power_kw(UNPROVEN_DC_KW, 200.0, need, T0) == pytest.approx(48.0 / (19 / 60))
    assert firm_power_kw(UNPROVEN_DC_KW, 120.0, need, T0) == 120.0  # the connector's max
    # an hour left: 48 kW would do, the unproven 100 kW stays (a plan may spread it)
    need.departure = T0 + timedelta(hours=1)
    assert firm_power_kw(UNPROVEN_DC_KW, 200.0, need, T0) == UNPROVEN_DC_KW
    # past its departure: whatever it takes
    assert firm_power_kw(UNPROVEN_DC_KW, 200.0, need, T0 + timedelta(hours=2)) == 200.0


def test_forget_closed_drops_what_is_kept_for_closed_transactions():
    caps = CarCaps()
    caps.sent[1] = caps.sent[2] = (T0, sched(10.0))
    caps.proven_kw[2] = 10.0
    caps.forget_closed({1})
    assert set(caps.sent) == {1} and not caps.proven_kw


# --------------------------------------------------------------------------- problem


def test_unsampled_power_counts_what_cars_were_sent_but_do_not_show():
    caps = CarCaps()
    caps.sent[1] = (T0, sched(30.0))
    caps.sent[2] = (T0, sched(50.0))
    now = T0 + timedelta(minutes=1)
    txs = [
        reading(tx(1)),  # no sample yet: draws its 30 kW
        reading(tx(2, 20.0, connector=2), sample_at=T0 + timedelta(seconds=3)),  # predates 50
        reading(tx(3, 5.0, connector=3)),  # nothing sent: its sample tells
    ]
    ev_kw = {("C1", 2): 20.0, ("C1", 3): 5.0}
    assert unsampled_kw(txs, caps, ev_kw, now) == pytest.approx(30.0 + (50.0 - 20.0))


def test_presence_counts_a_fine_step_whole_and_a_coarse_step_by_share():
    # two 900 s steps, then two 3600 s steps
    grid = TimeGrid(T0, 4, 900, coarse_step_s=3600, n_fine=2)
    assert presence(grid, T0 + timedelta(seconds=1000), 900).tolist() == [1, 1, 0, 0]
    got = presence(grid, T0 + timedelta(seconds=1800 + 900), 900)
    assert got.tolist() == [1, 1, 0.25, 0]


def test_site_load_adds_the_unexplained_load_for_the_first_hour():
    grid = TimeGrid(T0, 6, 900)
    assert site_load_kw(grid, 20.0, 5.0).tolist() == [25.0] * 4 + [20.0] * 2


def test_battery_capacity_from_the_soc_rise():
    assert ev_battery_kwh(0.6, 0.4, 12.0) == pytest.approx(60.0)
    assert ev_battery_kwh(0.42, 0.4, 12.0) == DEFAULT_EV_BATTERY_KWH  # too little rise
    assert ev_battery_kwh(0.9, 0.1, 400.0) == 200.0  # bounded


# --------------------------------------------------------------------------- set points


def _plan(grid, sessions, session_kw, grid_import_kw):
    problem = SimpleNamespace(grid=grid, sessions=sessions)
    session_kw = np.asarray(session_kw, dtype=float)
    return SimpleNamespace(
        problem=problem,
        session_ids=[s.session_id for s in sessions],
        session_kw=session_kw,
        delivered_kwh=session_kw.sum(axis=1) * 0.25,
        unmet_kwh=np.zeros(len(sessions)),
        grid_import_kw=np.asarray(grid_import_kw, dtype=float),
    )


def _need(sid, departure, max_kw=100.0):
    return SessionNeed(sid, "C1", 1, T0, departure, 10.0, max_kw)


def test_a_car_leaving_within_a_step_gets_the_average_while_it_is_there():
    grid = TimeGrid(T0, 2, 900)
    leaves = T0 + timedelta(seconds=450)  # half of step 0
    sessions = [_need("1", leaves), _need("1" + EXTRA_SUFFIX, leaves, max_kw=30.0)]
    plan = _plan(grid, sessions, [[10.0, 0.0], [20.0, 0.0]], [0.0, 0.0])
    first = SimpleNamespace(session_kw={"1": 10.0, "1" + EXTRA_SUFFIX: 20.0})
    p = tx_powers(plan, first)
    # firm 10 / 0.5 = 20 kW, extra 20 / 0.5 = 40 capped at its 30 kW: 50 kW while there
    assert p.kw["1"].tolist() == [50.0, 0.0]
    assert p.avg["1"].tolist() == [30.0, 0.0]
    assert p.first["1"] == 50.0
    assert p.delivered["1"] == pytest.approx(7.5)


def test_the_raise_above_the_plan_average_fits_the_grid_headroom():
    grid = TimeGrid(T0, 2, 900)
    plan = SimpleNamespace(problem=SimpleNamespace(grid=grid), grid_import_kw=np.array([90.0, 0.0]))
    p = TxPowers(
        kw={"1": np.array([50.0, 0.0]), "2": np.array([30.0, 0.0])},
        avg={"1": np.array([30.0, 0.0]), "2": np.array([10.0, 0.0])},
        first={"1": 50.0, "2": 30.0},
    )
    first = SimpleNamespace(session_kw={"1": 30.0, "2": 10.0})
    fit_headroom(p, plan, first, 100.0)
    # raise 20 + 20 kW against 10 kW of room: a quarter of each raise
    assert p.kw["1"].tolist() == [35.0, 0.0] and p.kw["2"].tolist() == [15.0, 0.0]
    assert p.first == {"1": 35.0, "2": 15.0}
