"""A running station for browser tests: central system, supervised control loop, the
web console and simulated chargers (``megastation.sim.chargepoint``) over real sockets,
on an accelerated clock (:class:`ScaledClock`), all on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from megastation.app.serve import controller_hooks
from megastation.core.clock import ScaledClock
from megastation.core.config import Station
from megastation.core.fleet import CarVisit
from megastation.sim.chargepoint import Fleet
from megastation.store import Store, records
from megastation.store.forecasts import save_forecast
from megastation.web.app import WebServer
from megastation.web.auth import add_user
from ocpp_central.server import CentralSystem
from tests.web.conftest import PASSWORD

CHARGERS = ("GJDG-DC-01", "GJDG-DC-03", "GJDG-AC-01")  # 2.0.1 200 kW, 1.6 100 kW, 1.6 AC
PV_KW = 80.0


def flat_forecaster(kw: float, store: Store | None = None, clock=None):
    """A flat PV forecast (P10 70 %, P90 110 %), issued to ``store`` like the real one."""

    def forecast(station, start, n_steps, step_min, weather=None, measured_kw=None):
        idx = pd.date_range(
            pd.Timestamp(start).floor(f"{step_min}min"), periods=n_steps, freq=f"{step_min}min"
        )
        fc = pd.DataFrame(
            {
                "pv_ac_kw": np.full(n_steps, kw),
                "pv_ac_p10_kw": np.full(n_steps, 0.7 * kw),
                "pv_ac_p90_kw": np.full(n_steps, 1.1 * kw),
                "pv_clear_kw": np.full(n_steps, 1.2 * kw),
                "pv_raw_kw": np.full(n_steps, kw),
            },
            index=idx,
        )
        if store is not None:
            save_forecast(store, fc, issued_at=clock.now(), source="test")
        return fc

    return forecast


def visits(start: datetime) -> list[CarVisit]:
    return [
        CarVisit(
            charger_id=cid,
            connector_id=1,
            arrival=start + timedelta(minutes=1 + i),
            departure=start + timedelta(hours=5),
            energy_wanted_kwh=60.0,
            car_model="Hyundai Ioniq 5 Long Range",
            battery_kwh=84.0,
            car_max_power_kw=257.0,
            soc_arrival_frac=0.2,
            sends_charging_needs=False,
            id_token=f"CARD-{i}",
        )
        for i, cid in enumerate(CHARGERS)
    ]


class LiveStation:
    """``async with LiveStation(station, db_path, start) as live``: ``live.web.url``,
    ``live.store``; users ``alice`` (operator) and ``vic`` (viewer)."""

    def __init__(self, station: Station, db_path: Any, start: datetime, speed: float = 240.0):
        site = replace(station.site, dispatch_interval_s=900)  # a plan per station step
        self.station = replace(
            station, site=site, chargers=tuple(c for c in station.chargers if c.id in CHARGERS)
        )
        self.start = start
        self.clock = ScaledClock(start, speed)
        self.store = Store(db_path, self.clock)
        self._stack = contextlib.AsyncExitStack()
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> LiveStation:
        st, store, clock = self.station, self.store, self.clock
        add_user(store, "alice", "operator", PASSWORD)
        add_user(store, "vic", "viewer", PASSWORD)
        for i in range(len(CHARGERS)):
            records.set_id_token(store, f"CARD-{i}")
        on_event, control_task = controller_hooks(
            st, store, clock, pv_kw=lambda t: PV_KW, forecaster=flat_forecaster(PV_KW, store, clock),
            guard_interval_s=30.0, flow_sample_s=60.0,
        )  # fmt: skip
        self.central = CentralSystem(st, store, clock, on_event=on_event, response_timeout_s=5)
        await self.central.start("127.0.0.1", 0)
        self.tasks.append(asyncio.create_task(control_task(self.central)))
        self.web = WebServer(st, store, clock, central=self.central, notify=on_event, port=0)
        await self.web.start()
        self.fleet = Fleet(
            st, visits(self.start), f"ws://127.0.0.1:{self.central.port}", clock,
            meter_interval_s=60, tick_s=30,
        )  # fmt: skip
        self.tasks.append(asyncio.create_task(self.fleet.run(self.start + timedelta(hours=6))))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.web.stop()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.central.close()
        self.store.close()
