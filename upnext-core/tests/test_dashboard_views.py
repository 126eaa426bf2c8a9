"""The dashboard's views in real headless Chromium on memory://: Queues, Running, Workers, Jobs.

A real worker holds two jobs on an event while the page shows them; the
Jobs listing (GET /api/v1/jobs, built elsewhere) is checked against its
contract with a stubbed answer. Every test fails on a console error.
Screenshots go to ``$UPNEXT_SCREENSHOT_DIR`` or the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import upnext
from upnext._statekeys import worker_key
from upnext._tick import encode_registry_entry
from upnext.broker.state import StateWrite
from upnext.testing import needs_modules
from upnext.testing.loopback import serve_in_thread
from upnext.workers import WorkerInfo, live_workers

needs_modules("fastapi", "uvicorn", "playwright")

from playwright.async_api import Page, Route, expect  # noqa: E402
from upnext.server import create_app  # noqa: E402
from upnext.testing.browser import ConsoleErrors, open_page  # noqa: E402


class Live:
    """A server, a running worker holding jobs until `release`, and a page on the server."""

    def __init__(self, base: str, worker: upnext.Worker, page: Page, errors: ConsoleErrors) -> None:
        self.base = base
        self.worker = worker
        self.page = page
        self.errors = errors
        self.release = asyncio.Event()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("UPNEXT_SCREENSHOT_DIR", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    url = f"memory://views-{uuid.uuid4().hex}"
    app = create_app(url, queues=["views"], history_interval=0.25)
    worker = upnext.Worker("views", broker=url, load_plugins=False, concurrency=3)
    with serve_in_thread(app) as base:
        async with open_page() as (page, errors):
            here = Live(base, worker, page, errors)

            @worker.task(name="views.hold")
            async def hold(n: int) -> int:
                await here.release.wait()
                return n

            @worker.task(name="views.ok")
            async def ok(n: int) -> int:
                return n

            @worker.task(name="views.fail", retries=0)
            async def fail(n: int) -> None:
                raise ValueError(f"no {n}")

            async with worker:
                try:
                    yield here
                finally:
                    here.release.set()


async def _load(live: Live) -> list[str]:
    """3 ok, 1 dead-lettered, 2 held running: the held jobs' ids."""
    for future in [await live.worker.tasks["views.ok"].submit(i) for i in range(3)]:
        await future.result(timeout=5)
    with pytest.raises(upnext.TaskExecutionError):
        await (await live.worker.tasks["views.fail"].submit(9)).result(timeout=5)
    return [(await live.worker.tasks["views.hold"].submit(i)).job_id for i in range(2)]


async def test_queues_running_and_workers_show_the_live_worker(live: Live, shots: Path) -> None:
    """Counts, the hour's totals and chart, each running job under its worker, links between."""
    held = await _load(live)
    page = live.page
    await page.goto(f"{live.base}/#queues")
    row = page.locator("#queues tr[data-queue=views]")
    for cls, value in (("running", "2"), ("dead", "1"), ("processed", "4"), ("failed", "1")):
        await expect(row.locator(f"td.{cls}")).to_have_text(value)
    await expect(page.locator("#chart polyline.running")).to_have_count(1)
    await expect(page.locator("#chart rect.processed").first).to_be_attached()
    await expect(page.locator("#updated")).to_have_text(re.compile(r"^updated \d+ s ago$"))
    await page.screenshot(path=shots / "view-queues.png", full_page=True)
    await page.click("nav a[data-view=running]")
    (entry,) = [w for w in await live_workers(live.worker) if w.name == "views"]
    group = page.locator(f"#running-groups section[data-worker='{entry.worker_id}']")
    for job_id in held:
        await expect(group.locator(f"tr[data-job-id='{job_id}']")).to_contain_text("views.hold")
    await expect(page.locator("#tab-running")).to_have_text("2")
    await page.screenshot(path=shots / "view-running.png", full_page=True)
    await group.locator("h3 a.id").click()
    await expect(page).to_have_url(re.compile(r"#workers/"))
    worker_row = page.locator(f"#workers tr[data-worker='{entry.worker_id}']")
    await expect(worker_row).to_have_class(re.compile("selected"))
    await expect(worker_row.locator("td.busy")).to_have_text("2/3")
    await page.screenshot(path=shots / "view-workers.png", full_page=True)
    await worker_row.locator(f"a[href='#jobs/{held[0]}']").click()
    await expect(page.locator("#job")).to_be_visible()
    await expect(page.locator("#job-meta")).to_contain_text("active")
    await expect(page.locator(f"#job-meta a[href='#workers/{entry.worker_id}']")).to_be_visible()


async def test_a_stale_worker_is_marked(live: Live) -> None:
    """A registry entry whose last beat is 10 s old shows as stale."""
    state = (await live.worker.client()).require_state("test")
    beat = time.time() - 10
    info = WorkerInfo(
        worker_id="stuck-1", name="stuck", host="h", pid=1, queues=["views"], concurrency=1,
        started_at=beat, beat_at=beat, running_count=0, running=[],
    )  # fmt: skip
    await state.state_put([StateWrite(worker_key("stuck-1"), encode_registry_entry(info), 30)])
    await live.page.goto(f"{live.base}/#workers")
    row = live.page.locator("#workers tr[data-worker='stuck-1']")
    await expect(row).to_have_class(re.compile("stale"))
    await expect(row.locator("td.heartbeat")).to_contain_text("stale")


