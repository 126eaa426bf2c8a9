"""The dashboard in real headless Chromium (Playwright) against a live server on memory://.

Load, filter, open an entry (payload, traceback, attempts), replay it and see it
gone, delete with a cancelled then an accepted confirmation, purge, and watch
queue depths refresh. A screenshot is saved (``$UPNEXT_SCREENSHOT_DIR`` or the
test's tmp dir). Chromium is ``$UPNEXT_CHROMIUM`` or ``/usr/bin/chromium``; a
console error fails the test. The other views: ``test_dashboard_views.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import upnext
from upnext.testing import needs_modules
from upnext.testing.loopback import serve_in_thread

needs_modules("fastapi", "uvicorn", "playwright")

from playwright.async_api import Page, expect  # noqa: E402
from upnext.server import create_app  # noqa: E402
from upnext.testing.browser import open_page  # noqa: E402


@pytest.fixture
def broker_url() -> str:
    return f"memory://dashboard-{uuid.uuid4().hex}"


@pytest.fixture
def server(broker_url: str) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; its base URL."""
    with serve_in_thread(create_app(broker_url)) as base:
        yield base


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    directory = Path(os.environ.get("UPNEXT_SCREENSHOT_DIR", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
async def page(server: str) -> AsyncIterator[Page]:
    """A Chromium page; the test fails on any console error or uncaught exception."""
    async with open_page() as (page, _):
        yield page


async def _dead_letters(worker: upnext.Worker) -> None:
    for name, n in (("dash.charge", 2), ("dash.ship", 1)):
        for i in range(n):
            with pytest.raises(upnext.TaskExecutionError):
                await (await worker.tasks[name].submit(i)).result(timeout=5)


def _worker(url: str) -> upnext.Worker:
    worker = upnext.Worker("billing", broker=url, load_plugins=False)

    @worker.task(retries=0, name="dash.charge")
    async def charge(order: int) -> None:
        raise ValueError(f"card declined for order {order}")

    @worker.task(retries=0, name="dash.ship", queue="shipping")
    async def ship(order: int) -> None:
        raise TimeoutError(f"carrier down for order {order}")

    return worker


async def test_dashboard_filter_open_replay_delete_purge(
    page: Page, server: str, broker_url: str, shots: Path
) -> None:
    """The whole DLQ workflow in a real browser, each step checked on screen."""
    rows = page.locator("#entries tbody tr")
    async with _worker(broker_url) as worker:
        await _dead_letters(worker)
        await page.goto(f"{server}/#dlq")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#queues tr[data-queue=billing] td.dead")).to_have_text("2")
        await page.fill("#filter-queue", "shipping")
        await page.click("#filters button[type=submit]")
        await expect(rows).to_have_count(1)
        await page.fill("#filter-queue", "billing")
        await page.click("#filters button[type=submit]")
        await expect(rows).to_have_count(2)
        await _open_and_replay(page, shots)
        await _delete_with_confirmation(page)
        await _purge(page)


async def _open_and_replay(page: Page, shots: Path) -> None:
    row = page.locator("#entries tbody tr").first
    entry_id = await row.get_attribute("data-id")
    await row.click()
    await expect(page.locator("#entry")).to_be_visible()
    await expect(page.locator("#entry-payload")).to_contain_text('"order"')
    await expect(page.locator("#entry-traceback")).to_contain_text("card declined for order")
    await expect(page.locator("#entry-attempts li")).to_have_count(1)
    await expect(page.locator("#entry-attempts li")).to_contain_text("#1 error")
    png = await page.screenshot(path=shots / "dashboard-entry.png", full_page=True)
    assert len(png) > 10_000
    await page.click("#entry-replay")
    await page.click("#confirm-ok")
    await expect(page.locator("#status")).to_contain_text(f"replayed {entry_id} as job")
    await expect(page.locator(f"#entries tr[data-id='{entry_id}']")).to_have_count(0)
    await page.screenshot(path=shots / "dashboard-after-replay.png", full_page=True)


async def _delete_with_confirmation(page: Page) -> None:
    row = page.locator("#entries tbody tr").first
    entry_id = await row.get_attribute("data-id")
    await row.click()
    await page.click("#entry-delete")
    await page.click("#confirm-cancel")  # cancelled: nothing happens
    await expect(page.locator(f"#entries tr[data-id='{entry_id}']")).to_have_count(1)
    await row.click()
    await page.click("#entry-delete")
    await page.click("#confirm-ok")
    await expect(page.locator("#status")).to_have_text(f"deleted {entry_id}")
    await expect(page.locator(f"#entries tr[data-id='{entry_id}']")).to_have_count(0)


async def _purge(page: Page) -> None:
    await page.fill("#filter-queue", "shipping")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#entries tbody tr")).to_have_count(1)
    await page.click("#purge")
    await page.click("#confirm-ok")
    await expect(page.locator("#status")).to_contain_text("purged 1 entries")
    await expect(page.locator("#entries tbody tr")).to_have_count(0)
    await expect(page.locator("#queues tr[data-queue=shipping] td.dead")).to_have_text("0")


async def test_dashboard_pages_and_refreshes_queue_depths(
    page: Page, server: str, broker_url: str
) -> None:
    """Ten per page walks 12 entries in two pages; a new failure shows up without a click."""
    rows = page.locator("#entries tbody tr")
    dead = page.locator("#queues tr[data-queue=billing] td.dead")
    async with _worker(broker_url) as worker:
        charge = worker.tasks["dash.charge"]
        for future in [await charge.submit(i) for i in range(12)]:
            with pytest.raises(upnext.TaskExecutionError):
                await future.result(timeout=5)
        await page.goto(f"{server}/#dlq")
        await page.select_option("#filter-limit", "10")
        await page.click("#filters button[type=submit]")
        await expect(rows).to_have_count(10)
        first_page = {await r.get_attribute("data-id") for r in await rows.all()}
        await page.click("#next-page")
        await expect(rows).to_have_count(2)
        second_page = {await r.get_attribute("data-id") for r in await rows.all()}
        assert not first_page & second_page
        await expect(page.locator("#next-page")).to_be_disabled()
        await page.click("#first-page")
        await expect(rows).to_have_count(10)
        await expect(dead).to_have_text("12")
        with pytest.raises(upnext.TaskExecutionError):
            await (await charge.submit(99)).result(timeout=5)
        await expect(dead).to_have_text("13", timeout=8000)  # the 2 s refresh, no click
