"""Running a received job: a job for a task this worker lacks is dead-lettered, and logged."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import upnext


async def test_a_job_for_an_unknown_task_is_logged_with_the_known_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"memory://unknown-{uuid.uuid4().hex}"
    producer = upnext.Worker("q", broker=url, load_plugins=False)
    consumer = upnext.Worker("q", broker=url, load_plugins=False, receive_wait=0.05)

    @producer.task(name="app.x")
    async def wanted() -> None: ...

    @consumer.task(name="__main__.x")
    async def registered() -> None: ...

    async with consumer:  # the producer only submits: it never consumes
        with caplog.at_level(logging.WARNING, logger="upnext.worker"):
            future = await wanted.submit()
            for _ in range(100):
                if await consumer.dlq.count():
                    break
                await asyncio.sleep(0.02)
    await producer.aclose()
    assert f"job {future.job_id} dead-lettered: no task named 'app.x'" in caplog.text
    assert "(it knows: __main__.x)" in caplog.text
