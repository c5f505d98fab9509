"""`[[devices]]` in the station file, the profiles shipped, and `megastation devices [check]`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import ConfigError, parse_station, profile_names, seeds_dir


def seed() -> dict:
    return tomllib.loads((seeds_dir() / "gwangju-donggu.toml").read_text())


def with_devices(*devices: dict) -> dict:
    data = seed()
    data["devices"] = list(devices)
    return data


def test_seed_station_has_no_devices():
    assert parse_station(seed()).devices == ()


def test_devices_parse_with_defaults_and_profiles():
    st = parse_station(
        with_devices(
            {"kind": "battery", "host": "10.0.0.5", "name": "ess"},
            {"kind": "pv", "host": "10.0.0.6", "model": "huawei-sun2000", "unit_id": 2},
            {"kind": "pv", "host": "10.0.0.7", "sign": "generation_negative"},
            {"kind": "meter", "host": "10.0.0.8", "model": "eastron-sdm630",
             "sign": "export_positive", "poll_interval_s": 0.5},
        )
    )  # fmt: skip
    ess, inv, inv2, meter = st.devices
    assert (ess.name, ess.model, ess.port, ess.unit_id, ess.sign) == (
        "ess", "sunspec", 502, 1, "discharge_positive")  # fmt: skip
    assert ess.stale_s == 3 * 1.0 + 2.0
    assert inv.registers["power_w"].address == 32080 and inv.unit_id == 2
    assert inv.name == "pv-1" and inv2.sign == "generation_negative"
    assert meter.registers["power_w"].function == "input" and meter.sign == "export_positive"
    assert "illustrative" in meter.profile_description


def test_every_shipped_profile_loads():
    assert set(profile_names()) >= {"eastron-sdm630", "huawei-sun2000", "victron-gx-battery"}
    for name in profile_names():
        kind = tomllib.loads((seeds_dir().parent / "megastation/devices/profiles" /
                             f"{name}.toml").read_text())["kind"]  # fmt: skip
        parse_station(with_devices({"kind": kind, "host": "h", "model": name}))


@pytest.mark.parametrize(
    ("device", "field", "message"),
    [
        ({"kind": "heater", "host": "h"}, "devices[0].kind", "must be one of battery, pv, meter"),
        ({"kind": "pv"}, "devices[0].host", "is required"),
        ({"kind": "pv", "host": "h", "port": 70000}, "devices[0].port", "<= 65535"),
        ({"kind": "pv", "host": "h", "unit_id": 300}, "devices[0].unit_id", "<= 255"),
        ({"kind": "pv", "host": "h", "model": "nope"}, "devices[0].model", "unknown model 'nope'"),
        ({"kind": "pv", "host": "h", "model": "eastron-sdm630"}, "devices[0].model",
         "describes a meter, not a pv"),
        ({"kind": "meter", "host": "h", "sign": "up"}, "devices[0].sign", "import_positive"),
        ({"kind": "pv", "host": "h", "timeout_s": 0}, "devices[0].timeout_s", "> 0"),
        ({"kind": "pv", "host": "h", "poll_interval_s": "1"}, "devices[0].poll_interval_s",
         "must be a number"),
        ({"kind": "pv", "host": "h", "colour": "red"}, "devices[0].colour", "unknown key"),
        ({"kind": "pv", "host": "h", "model": "registers"}, "devices[0].registers", "is required"),
        ({"kind": "pv", "host": "h", "registers": {}}, "devices[0].registers",
         'needs model = "registers"'),
        ({"kind": "pv", "host": "h", "model": "registers",
          "registers": {"power_w": {"address": 1, "type": "int17"}}},
         "devices[0].registers.power_w.type", "must be one of int16"),
        ({"kind": "pv", "host": "h", "model": "registers",
          "registers": {"soc_pct": {"address": 1, "type": "int16"}}},
         "devices[0].registers.soc_pct", "a pv has no 'soc_pct'"),
        ({"kind": "battery", "host": "h", "model": "registers",
          "registers": {"power_w": {"address": 1, "type": "int16"}}},
         "devices[0].registers.soc_pct", "is required for a battery"),
        ({"kind": "battery", "host": "h", "model": "registers",
          "registers": {"soc_pct": {"address": 1, "type": "uint16"},
                        "setpoint_w": {"address": 5, "type": "int16", "function": "input"}}},
         "devices[0].registers.setpoint_w", "must be a holding register"),
        ({"kind": "pv", "host": "h", "model": "registers",
          "registers": {"power_w": {"address": 65535, "type": "int32"}}},
         "devices[0].registers.power_w.address", "runs past register 65535"),
    ],
)  # fmt: skip
def test_device_errors_name_the_field(device, field, message):
    with pytest.raises(ConfigError) as e:
        parse_station(with_devices(device), "s.toml")
    assert f"s.toml: {field}: " in str(e.value)
    assert message in str(e.value)


def test_device_errors_across_devices():
    with pytest.raises(ConfigError, match=r"devices\[1\].name: duplicate device name 'a'"):
        parse_station(with_devices({"kind": "pv", "host": "h", "name": "a"},
                                   {"kind": "pv", "host": "h", "name": "a"}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"devices\[1\].kind: only one meter"):
        parse_station(with_devices({"kind": "meter", "host": "h"}, {"kind": "meter", "host": "i"}))
    data = with_devices({"kind": "battery", "host": "h"})
    del data["battery"]
    with pytest.raises(
        ConfigError, match=r"devices\[0\].kind: a battery device needs the \[battery\]"
    ):
        parse_station(data)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "station.toml"
    p.write_text((seeds_dir() / "gwangju-donggu.toml").read_text() + text)
    return p


def test_config_check_reports_a_bad_device(tmp_path):
    p = _write(tmp_path, '\n[[devices]]\nkind = "pv"\nhost = "h"\nmodel = "sma"\n')
    r = CliRunner().invoke(main, ["config", "check", str(p)])
    assert r.exit_code != 0 and "devices[0].model: unknown model 'sma'" in r.output


async def test_devices_check_prints_models_values_and_ranges(
    tmp_path, battery_server, meter_server
):
    p = _write(
        tmp_path,
        f'\n[[devices]]\nname = "ess"\nkind = "battery"\nhost = "127.0.0.1"\n'
        f"port = {battery_server.port}\ntimeout_s = 0.3\n"
        f'\n[[devices]]\nname = "grid"\nkind = "meter"\nhost = "127.0.0.1"\n'
        f"port = {meter_server.port}\ntimeout_s = 0.3\n",
    )
    db = tmp_path / "x.db"
    # the CLI runs its own event loop: call it from a worker thread while this loop serves
    import asyncio

    def run(*args):
        return CliRunner().invoke(main, ["--config", str(p), "--db", str(db), "devices", *args])

    r = await asyncio.to_thread(run, "check")
    assert r.exit_code == 0, r.output
    assert "SunSpec map at 40000" in r.output
    assert "model   124 storage_basic" in r.output and "model   802 battery" in r.output
    assert "TestBatt SIM-124" in r.output and "soc_pct 50.00" in r.output
    assert "accepted soc_pct: [0, 100]" in r.output
    assert "net_import_kw 20.00" in r.output
    meter_server.mode = "exception"
    r = await asyncio.to_thread(run, "check", "--json")
    assert r.exit_code == 1
    out = {d["name"]: d for d in json.loads(r.output)}
    assert out["grid"]["fault"].startswith("no SunSpec marker 'SunS' at 40000: Modbus exception 4")
    assert out["ess"]["fault"] is None
    r = await asyncio.to_thread(run, "check", "--device", "nope")
    assert r.exit_code == 2 and "no device 'nope'" in r.output
    listing = await asyncio.to_thread(run)
    assert "ess" in listing.output and "grid" in listing.output
    assert "pv       none" in listing.output
