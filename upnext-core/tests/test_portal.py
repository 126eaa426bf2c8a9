"""Portal: how the sync twins reach async code (worker loop, else one background loop)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, cast

import pytest
import upnext
from upnext._context import Context, JobScope, current_scope
from upnext._portal import Portal
from upnext.broker.memory import MemoryBroker
from upnext.errors import ConfigurationError, TaskExecutionError, WaitTimeout


def _worker() -> upnext.Worker:
    url = f"memory://portal-{uuid.uuid4().hex}"
    # The test stands in for the consuming worker, so the "no worker" check stays quiet
    # (it would fire later, on the background loop, during some other test).
    MemoryBroker.from_url(url).workers_attached += 1
    return upnext.Worker("portal", broker=url)


async def _where() -> tuple[asyncio.AbstractEventLoop, str, JobScope | None]:
    return asyncio.get_running_loop(), threading.current_thread().name, current_scope.get()


async def test_call_on_a_thread_running_a_loop_is_refused() -> None:
    portal = Portal(_worker())
    coro = _where()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be a leak
        with pytest.raises(ConfigurationError) as info:
            portal.call(coro)
        gc.collect()
    assert "running an event loop" in str(info.value)
    assert "\n" not in str(info.value)
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # closed, not left dangling


def test_call_from_a_plain_thread_uses_one_background_loop() -> None:
    worker = _worker()
    portal = Portal(worker)
    loop1, thread1, scope1 = portal.call(_where())
    loop2, thread2, _ = portal.call(_where())
    assert loop1 is loop2
    assert loop1.is_running()
    assert thread1 == thread2 == "upnext-sync-portal"
    assert scope1 is None


def test_a_closed_background_loop_is_replaced() -> None:
    portal = Portal(_worker())
    first, _, _ = portal.call(_where())
    first.call_soon_threadsafe(first.stop)
    while first.is_running():
        threading.Event().wait(0.01)
    first.close()
    second, _, _ = portal.call(_where())
    assert second is not first


def test_exceptions_cross_the_portal() -> None:
    async def boom() -> None:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        Portal(_worker()).call(boom())


@dataclass
class _RunningWorker:
    """Just what the portal reads from a worker running a job."""

    loop: asyncio.AbstractEventLoop
    running: bool = True


async def test_inside_a_job_the_call_goes_back_to_the_worker_loop() -> None:
    loop = asyncio.get_running_loop()
    context = Context("j1", 1, 1, "mod.f", "q", None, "j1")
    scope = JobScope(context, cast(Any, _RunningWorker(loop)))

    def sync_task_body() -> tuple[asyncio.AbstractEventLoop, str, JobScope | None]:
        current_scope.set(scope)
        return Portal(_worker()).call(_where())

    ran_on, _, seen_scope = await asyncio.to_thread(sync_task_body)
    assert ran_on is loop
    assert seen_scope is scope  # lineage survives the thread hop


async def test_a_stopped_worker_scope_falls_back_to_the_background_loop() -> None:
    loop = asyncio.get_running_loop()
    context = Context("j1", 1, 1, "mod.f", "q", None, "j1")
    scope = JobScope(context, cast(Any, _RunningWorker(loop, running=False)))

    def body() -> tuple[asyncio.AbstractEventLoop, str, JobScope | None]:
        current_scope.set(scope)
        return Portal(_worker()).call(_where())

    ran_on, thread, seen_scope = await asyncio.to_thread(body)
    assert ran_on is not loop
    assert thread == "upnext-sync-portal"
    assert seen_scope is scope


async def test_submit_sync_refused_inside_async_code() -> None:
    worker = _worker()

    @worker.task
    async def f(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError, match="await the async one"):
        f.submit_sync(x=1)


def test_submit_sync_from_plain_code() -> None:
    worker = _worker()

    @worker.task
    async def f(x: int) -> int:
        return x

    future = f.submit_sync(x=1)
    assert len(future.job_id) == 32
    assert MemoryBroker.from_url(worker.broker_url).pending() == 1


def test_future_sync_twins_cancel_and_wait() -> None:
    worker = _worker()

    @worker.task
    async def f(x: int) -> int:
        return x

    future = f.options(delay=60.0).submit_sync(x=1)
    assert future.cancel_sync() is True
    assert future.cancel_sync() is False  # already gone
    with pytest.raises(TaskExecutionError) as info:
        future.result_sync(timeout=1.0)
    assert info.value.status == "cancelled"
    assert info.value.error == "Cancelled: cancelled before it started"
    with pytest.raises(TaskExecutionError):
        future.value_sync(timeout=1.0)
    assert MemoryBroker.from_url(worker.broker_url).pending() == 0


def test_wait_sync_times_out_without_touching_the_job() -> None:
    worker = _worker()

    @worker.task
    async def f(x: int) -> int:
        return x

    with pytest.raises(WaitTimeout):
        f.wait_sync(x=1, wait_timeout=0.05)
    assert MemoryBroker.from_url(worker.broker_url).pending() == 1