async def test_polling_keeps_an_open_dialog_and_typed_filters(live: Live, shots: Path) -> None:
    """Two refreshes later the entry dialog is still open and the half-typed filters kept."""
    await _load(live)
    page = live.page
    await page.goto(f"{live.base}/#dlq")
    await expect(page.locator("#entries tbody tr")).to_have_count(1)
    await page.screenshot(path=shots / "view-dlq.png", full_page=True)
    await page.fill("#filter-function", "views.fa")
    await page.fill("#filter-job", "abc")
    await page.locator("#entries tbody tr").first.click()
    await expect(page.locator("#entry")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"#dlq/"))
    before = await page.locator("#updated").text_content()
    await expect(page.locator("#updated")).not_to_have_text(before or "", timeout=5000)
    await page.wait_for_timeout(2500)  # at least one more 2 s poll
    await expect(page.locator("#entry")).to_be_visible()
    await expect(page.locator("#entry-traceback")).to_contain_text("no 9")
    assert await page.input_value("#filter-function") == "views.fa"
    assert await page.input_value("#filter-job") == "abc"
    await page.click("#entry-close")
    await expect(page).to_have_url(re.compile(r"#dlq$"))


def _jobs_page(url: str) -> dict[str, object]:
    item = {
        "job_id": "j-1", "status": "failed", "queue": "views", "function": "app.charge_card",
        "attempt": 1, "worker_id": "w-1", "enqueued_at": "2026-12-07T05:00:00Z", "due_at": None,
        "started_at": "2026-12-07T05:00:01Z", "finished_at": "2026-12-07T05:00:02Z",
        "duration_ms": 1000, "error": {"type": "ValueError", "message": "declined"},
        "parent_id": "p-1", "dlq_entry_id": "e-1",
    }  # fmt: skip
    return {"items": [item], "next_cursor": None, "source": "results", "exact": True}


async def test_jobs_view_filters_and_links_per_the_listing_contract(
    live: Live, shots: Path
) -> None:
    """Stubbed /api/v1/jobs: the filters are sent, a row's ids link, a 422 shows its detail."""
    page = live.page
    asked: list[str] = []

    async def answer(route: Route) -> None:
        asked.append(route.request.url)
        if "status=queued" in route.request.url:
            detail = "this broker cannot list queued jobs"
            await route.fulfill(status=422, json={"detail": detail})
        else:
            await route.fulfill(json=_jobs_page(route.request.url))

    await page.route(re.compile(r"/api/v1/jobs\?"), answer)
    live.errors.allow("status of 422")
    await page.goto(f"{live.base}/#jobs")
    await page.fill("#jobs-task", "charge")
    await page.select_option("#jobs-status", "failed")
    await page.click("#jobs-filters button[type=submit]")
    row = page.locator("#jobs tr[data-job-id='j-1']")
    await expect(row.locator("td.status")).to_have_text("failed")
    assert any("task=charge" in u and "status=failed" in u for u in asked)
    for href in ("#jobs/j-1", "#workers/w-1", "#jobs/p-1", "#dlq/e-1"):
        await expect(row.locator(f"a[href='{href}']")).to_have_count(1)
    await page.screenshot(path=shots / "view-jobs.png", full_page=True)
    await page.select_option("#jobs-status", "queued")
    await page.click("#jobs-filters button[type=submit]")
    await expect(page.locator("#jobs-message")).to_have_text(
        "Jobs cannot be listed: this broker cannot list queued jobs"
    )
    await page.fill("#jobs-id", "j-404")
    await page.click("#jobs-search button")
    await expect(page.locator("#job-unknown")).to_be_visible()


async def test_jobs_view_against_the_real_listing(live: Live) -> None:
    """The real GET /api/v1/jobs: the three complete jobs listed by status."""
    await _load(live)
    await live.page.goto(f"{live.base}/#jobs")
    await live.page.select_option("#jobs-status", "complete")
    await live.page.click("#jobs-filters button[type=submit]")
    await expect(live.page.locator("#jobs tbody tr[data-status=complete]")).to_have_count(3)


async def test_an_entrys_job_link_opens_the_job_and_keeps_its_url(live: Live) -> None:
    """From a dead-letter entry to its job: one dialog for the other, the URL names the job."""
    await _load(live)
    page = live.page
    await page.goto(f"{live.base}/#dlq")
    await page.locator("#entries tbody tr").first.click()
    job_link = page.locator("#entry-meta a[href^='#jobs/']").first
    job_id = await job_link.text_content()
    await job_link.click()
    await expect(page.locator("#job")).to_be_visible()
    await expect(page.locator("#entry")).to_be_hidden()
    await expect(page.locator("#job-meta")).to_contain_text("failed")
    await page.wait_for_timeout(300)  # the entry dialog's close event has run
    assert page.url.endswith(f"#jobs/{job_id}")
    await page.click("#job-close")
    await expect(page).to_have_url(re.compile(r"#jobs$"))
