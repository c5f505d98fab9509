"""The drivers against real Modbus TCP servers on 127.0.0.1 (SunSpec images and register maps)."""

from __future__ import annotations

import dataclasses

import pytest

from megastation.core.config import DeviceConfig, RegisterSpec
from megastation.devices import DeviceFault, ModbusBattery, ModbusMeter, ModbusPVInverter, PVGroup
from megastation.devices.modbus import encode
from tests.devices.sunspec_server import DeviceServer, InverterServer, MeterServer, RawImage


def cfg(kind: str, port: int, **kw) -> DeviceConfig:
    return DeviceConfig(name=kw.pop("name", kind), kind=kind, host="127.0.0.1", port=port,
                        timeout_s=kw.pop("timeout_s", 0.3), **kw)  # fmt: skip


def battery(port, clock, **kw):
    return ModbusBattery(cfg("battery", port, **kw), clock, max_power_kw=375.0)


# --------------------------------------------------------------------------- SunSpec


async def test_battery_is_steered_through_model_124_and_integrates_soc(battery_server, clock):
    b = battery(battery_server.port, clock, revert_s=30)
    r = await b.read()
    assert (r.soc_frac, r.power_kw, r.fault) == (0.5, 0.0, None)
    await b.set_power_kw(-100.0)  # charge
    assert battery_server.image.get_raw(124, "StorCtl_Mod") == 3
    assert battery_server.image.get_raw(124, "InOutWRte_RvrtTms") == 30
    assert battery_server.commanded_kw() == pytest.approx(-100.0)
    await clock.advance(1800)
    r = await b.read()
    assert r.soc_frac == pytest.approx(0.6, abs=1e-3)  # 50 kWh into 500 kWh
    assert r.power_kw == pytest.approx(-100.0)
    await b.set_power_kw(60.0)  # discharge
    await clock.advance(3600)
    r = await b.read()
    assert r.power_kw == pytest.approx(60.0)
    assert r.soc_frac == pytest.approx(0.48, abs=1e-3)
    assert [round(kw) for _, kw in battery_server.setpoints] == [-100, 60]


async def test_check_names_the_models_and_the_maker(battery_server, clock):
    out = await battery(battery_server.port, clock).check()
    assert out["sunspec_base"] == 40000
    assert [m["id"] for m in out["models"]] == [1, 124, 802]
    assert out["common"]["Mn"] == "TestBatt"
    assert out["values"]["soc_pct"] == pytest.approx(50.0)
    assert out["fault"] is None


@pytest.mark.parametrize("base", [0, 50000])
async def test_sunspec_map_found_at_the_other_bases(servers, clock, base):
    inv = await servers(InverterServer(lambda: 12.5, base=base))
    d = ModbusPVInverter(cfg("pv", inv.port), clock, max_power_kw=300)
    assert await d.read_pv_kw() == pytest.approx(12.5)
    assert d.sunspec.base == base


async def test_several_inverters_are_summed_and_one_fault_faults_the_sum(servers, clock):
    a = await servers(InverterServer(lambda: 30.0))
    b = await servers(InverterServer(lambda: 45.0))
    group = PVGroup([ModbusPVInverter(cfg("pv", s.port, name=f"pv-{i}"), clock, max_power_kw=300)
                     for i, s in enumerate((a, b))])  # fmt: skip
    assert await group.read_pv_kw() == pytest.approx(75.0)
    b.mode = "exception"
    await clock.advance(10)  # past the stale window (3 x 1 s + 0.3 s)
    with pytest.raises(DeviceFault, match=r"pv-1.*Modbus exception 4 \(device failure\)"):
        await group.read_pv_kw()


async def test_meter_sign_convention(servers, clock):
    m = await servers(MeterServer(lambda: -25.0))  # the device says -25 kW
    imp = ModbusMeter(cfg("meter", m.port), clock, max_power_kw=1200)
    assert (await imp.read()).export_kw == pytest.approx(25.0)
    exp = ModbusMeter(cfg("meter", m.port, sign="export_positive"), clock, max_power_kw=1200)
    assert (await exp.read()).import_kw == pytest.approx(25.0)


async def test_small_negative_pv_reads_zero_a_large_one_is_garbage(servers, clock):
    kw = {"v": -2.0}
    inv = await servers(InverterServer(lambda: kw["v"]))
    d = ModbusPVInverter(cfg("pv", inv.port), clock, max_power_kw=300)  # -6 kW tolerated
    assert await d.read_pv_kw() == 0.0
    kw["v"] = -50.0
    await clock.advance(10)
    with pytest.raises(DeviceFault, match="out of range"):
        await d.read_pv_kw()


# --------------------------------------------------------------------------- faults


async def test_timeout_is_ridden_through_until_stale_then_faulted_and_recovers(
    battery_server, clock
):
    b = battery(battery_server.port, clock, poll_interval_s=1.0, stale_after_s=5.0)
    assert (await b.read()).fault is None
    battery_server.mode = "timeout"
    await clock.advance(2)
    r = await b.read()  # one lost answer: the last good reading still holds
    assert r.fault is None and r.soc_frac == pytest.approx(0.5)
    await clock.advance(4)
    r = await b.read()
    assert r.fault.startswith("stale: no good reading for 6 s (timeout after 0.3 s")
    assert r.power_kw == 0.0  # planned without it
    battery_server.mode = "ok"
    await clock.advance(1)
    assert (await b.read()).fault is None


async def test_never_answering_device_is_faulted_at_once(battery_server, clock):
    battery_server.mode = "timeout"
    r = await battery(battery_server.port, clock).read()
    assert r.fault == "timeout after 0.3 s reading holding 40000+2"


