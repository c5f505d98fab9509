"""The honest uncontrolled baseline: cars at full power, the battery in self-consumption."""

from __future__ import annotations

import numpy as np
import pytest

from megastation.evaluation.baselines import uncontrolled, uncontrolled_self_consumption
from tests.evaluation.test_dispatch_replay import day


def test_self_consumption_delivers_the_same_and_imports_less():
    sc = day()
    idle, selfc = uncontrolled(sc), uncontrolled_self_consumption(sc)
    a, b = idle.summary(), selfc.summary()
    assert b["delivered_kwh"] == pytest.approx(a["delivered_kwh"], abs=1e-6)  # same cars
    np.testing.assert_allclose(selfc.session_kw, idle.session_kw, atol=1e-9)
    assert b["grid_import_kwh"] < a["grid_import_kwh"] - 1.0
    assert b["renewable_to_ev_kwh"] > a["renewable_to_ev_kwh"]
    assert np.all(idle.battery_charge_kw == 0) and np.all(idle.battery_discharge_kw == 0)
    # never charges from the grid nor discharges into it; the reserve holds
    assert np.all(np.minimum(selfc.battery_charge_kw, selfc.grid_import_kw) < 1e-6)
    assert np.all(np.minimum(selfc.battery_discharge_kw, selfc.grid_export_kw) < 1e-6)
    assert selfc.soc_frac.min() >= sc.battery.soc_min_frac - 1e-9
