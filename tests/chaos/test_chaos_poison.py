"""Scenario 6: poison written straight to the broker is dead-lettered on first delivery.

Plus a hypothesis fuzz of the envelope decoder: it returns a JobBody or raises
the documented UndecodableBody, nothing else, whatever the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
from typing import Any

import pytest
import upnext
from chaoskit import FULL
from chaoskit.backends import Backend
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import Pool, rss_kib, wait_until
from chaoskit.worker import Options, Tasks, build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upnext._discovery import load_factory
from upnext._serializer import JobBody, UndecodableBody, decode_body
from upnext.broker.protocol import Envelope

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 if FULL else 90)]

MIB = 1024 * 1024


def poison(queue: str) -> dict[str, tuple[bytes, str]]:
    """Each kind of bad body, with the DLQ reason it must get."""

    def body(**fields: Any) -> bytes:
        return json.dumps({"v": 1, "id": "x", "queue": queue, **fields}).encode()

    deep = b'{"v":1,"id":"x","fn":"chaos.work","queue":"q","args":' + b"[" * 2000 + b"]" * 2000
    return {
        "bad-json": (b'{"v": 1, "id": "x", "fn": ', "undecodable"),
        "bad-utf8": (b'{"v":1,"id":"\xff\xfe","fn":"chaos.work","queue":"q"}', "undecodable"),
        "wrong-schema": (json.dumps({"v": 1, "id": 5, "fn": ["x"]}).encode(), "undecodable"),
        "deep-nesting": (deep + b"}", "undecodable"),
        "huge-blob": (body(fn="chaos.work", args=["a" * (10 * MIB)]), "payload too large"),
        "unknown-task": (body(fn="chaos.nope", kwargs={"i": 1}), "unknown task"),
    }


async def _inject(url: str, queue: str, bodies: dict[str, tuple[bytes, str]]) -> None:
    broker = load_factory(url)(url)
    await broker.connect()
    try:
        await broker.enqueue_many(
            [Envelope(id=k, queue=queue, body=b) for k, (b, _) in bodies.items()]
        )
    finally:
        await broker.aclose()


async def _poison_between_valid(
    client: upnext.Worker,
    tasks: Tasks,
    ledger: Ledger,
    url: str,
    queue: str,
    bodies: dict[str, tuple[bytes, str]],
) -> None:
    """Inject the poison, then 25 more valid jobs; return once all ran and all poison is dead."""
    await _inject(url, queue, bodies)
    await tasks.work.submit_many([{"i": i, "ms": 1} for i in range(25, 50)])
    await wait_until(lambda: len(ledger.done()) >= 50, 30.0, "the valid jobs ran")
    for _ in range(100):
        if await client.dlq.count(queue=queue) >= len(bodies):
            break
        await asyncio.sleep(0.1)  # the worker dead-letters concurrently


async def test_poison_is_dead_lettered_with_its_bytes(any_backend: Backend, ledger: Ledger) -> None:
    """Six kinds of bad body: each in the DLQ with its reason; 50 valid jobs all complete."""
    queue = any_backend.queue
    bodies = poison(queue)
    worker, tasks = build(any_backend.url, queue, ledger, Options(concurrency=8))
    async with worker:
        await tasks.work.submit_many([{"i": i, "ms": 1} for i in range(25)])
        await wait_until(lambda: len(ledger.done()) >= 25, 30.0, "the warm-up jobs ran")
        gc.collect()
        before = rss_kib(os.getpid())
        await _poison_between_valid(worker, tasks, ledger, any_backend.url, queue, bodies)
        gc.collect()  # measured before the test reads the (13 MB) entries back
        grown = (rss_kib(os.getpid()) - before) / 1024
        page = await worker.dlq.list(queue=queue, limit=50)
    entries = {e.job_id: e for e in page.items}
    verdict(ledger, range(50)).check(max_duplicates=0)
    report(
        "poison",
        any_backend.name,
        bodies=len(bodies),
        dead_lettered=len(entries),
        rss_growth_mib=grown,
    )
    for key, (raw, reason) in bodies.items():
        entry = entries[key]
        assert reason in entry.reason, (key, entry.reason)
        assert len(entry.attempts) <= 1, (key, entry.attempts)
        if entry.raw is not None:
            assert base64.b64decode(entry.raw) == raw, f"{key}: the original bytes differ"
        else:
            assert entry.payload is not None
            assert entry.payload.kwargs == {"i": 1}


async def _settled_rss(pid: int, seconds: float = 3.0) -> int:
    """The lowest RSS of `pid` over `seconds`: what the process keeps, not what is in flight.

    Right after the 10 MB body is dead-lettered, the Redis worker still held
    up to 20 MiB for 1-2 s (10 MiB after 1 s, 0.1 MiB after 2 s), then gave it
    back (what held it so briefly was not identified). A leak stays in every
    reading.
    """
    readings = []
    for _ in range(int(seconds / 0.25)):
        await asyncio.sleep(0.25)
        readings.append(rss_kib(pid))
    return min(readings)


async def test_poison_does_not_grow_a_worker_process(backend: Backend, ledger: Ledger) -> None:
    """A worker subprocess takes the six poison bodies between valid jobs: RSS grows < 20 MiB."""
    queue = backend.queue
    bodies = poison(queue)
    options = Options(concurrency=8)
    producer, tasks = build(backend.url, queue, ledger, options)
    async with Pool(backend, ledger, options, 1) as pool:
        (proc,) = pool.procs
        await tasks.work.submit_many([{"i": i, "ms": 1} for i in range(25)])
        await wait_until(lambda: len(ledger.done()) >= 25, 30.0, "the warm-up jobs ran")
        await asyncio.sleep(0.5)  # settles and result writes of the warm-up finish
        before = rss_kib(proc.pid)
        await _poison_between_valid(producer, tasks, ledger, backend.url, queue, bodies)
        after = await _settled_rss(proc.pid)
        dead = await producer.dlq.count(queue=queue)
        await pool.stop()
    await producer.aclose()
    grown = (after - before) / 1024
    verdict(ledger, range(50)).check(max_duplicates=0)
    report(
        "poison-rss", backend.name, dead_lettered=dead, rss_before_kib=before, rss_growth_mib=grown
    )
    assert dead == len(bodies)
    assert grown < 20, f"the worker grew {grown:.1f} MiB on poison input"


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        k: JSONISH | st.text() | st.integers(-2, 3)
        for k in ("v", "id", "fn", "queue", "args", "kwargs", "attempts", "lost", "history")
    },
)
BODIES = st.binary(max_size=512) | FIELDS.map(lambda d: json.dumps(d).encode())


@settings(
    max_examples=10_000 if FULL else 1_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(BODIES)
def test_decode_body_only_raises_undecodable(data: bytes) -> None:
    """decode_body on any bytes: a JobBody, or UndecodableBody with a reason; nothing else."""
    reason = None
    try:
        body = decode_body(data, MIB)
    except UndecodableBody as exc:  # anything else fails the test with its traceback
        reason = exc.reason
    if reason is None:
        assert JobBody.model_validate_json(body.model_dump_json()) == body
    else:
        assert reason in {"undecodable", "unknown format version", "payload too large"}


def test_decode_body_refuses_oversize_before_parsing() -> None:
    """A body over the limit is refused by size, not parsed."""
    with pytest.raises(UndecodableBody, match="payload too large"):
        decode_body(b"[" * (MIB + 1), MIB)
    assert issubclass(UndecodableBody, upnext.SerializationError)