async def test_refused_connection(servers, clock):
    inv = await servers(InverterServer(lambda: 1.0))
    port = inv.port
    await inv.stop()
    d = ModbusPVInverter(cfg("pv", port), clock, max_power_kw=300)
    with pytest.raises(DeviceFault, match=f"cannot connect to 127.0.0.1:{port}"):
        await d.read_pv_kw()


async def test_not_implemented_soc_faults_the_battery_and_it_is_asked_to_idle(
    battery_server, clock
):
    b = battery(battery_server.port, clock, stale_after_s=2.0)
    await b.set_power_kw(-50.0)
    assert (await b.read()).fault is None
    im = battery_server.image
    battery_server.update = lambda: None  # frozen: the device stops updating SoC ...
    im.set_raw(802, "SoC", 0xFFFF)  # ... and says "not implemented"
    await clock.advance(3)
    r = await b.read()
    assert r.fault.startswith("stale") and "SoC (802 SoC): not implemented" in r.fault
    assert (r.power_kw, b.state().values["soc_pct"]) == (0.0, 50.0)
    # reachable, so it was told to go idle (window 0..0)
    assert im.get_raw(124, "InWRte") == 0 and im.get_raw(124, "OutWRte") == 0


async def test_frozen_heartbeat_faults_the_battery(battery_server, clock):
    im = battery_server.image
    b = battery(battery_server.port, clock, stale_after_s=5.0)
    for hb in (1, 3, 5):  # the battery counts seconds ...
        im.set_raw(802, "Hb", hb)
        assert (await b.read()).fault is None
        await clock.advance(2)
    await clock.advance(2)  # ... then stops: it answers, but its readings are frozen
    assert (await b.read()).fault is None  # 4 s: within the stale window
    await clock.advance(2)
    r = await b.read()
    assert r.fault == "frozen: heartbeat (802 Hb) has not moved for 6 s"
    assert r.power_kw == 0.0


async def test_device_reported_fault_state(battery_server, clock):
    battery_server.image.set_raw(802, "State", 99)
    r = await battery(battery_server.port, clock).read()
    assert r.fault == "the battery reports FAULT (802 State)"


async def test_not_implemented_scale_factor_and_out_of_range(servers, clock):
    inv = await servers(InverterServer(lambda: 10.0))
    inv.update = lambda: None  # W stays as it is
    inv.image.set_raw(103, "W_SF", 0x8000)
    with pytest.raises(DeviceFault, match="W \\(103\\): not implemented"):
        await ModbusPVInverter(cfg("pv", inv.port), clock, max_power_kw=300).read_pv_kw()
    m = await servers(MeterServer(lambda: 3000.0))  # 3 MW at a 400 kW connection
    with pytest.raises(DeviceFault, match="W \\(203\\): 3000 out of range \\[-1200, 1200\\]"):
        await ModbusMeter(cfg("meter", m.port), clock, max_power_kw=1200).read()


# --------------------------------------------------------------------------- register maps


async def test_profile_register_map_float32_input_registers_and_nan(servers, clock):
    from megastation.core.config import parse_station

    img = RawImage(0, 100)
    img.put(52, encode(-1234.5, "float32"))  # SDM630 total system power, W
    srv = await servers(DeviceServer(img))
    d = _one_device(parse_station, {"kind": "meter", "host": "127.0.0.1", "port": srv.port,
                                    "model": "eastron-sdm630", "timeout_s": 0.3})  # fmt: skip
    m = ModbusMeter(d, clock, max_power_kw=1200)
    assert (await m.read()).export_kw == pytest.approx(1.2345)
    img.put(52, [0x7FC0, 0x0000])  # NaN
    await clock.advance(10)
    with pytest.raises(DeviceFault, match="power_w: not a finite number"):
        await m.read()


async def test_inline_register_map_battery_little_word_order_and_setpoint(servers, clock):
    img = RawImage(1000, 20)
    img.put(1000, [0, 0])
    img.put(1002, encode(73.5, "float32", word_order="little"))  # SoC %
    img.put(1004, encode(-20000, "int32", word_order="little"))  # W, charge positive: -20 kW
    srv = await servers(DeviceServer(img))
    c = cfg("battery", srv.port, model="registers", word_order="little", sign="charge_positive",
            registers={"soc_pct": RegisterSpec(1002, "float32"),
                       "power_w": RegisterSpec(1004, "int32"),
                       "setpoint_w": RegisterSpec(1006, "int32", scale=10.0)})  # fmt: skip
    b = ModbusBattery(c, clock, max_power_kw=375.0)
    r = await b.read()
    assert (r.soc_frac, r.power_kw) == (pytest.approx(0.735), pytest.approx(20.0))  # discharging
    await b.set_power_kw(-30.0)  # charge 30 kW = +30000 W in the device's sign, /10 per unit
    assert srv.writes == [(1006, encode(3000, "int32", word_order="little"))]
    ro = ModbusBattery(dataclasses.replace(c, registers={k: v for k, v in c.registers.items()
                                                         if k != "setpoint_w"}), clock,
                       max_power_kw=375.0)  # fmt: skip
    with pytest.raises(DeviceFault, match="not steerable"):
        await ro.set_power_kw(10.0)


def _one_device(parse_station, device: dict) -> DeviceConfig:
    import tomllib

    from megastation.core.config import seeds_dir

    data = tomllib.loads((seeds_dir() / "gwangju-donggu.toml").read_text())
    data["devices"] = [device]
    return parse_station(data, "station.toml").devices[0]
