"""The live weather forecast feed: a recorded Open-Meteo response served from 127.0.0.1,
provider faults, fallbacks, storage, and the controller planning with it (issue #12).

``tests/data/open_meteo_forecast.json`` is in Open-Meteo's documented ``/v1/forecast``
shape (``minutely_15`` and ``hourly`` blocks, GMT times, wind in km/h as the API
default): the first three days of ``seeds/weather/mixed-week.csv`` placed on
2026-06-15..17 local time (from 2026-06-14T15:15Z), DNI/DHI by Erbs (DNI above
1000 W/m² at low sun set to 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import urllib.parse
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasts.openmeteo import forecast_url, get_open_meteo, parse_open_meteo
from forecasts.weather import WeatherError
from megastation.control.controller import Controller
from megastation.control.pv_forecast import station_forecast
from megastation.control.weather_feed import WeatherFeed
from megastation.core.config import ConfigError, WeatherFeedConfig, parse_station
from megastation.sim.gateway import DirectGateway
from megastation.store import control as cr
from megastation.store.flows import FlowStep, record_flows
from megastation.store.forecasts import latest_weather, load_issued
from tests.conftest import T0

FIXTURE = Path(__file__).parent.parent / "data" / "open_meteo_forecast.json"
BODY = FIXTURE.read_bytes()
TIMEOUT_S = 5.0  # bound on every poll below


class Provider:
    """A local HTTP server answering like Open-Meteo; ``mode`` picks the behaviour."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.queries: list[dict] = []
        self.release = threading.Event()  # a "slow" request waits for it
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.queries.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
                mode = owner.mode
                if mode == "slow":
                    owner.release.wait(TIMEOUT_S)
                    return
                code, body = {
                    "ok": (200, BODY),
                    "down": (503, b"upstream down"),
                    "malformed": (200, b'{"minutely_15": {"time": [1, 2'),
                    "error": (400, b'{"error": true, "reason": "Latitude must be in range"}'),
                }[mode]
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/forecast"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider():
    p = Provider()
    yield p
    p.close()


@pytest.fixture
def feed_station(station, provider):
    cfg = WeatherFeedConfig(url=provider.url, timeout_s=0.5, refresh_min=60, retry_min=5)
    return dataclasses.replace(station, weather=cfg)


async def _until(cond, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + TIMEOUT_S
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- parsing


def test_parse_minutely_15_and_hourly_blocks():
    wx = parse_open_meteo(BODY)  # the finest block present
    assert str(wx.index.tz) == "UTC"
    assert wx.index[1] - wx.index[0] == pd.Timedelta("15min")
    # values label the end of their interval: the row stamped 15:15 starts at 15:00
    assert wx.index[0] == pd.Timestamp("2026-06-14T15:00Z")
    assert set(wx.columns) == {"ghi", "dni", "dhi", "temp_air", "wind_speed", "cloud_cover"}
    doc = json.loads(BODY)
    km_h = doc["minutely_15"]["wind_speed_10m"][0]
    assert wx["wind_speed"].iloc[0] == pytest.approx(km_h / 3.6)
    hourly = parse_open_meteo(BODY, resolution="hourly")
    assert hourly.index[1] - hourly.index[0] == pd.Timedelta("1h")
    noon = pd.Timestamp("2026-06-15T03:00Z")  # 12:00 KST
    assert hourly.loc[noon, "ghi"] == pytest.approx(
        wx.loc[noon : noon + pd.Timedelta("45min"), "ghi"].mean(), abs=0.2
    )


def test_parse_unix_times_nulls_and_trailing_horizon():
    doc = json.loads(BODY)
    block = doc["minutely_15"]
    start = int(pd.Timestamp("2026-06-14T15:15Z").timestamp())
    block["time"] = [start + 900 * i for i in range(len(block["time"]))]
    block["shortwave_radiation"][40] = None  # a gap: interpolated
    for var in (
        "shortwave_radiation",
        "cloud_cover",
        "direct_normal_irradiance",
        "diffuse_radiation",
    ):
        block[var][-8:] = [None] * 8  # the provider's horizon ends before the time axis
    wx = parse_open_meteo(json.dumps(doc), resolution="minutely_15")
    assert len(wx) == len(block["time"]) - 8
    assert np.isfinite(wx["ghi"]).all()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Bad Gateway</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"error": true, "reason": "Parameter x invalid"}', "provider error: Parameter x"),
        (b'{"daily": {}}', "no minutely_15 or hourly block"),
        (
            b'{"hourly": {"time": ["2026-06-15T00:00", "2026-06-15T01:00"], "temperature_2m": [1, 2]}}',
            "needs shortwave_radiation or cloud_cover",
        ),
        (
            b'{"hourly": {"time": ["2026-06-15T00:00", "2026-06-15T01:00"], "cloud_cover": [1]}}',
            "hourly.cloud_cover: not a list as long as time",
        ),
        (b'{"hourly": {"time": ["yesterday", "today"], "cloud_cover": [1, 2]}}', "hourly.time"),
        (
            b'{"hourly": {"time": ["2026-06-15T00:00", "2026-06-15T01:00"], "cloud_cover": ["a", 2]}}',
            "not numbers",
        ),
    ],
)
def test_malformed_responses_raise_weather_errors(body, message):
    with pytest.raises(WeatherError, match=message):
        parse_open_meteo(body, source="provider")


