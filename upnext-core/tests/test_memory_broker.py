"""memory:// specifics the conformance suite cannot see: registry, pending, loops."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import upnext
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Ack, DeadLetter, DeadLetterRecord, Envelope, ResultWrite
from upnext.errors import ConfigurationError

T = TypeVar("T")


def _url() -> str:
    return f"memory://mb-{uuid.uuid4().hex}"


def _env(queue: str = "q", delay: float = 0.0) -> Envelope:
    return Envelope(uuid.uuid4().hex, queue, b"{}", delay)


def test_registry_shares_one_broker_per_url() -> None:
    url = _url()
    broker = MemoryBroker.from_url(url)
    assert MemoryBroker.from_url(url) is broker
    assert MemoryBroker.from_url(_url()) is not broker
    assert MemoryBroker(url) is not broker  # constructing directly bypasses the registry
    assert repr(broker) == f"MemoryBroker({url!r})"


def test_registry_is_thread_safe() -> None:
    url = _url()
    with ThreadPoolExecutor(8) as pool:
        brokers = list(pool.map(lambda _: MemoryBroker.from_url(url), range(64)))
    assert len({id(b) for b in brokers}) == 1


def test_from_url_refuses_other_schemes() -> None:
    with pytest.raises(ConfigurationError) as info:
        MemoryBroker.from_url("redis://localhost")
    assert str(info.value) == "not a memory:// URL: 'redis://localhost'"


def test_from_url_accepts_any_scheme_case() -> None:
    assert isinstance(MemoryBroker.from_url(f"MEMORY://mb-{uuid.uuid4().hex}"), MemoryBroker)


async def test_producer_and_worker_in_one_process_share_the_broker() -> None:
    url = _url()
    producer = upnext.Worker("shared", broker=url)
    consumer = upnext.Worker("shared", broker=url)
    assert (await producer.client()).broker is (await consumer.client()).broker
    await producer.aclose()
    await consumer.aclose()


async def test_pending_counts_unsettled_jobs_of_every_queue() -> None:
    broker = MemoryBroker(_url())
    assert broker.pending() == 0
    await broker.enqueue_many([_env("a"), _env("b"), _env("b", delay=60.0)])
    assert broker.pending() == 3
    (held,) = await broker.receive(["a"], limit=5, lease=30.0, wait=0.0)
    assert broker.pending() == 3  # a held job is still pending
    await broker.settle([Ack(held)])
    assert broker.pending() == 2
    (dead,) = await broker.receive(["b"], limit=5, lease=30.0, wait=0.0)
    record = DeadLetterRecord("d1", dead.envelope.id, "b", "f", "rejected", time.time(), b"{}")
    await broker.settle([DeadLetter(dead, record)])
    assert broker.pending() == 1  # the dead letter is not pending, the delayed job is


def _in_thread_loop(
    coro_factory: Callable[[], Coroutine[Any, Any, T]],
) -> tuple[threading.Thread, list[T]]:
    """Run a coroutine on its own event loop in a thread; its result lands in the list."""
    out: list[T] = []

    def main() -> None:
        out.append(asyncio.run(coro_factory()))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, out


async def test_receiver_on_another_loop_is_woken_by_an_enqueue() -> None:
    broker = MemoryBroker(_url())
    thread, out = _in_thread_loop(lambda: broker.receive(["q"], limit=1, lease=30.0, wait=5.0))
    await asyncio.sleep(0.1)  # let the other loop block
    started = time.monotonic()
    await broker.enqueue_many([_env()])
    await asyncio.to_thread(thread.join, 3.0)
    assert time.monotonic() - started < 1.0
    assert len(out) == 1
    assert len(out[0]) == 1


async def test_result_waiter_on_another_loop_is_woken_by_a_write() -> None:
    broker = MemoryBroker(_url())
    thread, out = _in_thread_loop(lambda: broker.get_result("j1", queue="q", wait=5.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await broker.put_results([ResultWrite("j1", "q", b"done", 60.0)])
    await asyncio.to_thread(thread.join, 3.0)
    assert time.monotonic() - started < 1.0
    assert out == [b"done"]
