"""Unique jobs: the one-line errors, the claims a submit writes, and crash windows.

The behaviour through a real worker on every backend is `upnext.testing`'s
`UniqueJobSemantics`; these tests pin what it cannot see: refused option
mixes, a key repeated inside one `submit_many`, a pending claim left by a
killed producer, a failed enqueue freeing its claim, and the claim's value.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import upnext
from upnext._statekeys import unique_key
from upnext._unique import claim_value
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Envelope
from upnext.broker.state import StateWrite
from upnext.errors import BrokerUnavailable, ConfigurationError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # no worker runs here


def _worker() -> tuple[upnext.Worker, MemoryBroker, list[Envelope]]:
    """A worker on a fresh memory:// broker that records every envelope enqueued."""
    url = f"memory://unique-{uuid.uuid4().hex}"
    broker = MemoryBroker.from_url(url)
    recorded: list[Envelope] = []
    enqueue_many = broker.enqueue_many

    async def record(envelopes: Sequence[Envelope]) -> None:
        recorded.extend(envelopes)
        await enqueue_many(envelopes)

    broker.enqueue_many = record  # type: ignore[method-assign]  # a recording test double
    return upnext.Worker("uq", broker=url, load_plugins=False), broker, recorded


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_for": 1.0}, "unique_for needs a key"),
        ({"debounce": 1.0}, "debounce needs a key"),
        ({"job_id": "a", "unique_for": 1.0, "debounce": 1.0}, "choose one"),
        ({"job_id": "a", "debounce": 1.0, "delay": 2.0}, "leave delay out"),
        ({"job_id": ""}, "invalid job_id"),
        ({"job_id": "a", "unique_for": 0}, "invalid unique_for"),
        ({"job_id": "a", "debounce": float("nan")}, "invalid debounce"),
    ],
)
def test_refused_option_mixes_are_one_line(options: dict[str, Any], message: str) -> None:
    worker, _, _ = _worker()

    @worker.task
    async def job() -> None: ...

    with pytest.raises(ConfigurationError, match=message) as caught:
        job.options(**options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("template", ["{}", "{0}", "{user.name", "{nope}", "", "{user}{x[0]}"])
def test_a_bad_unique_key_is_refused_at_decoration(template: str) -> None:
    worker, _, _ = _worker()

    async def sync(user: str) -> None: ...

    with pytest.raises(ConfigurationError) as caught:
        worker.task(name="sync", unique_key=template)(sync)
    assert str(caught.value).startswith("task sync: ")
    assert "\n" not in str(caught.value)


async def test_an_empty_idempotency_key_is_refused() -> None:
    worker, _, _ = _worker()

    @worker.task
    async def job() -> None: ...

    with pytest.raises(ConfigurationError, match="invalid idempotency key"):
        await job.submit_idempotent("")
    await worker.aclose()


async def test_debounce_and_throttle_apply_to_one_call() -> None:
    worker, _, _ = _worker()

    @worker.task(unique_key="{n}")
    async def job(n: int) -> None: ...

    for call in (job.options(debounce=1.0), job.options(unique_for=1.0)):
        with pytest.raises(ConfigurationError, match="single submit"):
            await call.submit_many([{"n": 1}, {"n": 2}])
    await worker.aclose()


async def test_a_key_repeated_in_one_submit_many_is_one_job() -> None:
    """Two calls deriving one key in one batch: one envelope, the second a duplicate."""
    worker, _, recorded = _worker()

    @worker.task(name="sync", unique_key="{user}")
    async def sync(user: str, n: int) -> None: ...

    futures = await sync.submit_many(
        [{"user": "a", "n": 1}, {"user": "a", "n": 2}, {"user": "b", "n": 3}]
    )
    assert [f.job_id for f in futures] == ["sync:a", "sync:a", "sync:b"]
    assert [f.duplicate for f in futures] == [False, True, False]
    assert [e.id for e in recorded] == ["sync:a", "sync:b"]
    await worker.aclose()


async def test_a_pending_claim_left_by_a_dead_producer_is_taken_over_when_it_lapses() -> None:
    """A claim never marked (its producer died) holds the key only until its TTL lapses."""
    worker, broker, recorded = _worker()

    @worker.task
    async def job() -> None: ...

    key = unique_key("uq", "ghost")
    pending = StateWrite(key, claim_value("ghost", False), ttl=0.3, expect="absent")
    assert await broker.state_put([pending]) == [True]
    began = time.monotonic()
    future = await job.options(job_id="ghost").submit()
    assert 0.25 <= time.monotonic() - began < 2.0, "the submit waited for the claim to lapse"
    assert future.duplicate is False, "the caller that took the lapsed key created the job"
    assert [e.id for e in recorded] == ["ghost"]
    [entry] = await broker.state_get([key])
    assert entry is not None
    assert json.loads(entry.value) == {"job": "ghost", "ok": True}
    await worker.aclose()


async def test_a_failed_enqueue_frees_its_claim() -> None:
    """The broker refuses the enqueue: the error reaches the caller and the key is free."""
    worker, broker, _ = _worker()

    @worker.task
    async def job() -> None: ...

    enqueue_many = broker.enqueue_many

    async def refuse(envelopes: Sequence[Envelope]) -> None:
        raise BrokerUnavailable("down")

    broker.enqueue_many = refuse  # type: ignore[method-assign]  # a failing test double
    with pytest.raises(BrokerUnavailable):
        await job.options(job_id="j").submit()
    assert await broker.state_get([unique_key("uq", "j")]) == [None]
    broker.enqueue_many = enqueue_many  # type: ignore[method-assign]  # restored
    future = await asyncio.wait_for(job.options(job_id="j").submit(), 1.0)
    assert future.duplicate is False
    await worker.aclose()


async def test_a_settled_unique_job_keeps_its_key_for_its_result_ttl() -> None:
    """After the final settle the claim's TTL is the job's result_ttl (0: deleted)."""
    worker, broker, _ = _worker()

    @worker.task(result_ttl=0)
    async def fleeting() -> int:
        return 1

    async with worker:
        await fleeting.options(job_id="f").submit()
        await worker.join(timeout=5.0)
        for _ in range(100):  # the cut follows the settle
            if await broker.state_get([unique_key("uq", "f")]) == [None]:
                break
            await asyncio.sleep(0.01)
    assert await broker.state_get([unique_key("uq", "f")]) == [None], (
        "result_ttl=0: the key is free once the job is settled"
    )