def test_get_open_meteo_over_http(provider, station):
    site = station.pv_site()
    wx = get_open_meteo(provider.url, site, timeout_s=2)
    assert len(wx) == 288
    q = provider.queries[-1]
    assert q["latitude"] == ["35.1460"] and q["longitude"] == ["126.9230"]
    assert set(q["minutely_15"][0].split(",")) >= {"shortwave_radiation", "temperature_2m"}
    assert q["wind_speed_unit"] == ["ms"] and q["timezone"] == ["GMT"]
    assert forecast_url(provider.url, site, resolution="hourly").count("hourly=") == 1
    for mode, message in [("down", "HTTP 503"), ("malformed", "not JSON"), ("error", "HTTP 400")]:
        provider.mode = mode
        with pytest.raises(WeatherError, match=message):
            get_open_meteo(provider.url, site, timeout_s=2)
    provider.mode = "slow"
    with pytest.raises(WeatherError, match="cannot fetch"):
        get_open_meteo(provider.url, site, timeout_s=0.2)
    with pytest.raises(WeatherError, match="cannot fetch"):
        get_open_meteo("http://127.0.0.1:9/v1/forecast", site, timeout_s=1)  # nobody listens


# --------------------------------------------------------------------------- config


def test_weather_section_in_the_station_toml(station):
    raw = dict(station.raw)
    raw["weather"] = {"url": "https://api.open-meteo.com/v1/forecast", "refresh_min": 30}
    got = parse_station(raw, "x.toml").weather
    assert got.url.endswith("/v1/forecast") and got.refresh_min == 30
    assert got.resolution == "minutely_15" and got.timeout_s == 10
    for bad, field in [
        ({"url": "ftp://x"}, "weather.url"),
        ({"url": "https://x/v1/forecast?latitude=1"}, "weather.url"),
        ({"url": "https://x", "resolution": "daily"}, "weather.resolution"),
        ({"url": "https://x", "refesh_min": 3}, "weather.refesh_min"),
    ]:
        raw["weather"] = bad
        with pytest.raises(ConfigError, match=field):
            parse_station(raw, "x.toml")


# --------------------------------------------------------------------------- the feed


