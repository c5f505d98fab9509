"""Station configuration: the seed loads, and every mistake names its field and file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import ConfigError, load_station, parse_station


def test_seed_station_is_a_plausible_mega_station(station):
    assert station.site.timezone == "Asia/Seoul"
    assert 150 <= station.pv_peak_kw <= 250
    assert station.battery is not None and station.battery.capacity_kwh == pytest.approx(500)
    dc = [c for c in station.chargers if c.kind == "DC"]
    ac = [c for c in station.chargers if c.kind == "AC"]
    assert dc and ac and all(100 <= c.max_power_kw <= 200 for c in dc)
    # The grid connection is smaller than the chargers' sum: that is why we steer.
    assert station.site.grid_import_limit_kw < sum(c.max_power_kw for c in station.chargers)
    for c in dc:
        assert c.cabinet is None or station.cabinet(c.cabinet) is not None


def _mutate(seed_path: Path, edit) -> dict:
    data = tomllib.loads(seed_path.read_text())
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["chargers"][2].__setitem__("max_power_kw", -5), "chargers[2].max_power_kw"),
        (lambda d: d["chargers"][0].__setitem__("kind", "XX"), "chargers[0].kind"),
        (lambda d: d["chargers"][0].__setitem__("cabinet", "nope"), "chargers[0].cabinet"),
        (lambda d: d["chargers"][0].__setitem__("max_powr_kw", 5), "chargers[0].max_powr_kw"),
        (lambda d: d["site"].__setitem__("timezone", "Mars/Olympus"), "site.timezone"),
        (lambda d: d["site"].__setitem__("latitude", 123), "site.latitude"),
        (lambda d: d["site"].__setitem__("dispatch_step_min", 7), "site.dispatch_step_min"),
        (lambda d: d["site"].pop("grid_import_limit_kw"), "site.grid_import_limit_kw"),
        (lambda d: d["battery"].__setitem__("soc_min_frac", 0.99), "battery.soc_min_frac"),
        (lambda d: d["battery"].__setitem__("capacity_kwh", "big"), "battery.capacity_kwh"),
        (lambda d: d["pv_arrays"][1].__setitem__("tilt_deg", 120), "pv_arrays[1].tilt_deg"),
        (
            lambda d: d["tariff"]["seasons"]["winter"].__setitem__("months", [11, 12]),
            "tariff.seasons.months",
        ),
        (lambda d: d["chargers"].append(dict(d["chargers"][0])), "chargers[7].id"),
    ],
)
def test_bad_values_name_the_field(seed_path, edit, field):
    data = _mutate(seed_path, edit)
    with pytest.raises(ConfigError) as err:
        parse_station(data, "station.toml")
    assert f"station.toml: {field}" in str(err.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_station(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\nname = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_station(bad)


def test_cli_config_check(seed_path, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["config", "check", str(seed_path)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "200 kWp" in ok.output
    broken = tmp_path / "broken.toml"
    broken.write_text(seed_path.read_text().replace("capacity_kwh = 500.0", "capacity_kwh = -1.0"))
    bad = runner.invoke(main, ["config", "check", str(broken)])
    assert bad.exit_code == 1
    assert "broken.toml: battery.capacity_kwh: must be > 0" in bad.output
    assert "Traceback" not in bad.output
