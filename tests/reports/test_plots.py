"""The report pictures are real PNG files with something drawn in them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from megastation.reports.plots import plot_connector_power, plot_energy_flows, plot_pv_forecast

PNG = b"\x89PNG\r\n\x1a\n"


def _is_drawn_png(path) -> bool:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    if not data.startswith(PNG) or len(data) < 5_000:
        return False
    pixels = mpimg.imread(path)
    return float(np.std(pixels)) > 0.01  # not a blank canvas


def test_day_pictures(tmp_path):
    idx = pd.date_range("2026-06-14 15:00", periods=96, freq="15min", tz="UTC")
    sun = np.clip(np.sin(np.linspace(-1, 4, 96)), 0, None) * 150
    flows = pd.DataFrame(
        {
            "pv_kw": sun,
            "ev_kw": 80 + 40 * np.cos(np.linspace(0, 6, 96)),
            "base_load_kw": 8.0,
            "battery_charge_kw": np.where(sun > 100, 20.0, 0.0),
            "battery_discharge_kw": np.where(sun < 10, 30.0, 0.0),
            "grid_export_kw": 0.0,
            "soc_frac": np.linspace(0.5, 0.7, 96),
        },
        index=idx,
    )
    flows["grid_import_kw"] = (
        flows.ev_kw
        + flows.base_load_kw
        + flows.battery_charge_kw
        - flows.pv_kw
        - flows.battery_discharge_kw
    ).clip(lower=0)
    paths = [
        plot_energy_flows(flows, tmp_path / "flows.png", tz="Asia/Seoul", grid_limit_kw=400),
        plot_connector_power(
            flows[["ev_kw"]].rename(columns={"ev_kw": "DC-01/1"}),
            tmp_path / "connectors.png",
            tz="Asia/Seoul",
        ),
        plot_pv_forecast(
            flows["pv_kw"],
            pd.DataFrame(
                {"p10_kw": sun * 0.7, "p50_kw": sun * 0.95, "p90_kw": sun * 1.1}, index=idx
            ),
            tmp_path / "pv.png",
            tz="Asia/Seoul",
        ),
    ]
    for p in paths:
        assert _is_drawn_png(p), p
