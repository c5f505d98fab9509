"""Auto-registered chargers, once accepted, are steered like configured ones (issue #13, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from click.testing import CliRunner

from megastation.app.serve import controller_hooks
from megastation.cli import main
from megastation.store import control as cr
from megastation.store import records
from ocpp_central.server import run_server
from tests.control.test_control_loop import flat_forecaster
from tests.control_chargepoints import Car, ObeyingCP16
from tests.ocpp_clients import connect_charger


async def until(cond, what: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def serving(station, store, clock):
    on_event, control = controller_hooks(
        station, store, clock, forecaster=flat_forecaster(0.0), guard_interval_s=0
    )
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_server(station, store, clock, "127.0.0.1", 0, extra_tasks=[control],
                   on_event=on_event, ready=ready.set_result)
    )  # fmt: skip
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def purposes(cp) -> set[str]:
    return {p["charging_profile_purpose"] for p in cp.received}


async def test_an_accepted_auto_registered_charger_is_steered(station, store, clock):
    st = dataclasses.replace(station, site=dataclasses.replace(station.site, auto_register=True))
    records.set_id_token(store, "TAG")
    async with serving(st, store, clock) as system:
        rated = records.auto_charger(st, "AUTO-1", kind="AC", max_power_kw=11.0, connectors=1)
        async with connect_charger(
            system.port, "AUTO-1", "1.6", cp_class=ObeyingCP16, charger=rated, clock=clock
        ) as cp:
            await cp.boot()  # told Pending: nothing is sent to it
            assert records.get_charger(store, "AUTO-1")["registration"] == "Pending"
            out = CliRunner().invoke(
                main,
                ["--db", str(store.path), "chargers", "accept", "AUTO-1", "--kind", "AC",
                 "--max-power-kw", "11", "--connectors", "1"],
            )  # fmt: skip
            assert out.exit_code == 0, out.output
            assert cp.received == []
            await cp.boot()  # now Accepted: the loop takes it on
            await until(
                lambda: {"ChargePointMaxProfile", "TxDefaultProfile"} <= purposes(cp),
                "fail-safe profiles on the accepted charger",
            )
            assert cr.charger_config_keys(store, "AUTO-1") is not None  # configuration read
            tx = await cp.plug(1, Car(energy_wanted_kwh=10.0, max_kw=11.0))
            await until(lambda: "TxProfile" in purposes(cp), "a TxProfile for its session")

            def planned() -> list:
                plan = cr.latest_plan(store)
                sessions = plan["inputs"]["sessions"] if plan else []
                return [s for s in sessions if s["charger_id"] == "AUTO-1"]

            await until(lambda: planned(), "its session in the plan")
            s = planned()[0]
            assert s["transaction_id"] == tx and s["max_power_kw"] <= 11.0 + 1e-6


def test_auto_charger_takes_the_kind_of_the_station(station):
    ac = records.auto_charger(station, "X")
    smallest_ac = min((c for c in station.chargers if c.kind == "AC"), key=lambda c: c.max_power_kw)
    assert ac.kind == "AC" and ac.max_power_kw == smallest_ac.max_power_kw
    assert ac.connectors == smallest_ac.connectors and ac.phases == smallest_ac.phases
    dc = records.auto_charger(station, "Y", kind="dc", max_power_kw=60.0, connectors=2)
    assert (dc.kind, dc.max_power_kw, dc.connectors, dc.cabinet) == ("DC", 60.0, 2, None)
