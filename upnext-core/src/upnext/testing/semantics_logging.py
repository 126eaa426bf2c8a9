"""`LoggingSemantics`: the lines a worker logs, through a real worker on your broker.

Covers docs/operations.md (Logging): one INFO line per attempt's outcome on
the ``upnext.job`` logger, each naming the job id, and a start banner on
``upnext.worker`` that never shows a password.
"""

from __future__ import annotations

import logging

import pytest

import upnext
from upnext.broker.redact import redact_url, url_secrets
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    need_dlq,
    violated,
    wait_until,
)

__all__ = ["LoggingSemantics"]

LIMIT = 5.0  # seconds any single wait in these tests may take before it is a failure


def _job_lines(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    """The INFO-or-above records of `upnext.job` about `job_id`."""
    return [
        r
        for r in caplog.records
        if r.name == "upnext.job"
        and r.levelno >= logging.INFO
        and getattr(r, "job_id", None) == job_id
    ]


class LoggingSemantics(SemanticsBase):
    """What a worker logs, as docs/operations.md describes it."""

    @pytest.mark.asyncio
    async def test_two_retries_then_success_log_three_lines_with_the_job_id(
        self, make_worker: WorkerFactory, timing: Timing, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A job failing twice, then succeeding: exactly 3 INFO lines, each with its id."""
        caplog.set_level(logging.INFO, logger="upnext")
        worker = make_worker()
        failures = {"left": 2}

        @worker.task(retries=3, retry_delay=timing.delay(0.02), retry_backoff=1.0)
        async def flaky() -> str:
            if failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("upstream refused")
            return "done"

        async with worker:
            job = await flaky.submit()
            await job.value(timeout=timing.tolerance(LIMIT))
            await wait_until(
                lambda: len(_job_lines(caplog, job.job_id)) >= 3,
                within=timing.tolerance(LIMIT),
                what="the third outcome line",
            )
            await worker.join(timeout=timing.tolerance(LIMIT))
        lines = _job_lines(caplog, job.job_id)
        assert [getattr(r, "outcome", None) for r in lines] == [
            "retrying",
            "retrying",
            "succeeded",
        ], violated("each attempt's outcome is one INFO line on upnext.job")
        assert all(r.levelno == logging.INFO for r in lines)
        assert all(job.job_id in r.getMessage() for r in lines), violated(
            "each outcome line names the job id"
        )
        assert "upstream refused" in lines[0].getMessage()
        assert [getattr(r, "attempt", None) for r in lines] == [1, 2, 3]

    @pytest.mark.asyncio
    async def test_dead_lettered_job_logs_its_reason(
        self, make_worker: WorkerFactory, timing: Timing, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A job out of attempts: one INFO line saying dead-lettered and why."""
        caplog.set_level(logging.INFO, logger="upnext")
        worker = make_worker()

        @worker.task
        async def broken() -> None:
            raise ValueError("bad input")

        async with worker:
            await need_dlq(worker)
            job = await broken.submit()
            with pytest.raises(upnext.TaskExecutionError):
                await job.value(timeout=timing.tolerance(LIMIT))
            await wait_until(
                lambda: bool(_job_lines(caplog, job.job_id)),
                within=timing.tolerance(LIMIT),
                what="the dead-letter line",
            )
        (line,) = _job_lines(caplog, job.job_id)
        assert getattr(line, "outcome", None) == "dead_lettered"
        assert "retries exhausted" in line.getMessage()
        assert "ValueError: bad input" in line.getMessage()

    @pytest.mark.asyncio
    async def test_start_banner_hides_the_password(
        self, make_worker: WorkerFactory, broker_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The start banner names the broker with its password hidden, and the tasks."""
        caplog.set_level(logging.INFO, logger="upnext")
        worker = make_worker(concurrency=3)

        @worker.task
        async def noop() -> None:
            return None

        async with worker:
            pass
        banners = [r.getMessage() for r in caplog.records if "started: id" in r.getMessage()]
        assert len(banners) == 1, violated("a worker logs one start banner")
        assert redact_url(broker_url) in banners[0]
        assert "concurrency 3" in banners[0]
        assert noop.name in banners[0]
        for secret in url_secrets(broker_url):  # as a URL's password, or a query's value
            for shown in (f":{secret}@", f"={secret}"):
                assert shown not in caplog.text, violated("no password is ever logged")