async def test_feed_stores_forecasts_and_serves_them(feed_station, store, clock, provider):
    feed = WeatherFeed(feed_station, store, clock)
    clear = station_forecast(feed_station, T0, 96, 15)
    before = feed.forecaster(feed_station, T0, 96, 15)
    assert before.attrs["source"] == "clearsky"  # nothing fetched, no PV history
    np.testing.assert_allclose(before["pv_ac_kw"], clear["pv_ac_kw"])
    assert await feed.refresh()
    fetched_at, stored = latest_weather(store, before=clock.now())
    assert fetched_at == clock.now() and len(stored) == 288
    fc = feed.forecaster(feed_station, T0, 96, 15)
    assert fc.attrs["source"] == "weather"
    want = station_forecast(feed_station, T0, 96, 15, parse_open_meteo(BODY))
    np.testing.assert_allclose(fc["pv_ac_kw"], want["pv_ac_kw"], atol=0.01)
    assert fc["pv_ac_kw"].sum() < 0.9 * clear["pv_ac_kw"].sum()  # the week's clouds
    issued = load_issued(store, T0, T0 + timedelta(hours=24))
    assert len(issued) == 96
    # a restarted feed plans with the stored forecast
    again = WeatherFeed(feed_station, store, clock)
    assert again.forecaster(feed_station, T0, 96, 15).attrs["source"] == "weather"


@pytest.mark.parametrize("mode", ["down", "malformed", "slow", "error"])
async def test_provider_faults_keep_the_last_good_forecast(
    feed_station, store, clock, provider, mode
):
    feed = WeatherFeed(feed_station, store, clock)
    assert await feed.refresh()
    provider.mode = mode
    clock.set(T0 + timedelta(hours=1))
    assert not await feed.refresh()
    assert feed.status.failures == 1 and feed.status.last_error
    assert feed.forecaster(feed_station, clock.now(), 96, 15).attrs["source"] == "weather"
    # too old: clear sky x the recent measured index
    clock.set(T0 + timedelta(hours=13))
    assert feed.forecaster(feed_station, clock.now(), 96, 15).attrs["source"] == "clearsky"


async def test_fallback_is_clear_sky_times_the_recent_index(feed_station, store, clock, provider):
    provider.mode = "down"
    site = feed_station.pv_site()
    # two days of recorded flows at 60 % of clear sky
    idx = pd.date_range(T0 - timedelta(days=2), T0, freq="15min", inclusive="left")
    clear = station_forecast(feed_station, idx[0], len(idx), 15)["pv_clear_kw"].to_numpy()
    record_flows(
        store,
        [
            FlowStep(t.to_pydatetime(), 900, 0.6 * c, 0.0, 0.0, 0.0, 0.0, 0.6 * c)
            for t, c in zip(idx, clear, strict=True)
        ],
    )
    feed = WeatherFeed(feed_station, store, clock)
    assert not await feed.refresh()
    fc = feed.forecaster(feed_station, T0, 96, 15)
    assert fc.attrs["source"] == "clearsky-index"
    assert fc.attrs["clear_index"] == pytest.approx(0.6, abs=0.01)
    np.testing.assert_allclose(fc["pv_ac_kw"], 0.6 * fc["pv_clear_kw"], atol=0.01)
    assert site.peak_power_kw > 0


async def test_refresh_loop_survives_faults_on_the_injected_clock(
    feed_station, store, clock, provider
):
    provider.mode = "malformed"
    feed = WeatherFeed(feed_station, store, clock)
    task = asyncio.create_task(feed.run())
    try:
        await _until(lambda: feed.status.failures == 1, "the first (failed) fetch")
        provider.mode = "ok"
        await clock.advance(5 * 60)  # retry_min
        await _until(lambda: feed.status.last_ok_at is not None, "the retry")
        assert feed.status.fetches == 2 and not task.done()
        provider.mode = "down"
        await clock.advance(60 * 60)  # refresh_min
        await _until(lambda: feed.status.failures == 2, "the hourly refresh")
        assert not task.done()
    finally:
        task.cancel()


