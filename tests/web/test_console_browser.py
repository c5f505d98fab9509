"""The console in a real headless browser (Playwright with Debian's chromium) against a
running station with simulated chargers: log in, see the connectors and the chart,
lower the grid limit and see the next plan honour it; a viewer cannot change anything.

The screenshot in the README comes from here: ``MEGASTATION_SCREENSHOT=docs/console.png
pytest tests/web/test_console_browser.py`` writes it (otherwise it goes to tmp_path).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from megastation.store import control as cr
from megastation.store import iso
from megastation.store import web as wr
from tests.conftest import T0
from tests.web.conftest import PASSWORD
from tests.web.live import LiveStation

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_S = 60.0  # one factor for every wait of these tests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run)"),
]


async def until(cond, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def live(station, tmp_path):
    async with LiveStation(station, tmp_path / "live.db", T0) as s:
        yield s


async def log_in(browser, live, name: str):
    ctx = await browser.new_context(viewport={"width": 1440, "height": 1100})
    page = await ctx.new_page()
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))  # confirm() of actions
    await page.goto(live.web.url + "login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    await page.wait_for_url(live.web.url, timeout=TIMEOUT_S * 1000)
    return ctx, page


async def test_operator_sees_the_live_station_and_lowers_the_grid_limit(browser, live, tmp_path):
    ctx, page = await log_in(browser, live, "alice")
    ms = TIMEOUT_S * 1000
    # the connectors of the running server, with the simulated cars charging
    for cid in ("GJDG-DC-01", "GJDG-DC-03", "GJDG-AC-01"):
        await page.wait_for_selector(f'#connectors tr[data-charger="{cid}"]', timeout=ms)
    await page.wait_for_function(
        """() => [...document.querySelectorAll('#connectors tbody tr')].filter(
              r => r.cells[2].textContent === 'yes' && r.cells[4].textContent.endsWith('kW')
                   && parseFloat(r.cells[4].textContent) > 0).length >= 2""",
        timeout=ms,
    )
    await page.wait_for_function(  # server-sent events connected
        "() => document.getElementById('live').textContent === 'live'", timeout=ms
    )
    # the chart draws recorded flows (non-empty), and the plan's horizon beside it
    await page.wait_for_function(
        "() => Number(document.getElementById('flows-chart').dataset.points) >= 2", timeout=ms
    )
    await page.wait_for_function(
        "() => Number(document.getElementById('plan-chart').dataset.points) > 0", timeout=ms
    )
    drawn = await page.evaluate(
        "() => window.megastation.flowsChart.data[2].filter(v => v > 0).length"
    )  # car power points > 0
    assert drawn > 0
    assert await page.locator("#flows-chart canvas").count() == 1
    band = await page.evaluate(
        "() => window.megastation.planChart.data[1].filter(v => v !== null).length"
    )  # the plan chart's PV P10 line: the forecast band beside the plan
    assert band > 0
    # lower the grid limit (confirmed in a dialog) and see the next plan honour it
    acted_at = live.clock.now()
    await page.fill("#limit-kw", "60")
    await page.click("#limit-set")
    await page.wait_for_function(
        "() => document.getElementById('action-result').textContent.startsWith('done')",
        timeout=ms,
    )

    def honoured():
        # a cycle already under way when the action landed may plan with 60 kW first (its
        # reason is whatever woke it); the action's own re-plan follows it
        row = live.store.conn.execute(
            "SELECT grid_limit_kw, first_step FROM control_plans WHERE created_at >= ? "
            "AND reason LIKE '%operator_grid_limit%' ORDER BY id LIMIT 1",
            (iso(acted_at),),
        ).fetchone()
        return None if row is None else {"grid_limit_kw": row[0], **json.loads(row[1])}

    plan = await until(honoured, "a plan for the operator's 60 kW limit")
    assert plan["grid_limit_kw"] == 60
    assert plan["grid_import_kw"] <= 60 + 0.5
    (a,) = [x for x in wr.list_actions(live.store) if x["action"] == "grid_limit"]
    assert (a["user_name"], a["via"], a["params"]) == ("alice", "console", {"grid_kw": 60})
    await page.wait_for_function(
        "() => document.getElementById('plan-status').textContent.includes('limit 60 kW')",
        timeout=ms,
    )
    await page.wait_for_function(
        "() => document.getElementById('grid-limit').textContent === '60 kW'", timeout=ms
    )
    shot = Path(os.environ.get("MEGASTATION_SCREENSHOT") or tmp_path / "console.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # the other pages load their tables
    for tab, table in (("sessions", "sessions"), ("chargers", "chargers"), ("actions", "actions")):
        await page.click(f'nav a[data-tab="{tab}"]')
        await page.wait_for_selector(f"#{table} tbody tr", timeout=ms)
    await ctx.close()


async def test_a_viewer_cannot_change_anything(browser, live):
    ctx, page = await log_in(browser, live, "vic")
    ms = TIMEOUT_S * 1000
    await page.wait_for_selector('#connectors tr[data-charger="GJDG-DC-03"]', timeout=ms)
    assert await page.locator("#operator-panel").is_hidden()
    assert await page.locator("button[data-stop]").count() == 0
    await page.click('nav a[data-tab="chargers"]')
    await page.wait_for_selector("#chargers tbody tr", timeout=ms)
    assert await page.locator("button[data-reset]").count() == 0
    # the API refuses the viewer's session, with and without its CSRF token
    csrf = (await (await page.request.get(live.web.url + "api/v1/me")).json())["csrf_token"]
    for headers in ({}, {"X-CSRF-Token": csrf}):
        r = await page.request.post(
            live.web.url + "api/v1/grid-limit", data={"grid_kw": 10}, headers=headers
        )
        assert r.status == 403
        assert "read-only" in (await r.json())["error"]["message"]
    assert live.store.get_setting(cr.GRID_LIMIT_KEY) is None
    assert wr.list_actions(live.store) == []
    await ctx.close()
