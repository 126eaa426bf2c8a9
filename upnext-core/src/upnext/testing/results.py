"""`ResultStoreConformance`: results are kept, shared, waited for and expire.

Tests take the `results` fixture (the broker itself unless overridden) and
write through `put_results`, addressed to ``results.reply_address()`` as core
does at submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from upnext.broker.protocol import ResultStore, ResultWrite
from upnext.testing._support import Timing, new_id, violated

__all__ = ["ResultStoreConformance"]


def _write(store: ResultStore, queue: str, job_id: str, *, ttl: float = 60.0) -> ResultWrite:
    data = b"\x00result\xff" + job_id.encode()
    return ResultWrite(job_id, queue, data, ttl, store.reply_address())


async def _get(store: ResultStore, job_id: str, queue: str, *, wait: float) -> bytes | None:
    """get_result, failing (not hanging) if it overruns its wait by 2 s."""
    try:
        async with asyncio.timeout(wait + 2.0):
            return await store.get_result(job_id, queue=queue, wait=wait)
    except TimeoutError:
        pytest.fail(violated(f"get_result(wait={wait}) must return within its wait"))


class ResultStoreConformance:
    """The `upnext.broker.ResultStore` contract: non-destructive, multiplexed waits."""

    @pytest.mark.asyncio
    async def test_put_then_get_roundtrip(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A stored result reads back byte for byte; an unknown job reads None."""
        writes = [_write(results, upnext_queue, new_id()) for _ in range(3)]
        await results.put_results(writes)
        for write in writes:
            got = await _get(results, write.job_id, upnext_queue, wait=timing.delay(2.0))
            assert got == write.data, violated("a stored result must read back unchanged")
        missing = await _get(results, new_id(), upnext_queue, wait=0.0)
        assert missing is None, violated("get_result of a job without a result must be None")

    @pytest.mark.asyncio
    async def test_get_is_non_destructive(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Reading a result leaves it: two reads and two concurrent waiters all get it."""
        write = _write(results, upnext_queue, new_id())
        waiters = [
            asyncio.create_task(_get(results, write.job_id, upnext_queue, wait=timing.delay(5.0)))
            for _ in range(2)
        ]
        await asyncio.sleep(timing.delay(0.1))
        await results.put_results([write])
        got = await asyncio.gather(*waiters)
        assert got == [write.data, write.data], violated(
            "every waiter on a job must get its result (reads are non-destructive)"
        )
        for _ in range(2):
            again = await _get(results, write.job_id, upnext_queue, wait=timing.delay(1.0))
            assert again == write.data, violated(
                "a result must stay readable after it was read (reads are non-destructive)"
            )

    @pytest.mark.asyncio
    async def test_waiter_wakes_when_result_is_put(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A waiter blocked in get_result returns within 0.2 s of the result being put."""
        write = _write(results, upnext_queue, new_id())
        waiter = asyncio.create_task(
            _get(results, write.job_id, upnext_queue, wait=timing.delay(10.0))
        )
        await asyncio.sleep(timing.delay(0.2))
        assert not waiter.done(), violated("get_result must wait while there is no result")
        await results.put_results([write])
        put = time.monotonic()
        got = await waiter
        late = time.monotonic() - put
        assert got == write.data, violated("a waiter must get the result put while it waits")
        assert late <= timing.tolerance(0.2), violated(
            f"a waiter must wake promptly when its result is put ({late:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_wait_times_out_with_none(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """get_result with no result returns None after about `wait` s, not early or late."""
        wait = timing.delay(0.5)
        started = time.monotonic()
        got = await _get(results, new_id(), upnext_queue, wait=wait)
        elapsed = time.monotonic() - started
        assert got is None, violated("a wait for a missing result must return None")
        assert elapsed >= wait * 0.9, violated(
            f"get_result must wait for its full wait ({elapsed:.3f} s < {wait:.3f} s)"
        )
        assert elapsed <= wait + timing.tolerance(0.3), violated(
            f"get_result must return on time when its wait runs out ({elapsed:.3f} s)"
        )

    @pytest.mark.asyncio
    async def test_result_expires_after_ttl(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A result is readable during its ttl and gone after it."""
        ttl = timing.delay(1.0)
        write = _write(results, upnext_queue, new_id(), ttl=ttl)
        await results.put_results([write])
        stored = time.monotonic()
        got = await _get(results, write.job_id, upnext_queue, wait=timing.delay(0.5))
        assert got == write.data, violated("a result must be readable within its ttl")
        await asyncio.sleep(max(0.0, stored + ttl + timing.tolerance(0.3) - time.monotonic()))
        gone = await _get(results, write.job_id, upnext_queue, wait=0.0)
        assert gone is None, violated("a result must be gone once its ttl has passed")

    @pytest.mark.asyncio
    async def test_many_concurrent_waiters(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Fifty waiters on different jobs each get their own result from one batched put."""
        writes = [_write(results, upnext_queue, new_id()) for _ in range(50)]
        waiters = [
            asyncio.create_task(_get(results, w.job_id, upnext_queue, wait=timing.delay(10.0)))
            for w in writes
        ]
        await asyncio.sleep(timing.delay(0.2))
        await results.put_results(writes)
        put = time.monotonic()
        got = await asyncio.gather(*waiters)
        assert got == [w.data for w in writes], violated(
            "each of many concurrent waiters must get its own job's result"
        )
        assert time.monotonic() - put <= timing.tolerance(1.0), violated(
            "many concurrent waiters must all wake promptly"
        )

    @pytest.mark.asyncio
    async def test_cancelled_wait_leaves_store_usable(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """Cancelling a waiting get_result disturbs neither other waiters nor later reads."""
        write = _write(results, upnext_queue, new_id())
        cancelled = asyncio.create_task(
            _get(results, write.job_id, upnext_queue, wait=timing.delay(10.0))
        )
        survivor = asyncio.create_task(
            _get(results, write.job_id, upnext_queue, wait=timing.delay(10.0))
        )
        await asyncio.sleep(timing.delay(0.1))
        cancelled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancelled
        await results.put_results([write])
        got = await survivor
        assert got == write.data, violated("cancelling one wait must not disturb another waiter")
        again = await _get(results, write.job_id, upnext_queue, wait=timing.delay(1.0))
        assert again == write.data, violated("the store must stay usable after a cancelled wait")

    @pytest.mark.asyncio
    async def test_cancelled_wait_ends_at_once(
        self, results: ResultStore, upnext_queue: str, timing: Timing
    ) -> None:
        """A cancelled get_result raises CancelledError at once, whatever it was doing.

        Cancelled 0 to 4 ms after it starts, 40 times (fresh job ids): a wait
        is cancelled in each of its early steps (a first read, a subscription
        being confirmed). ``asyncio.wait_for`` on Python 3.11 swallows a
        cancellation that lands as what it waits for completes; such a wait
        would run on to its full `wait`.
        """
        wait = timing.delay(3.0)
        for i in range(40):
            waiter = asyncio.create_task(_get(results, new_id(), upnext_queue, wait=wait))
            await asyncio.sleep(i % 5 / 1000)
            waiter.cancel()
            started = time.monotonic()
            with contextlib.suppress(asyncio.CancelledError):
                got = await waiter
                pytest.fail(violated(f"a cancelled get_result must not return (it gave {got!r})"))
            took = time.monotonic() - started
            assert took <= timing.tolerance(0.5), violated(
                f"a cancelled get_result must end at once ({took:.2f} s)"
            )