async def test_controller_plans_with_the_fetched_forecast(feed_station, store, clock, provider):
    """Only the forecaster is injected: the controller's forecast call is unchanged."""
    from megastation.store import records

    records.register_station_chargers(store, feed_station)
    feed = WeatherFeed(feed_station, store, clock)
    assert await feed.refresh()
    clock.set(T0 + timedelta(hours=3))  # 12:00 KST
    gw = DirectGateway(feed_station, store, clock)
    ctl = Controller(feed_station, store, clock, gateway=gw, forecaster=feed.forecaster)
    res = await ctl.cycle("test")
    assert res.status == "optimal"
    planned = cr.latest_plan(store)["horizon"]["pv_kw"][:8]
    want = station_forecast(feed_station, clock.now(), 8, 15, parse_open_meteo(BODY))
    clear = station_forecast(feed_station, clock.now(), 8, 15)
    np.testing.assert_allclose(planned, want["pv_ac_kw"], atol=0.01)
    assert np.mean(planned) < 0.7 * clear["pv_ac_kw"].mean()


async def test_feed_status_is_stored_and_shown_by_status(
    feed_station, store, clock, provider, db_path
):
    """The store is the source of truth: `status`/`control-status` (other processes) and
    the console's overview read the feed's last fetch, provider, ok/error and age there."""
    from click.testing import CliRunner

    from megastation.cli import main
    from megastation.store.weather_feed import feed_status

    assert feed_status(store) is None  # no feed has run
    feed = WeatherFeed(feed_station, store, clock)
    assert await feed.refresh()
    st = feed_status(store, T0 + timedelta(minutes=30))
    assert st["provider"] == provider.url and st["ok"] and st["error"] is None
    assert st["attempted_at"] == st["last_ok_at"] == T0.isoformat(timespec="microseconds")
    assert (st["age_min"], st["fetches"], st["failures"], st["source"]) == (30.0, 1, 0, "weather")

    provider.mode = "down"
    for hours in (1, 2):
        clock.set(T0 + timedelta(hours=hours))
        assert not await feed.refresh()
    st = feed_status(store, T0 + timedelta(hours=2))
    assert not st["ok"] and "503" in st["error"]
    assert st["failing_since"] == (T0 + timedelta(hours=1)).isoformat(timespec="microseconds")
    assert st["last_ok_at"] == T0.isoformat(timespec="microseconds")  # the good one is kept
    assert (st["age_min"], st["fetches"], st["failures"]) == (120.0, 3, 2)
    # the forecast falls back once the good one is too old: the source is stored too
    clock.set(T0 + timedelta(hours=13))
    assert feed.forecaster(feed_station, clock.now(), 96, 15).attrs["source"] == "clearsky"
    assert feed_status(store)["source"] == "clearsky"

    runner = CliRunner()
    res = runner.invoke(main, ["--db", str(db_path), "control-status", "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)["weather_feed"]
    assert shown["provider"] == provider.url and shown["ok"] is False
    res = runner.invoke(main, ["--db", str(db_path), "status"])
    assert res.exit_code == 0, res.output
    assert f"weather feed {provider.url}: FAILING since" in res.output
    assert "2 failed" in res.output and "last error:" in res.output
    provider.mode = "ok"
    assert await feed.refresh()
    res = runner.invoke(main, ["--db", str(db_path), "status"])
    assert f"weather feed {provider.url}: ok" in res.output, res.output


def test_console_overview_carries_the_feed_status(feed_station, store, clock):
    from megastation.store.weather_feed import record_feed_status
    from megastation.web.views import Views

    views = Views(feed_station, store, clock)
    assert views.overview(fresh=True)["weather_feed"] is None
    record_feed_status(
        store, provider="http://wx/v1/forecast", attempted_at=T0, ok=False, error="timed out",
        last_ok_at=T0 - timedelta(hours=1), fetches=5, failures=1, source="weather",
    )  # fmt: skip
    feed = views.overview(fresh=True)["weather_feed"]
    assert feed["error"] == "timed out" and feed["age_min"] == 60.0 and not feed["ok"]
