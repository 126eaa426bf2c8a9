"""The consumer's receive loop: what it keeps between receives."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid

import upnext

MIB = 1024 * 1024


async def test_a_finished_jobs_body_is_not_kept_by_the_receive_loop() -> None:
    """Once a 4 MiB job is done, the worker, idle in its next receive, holds none of it."""
    worker = upnext.Worker(
        "big", broker=f"memory://{uuid.uuid4().hex}", max_payload=8 * MIB, receive_wait=5.0
    )

    @worker.task
    async def measure(blob: str) -> int:
        return len(blob)

    async with worker:
        await measure.wait(blob="")  # warm: the loop's first receive and the waiter are set up
        tracemalloc.start()
        try:
            future = await measure.submit(blob="a" * (4 * MIB))
            assert await future.value(timeout=5.0) == 4 * MIB
            del future
            await asyncio.sleep(0.3)  # the settle is done; the loop waits in its next receive
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # The job's body (its bytes, kept by a delivery) would show up as 4 MiB.
    assert held < MIB, f"{held / MIB:.1f} MiB still held after the job finished"


async def test_stopping_cancels_again_a_body_that_swallowed_its_timeout() -> None:
    """A body that caught its timeout's cancellation is cancelled again at stop, not waited out."""
    worker = upnext.Worker(
        "again", broker=f"memory://{uuid.uuid4().hex}", shutdown_grace=0.1, load_plugins=False
    )
    swallowed = asyncio.Event()

    @worker.task(timeout=0.1)
    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(30)  # keeps going after its timeout

    await worker.start()
    await stubborn.submit()
    await asyncio.wait_for(swallowed.wait(), 5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await worker.aclose()
    assert loop.time() - started < 2.0  # not ABANDON_AFTER (5 s) or the body's 30 s
