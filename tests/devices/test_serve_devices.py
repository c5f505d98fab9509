"""`serve` (the app's serve function, in-process) with a Modbus battery, two PV inverters
and a grid meter served by the test: the plan steers the battery over SunSpec 124, the
energy flows show what the inverters and the meter measured, and faulted devices are
planned without and named by `status`."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from megastation.app.serve import serve
from megastation.cli import main
from megastation.core.config import load_station, seeds_dir
from megastation.store import control as cr
from megastation.store import devices as device_store
from tests.conftest import T0
from tests.devices.sunspec_server import BatteryServer, InverterServer, MeterServer


class Site:
    """What the test's devices see: PV, an unmetered extra load, the battery's power."""

    def __init__(self, clock):
        self.clock = clock
        self.pv_kw = 120.0  # both inverters together
        self.extra_kw = 0.0
        self.battery: BatteryServer | None = None
        self.log: list[tuple[float, float, float]] = []  # (t, pv, net import) as served

    def net_kw(self) -> float:
        b = self.battery.power_kw if self.battery else 0.0
        net = 8.0 + self.extra_kw - self.pv_kw - b  # base load 8 kW, no cars
        self.log.append(((self.clock.now() - T0).total_seconds(), self.pv_kw, net))
        return net


def flat_forecaster(site: Site):
    def forecast(station, start, n_steps, step_min, weather=None, measured_kw=None):
        idx = pd.date_range(
            pd.Timestamp(start).floor(f"{step_min}min"), periods=n_steps, freq=f"{step_min}min"
        )
        return pd.DataFrame({"pv_ac_kw": np.full(n_steps, site.pv_kw)}, index=idx)

    return forecast


def station_file(tmp_path: Path, battery: int, pv: list[int], meter: int) -> Path:
    text = (seeds_dir() / "gwangju-donggu.toml").read_text()
    devs = [("ess", "battery", battery)] + [(f"inv-{i}", "pv", p) for i, p in enumerate(pv)]
    devs.append(("grid", "meter", meter))
    for name, kind, port in devs:
        text += (
            f'\n[[devices]]\nname = "{name}"\nkind = "{kind}"\nhost = "127.0.0.1"\n'
            f'port = {port}\nunit_id = 1\nmodel = "sunspec"\npoll_interval_s = 1.0\n'
            f"timeout_s = 0.3\n"
        )
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


async def advance_until(clock, cond, *, step_s=1.0, max_s=1800.0, real_s=60.0) -> None:
    """Advance the station clock until ``cond()`` (bounded in station and real time)."""
    deadline = time.monotonic() + real_s
    waited = 0.0
    while not cond():
        assert waited < max_s, f"not within {max_s} s of station time"
        assert time.monotonic() < deadline, "not within the real-time bound"
        await clock.advance(step_s)
        waited += step_s
        await asyncio.sleep(0.01)  # let the sockets and the solver thread move


def cli(cfg: Path, db: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--config", str(cfg), "--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
async def rig(servers, clock, store, tmp_path, db_path, caplog):
    caplog.set_level("INFO", logger="megastation")
    site = Site(clock)
    bat = await servers(BatteryServer(clock, capacity_kwh=500, max_kw=250, soc_frac=0.5))
    site.battery = bat
    invs = [await servers(InverterServer(lambda: site.pv_kw / 2)) for _ in range(2)]
    meter = await servers(MeterServer(site.net_kw))
    cfg = station_file(tmp_path, bat.port, [i.port for i in invs], meter.port)
    station = load_station(cfg)
    served = serve(
        station, store, clock, "127.0.0.1", 0, forecaster=flat_forecaster(site),
        web=False, expect_arrivals=False,
    )  # fmt: skip
    task = asyncio.create_task(served)
    yield site, bat, invs, meter, cfg, task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_serve_steers_the_modbus_battery_and_records_measured_pv_and_grid(
    rig, clock, store, db_path, caplog
):
    site, bat, _invs, _meter, cfg, task = rig
    # PV surplus, no cars: the plan charges the battery from PV (a cycle records its plan
    # after it has applied the set points: under load the poll can fall between the two)
    await advance_until(clock, lambda: bat.power_kw < -5 and cr.latest_plan(store) is not None)
    assert cr.latest_plan(store)["first_step"]["battery_kw"] < -5
    await advance_until(clock, lambda: clock.now() >= T0 + timedelta(seconds=300))
    t_change = (clock.now() - T0).total_seconds()
    # the plan exports what it expects the battery cannot take later today (120 kW all
    # day); export pays nothing, so between plans the battery stores it now (#11)
    planned_export_kw = cr.latest_plan(store)["first_step"]["grid_export_kw"]
    # PV gone and the utility asks for no import: the battery covers the site load
    site.pv_kw = 0.0
    cr.set_grid_limit(store, 0.0)
    await advance_until(clock, lambda: bat.power_kw > 5)
    assert [kw > 0 for _, kw in bat.setpoints][-1]
    await advance_until(clock, lambda: (clock.now() - T0).total_seconds() >= t_change + 300)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    t_end = (clock.now() - T0).total_seconds()
    logs = "\n".join(r.getMessage() for r in caplog.get_records("setup") + caplog.records)
    assert "devices: battery: ess (Modbus 127.0.0.1:" in logs
    assert "devices: PV: inv-0 (Modbus" in logs and "inv-1 (Modbus" in logs

    out = db_path.parent / "flows.csv"
    cli(cfg, db_path, "export", "energy-flows", "-o", str(out))
    rows = list(csv.DictReader(out.open()))
    span = sum(float(r["step_s"]) for r in rows)
    pv_kwh = sum(float(r["pv_kw"]) * float(r["step_s"]) for r in rows) / 3600
    imp_kwh = sum(float(r["grid_import_kw"]) * float(r["step_s"]) for r in rows) / 3600
    exp_kwh = sum(float(r["grid_export_kw"]) * float(r["step_s"]) for r in rows) / 3600
    assert span == pytest.approx(t_end, abs=10)  # up to the last 10-s sample
    # what the inverters and the meter served, integrated (10-s sampling by the recorder)
    t, pv, net = (np.array(x) for x in zip(*site.log, strict=True))
    keep = t < span
    t, pv, net = t[keep], pv[keep], net[keep]
    dt = np.diff(np.append(t, span))
    tol_kwh = (
        120 * 10 / 3600 + 1e-6
    )  # one 10-s sample of the PV or export that stopped (+ float noise)
    assert pv_kwh == pytest.approx(float(np.sum(pv * dt)) / 3600, abs=tol_kwh)
    assert pv_kwh == pytest.approx(120 * t_change / 3600, abs=tol_kwh)
    assert imp_kwh == pytest.approx(float(np.sum(np.maximum(net, 0) * dt)) / 3600, abs=tol_kwh)
    assert exp_kwh == pytest.approx(float(np.sum(np.maximum(-net, 0) * dt)) / 3600, abs=tol_kwh)
    # measured, not computed: the plan exported while the sun shone, the meter saw the
    # battery take it instead
    assert planned_export_kw > 50
    assert exp_kwh < 0.05 * planned_export_kw * t_change / 3600
    soc = [float(r["soc_frac"]) for r in rows if r["soc_frac"]]
    assert soc[0] == pytest.approx(0.5, abs=0.01)  # the device's SoC, read over Modbus

    listing = cli(cfg, db_path, "devices")
    assert "ess" in listing and "soc_pct" in listing and "FAULT" not in listing


async def test_faulted_devices_are_planned_without_and_named_by_status(rig, clock, store, db_path):
    _site, bat, invs, meter, cfg, _task = rig
    await advance_until(clock, lambda: bat.power_kw < -5)
    bat.mode = "timeout"  # never answers
    invs[1].update = lambda: None
    invs[1].image.set_raw(103, "W", 0x8000)  # not implemented
    meter.mode = "exception"  # Modbus exception 4

    def faulted() -> set[str]:
        return {d["name"] for d in device_store.device_statuses(store) if d["fault"]}

    # a timed-out poll takes 0.3 s of real time: wait for the polls, not a fixed span
    await advance_until(clock, lambda: faulted() == {"ess", "inv-1", "grid"})
    t_seen = clock.now()
    await advance_until(clock, lambda: clock.now() >= t_seen + timedelta(seconds=70))
    plan = cr.latest_plan(store)
    assert plan["created_at"] > t_seen.isoformat()  # the loop kept planning ...
    assert plan["inputs"]["battery"]["fault"].startswith("stale: no good reading")
    assert plan["first_step"]["battery_kw"] == 0.0  # ... without the battery
    assert plan["pv_kw"] is None  # PV from the forecast alone
    assert plan["inputs"]["grid_import_measured_kw"] is None  # balance from the chargers

    status = json.loads(cli(cfg, db_path, "status", "--json"))["control"]["devices"]
    faults = {d["name"]: d for d in status if d["fault"]}
    assert set(faults) == {"ess", "inv-1", "grid"}
    assert "timeout after 0.3 s" in faults["ess"]["fault"]
    assert "W (103): not implemented" in faults["inv-1"]["fault"]
    assert "Modbus exception 4 (device failure)" in faults["grid"]["fault"]
    assert faults["ess"]["without_it"] == "planned without it (battery idle)"
    text = cli(cfg, db_path, "control-status")
    assert "device ess (battery, 127.0.0.1:" in text and "battery idle" in text
    assert "device grid (meter" in text and "site balance from the chargers" in text

    # back: the battery is steered again
    bat.mode, meter.mode = "ok", "ok"
    n = len(bat.writes)
    await advance_until(clock, lambda: len(bat.writes) > n)
