"""Shared pieces of the conformance suite: timing, builders, capability skips.

Everything here is backend-neutral: envelopes and dead-letter records are
built through the protocol types, and every blocking call is bounded so a
broken backend fails a test instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pytest

from upnext.broker.protocol import (
    Ack,
    Broker,
    DeadLetter,
    DeadLetterAdmin,
    DeadLetterRecord,
    Delivery,
    Envelope,
    ResultStore,
)

__all__ = [
    "Timing",
    "ack_all",
    "blocked_receiver",
    "dead_letter",
    "make_envelope",
    "make_record",
    "new_id",
    "own_result_store",
    "quantized",
    "receive",
    "receive_exactly",
    "require",
    "require_dlq",
    "violated",
]


@dataclass(frozen=True, slots=True)
class Timing:
    """Scales the suite's delays and tolerances for slow machines.

    `scale` comes from ``--upnext-timing-scale`` or ``UPNEXT_TIMING_SCALE``
    (default 1.0). A delay of 0.4 s at scale 2.5 becomes 1.0 s, and so does
    its tolerance, so the ratio that makes a test meaningful is kept.
    """

    scale: float = 1.0

    def delay(self, seconds: float) -> float:
        """A delay, lease or wait the test imposes, scaled."""
        return seconds * self.scale

    def tolerance(self, seconds: float) -> float:
        """How late something may happen and still count as on time, scaled."""
        return seconds * self.scale


def violated(guarantee: str) -> str:
    """The assertion message for a broken `guarantee` (the suite's one format)."""
    return f"guarantee violated: {guarantee}"


def new_id() -> str:
    """A fresh job or entry id."""
    return uuid.uuid4().hex


def make_envelope(
    queue: str,
    *,
    body: bytes | None = None,
    delay: float = 0.0,
    job_id: str | None = None,
    priority: int = 0,
) -> Envelope:
    """An envelope for `queue`; the body defaults to bytes that name the job."""
    job_id = job_id or new_id()
    body = body if body is not None else f"body-{job_id}".encode()
    return Envelope(job_id, queue, body, delay, priority)


def make_record(
    queue: str,
    *,
    failed_at: float,
    function: str = "tests.fn",
    job_id: str | None = None,
    entry_id: str | None = None,
) -> DeadLetterRecord:
    """A dead-letter record as core would build it (opaque `data` included)."""
    job_id = job_id or new_id()
    return DeadLetterRecord(
        id=entry_id or new_id(),
        job_id=job_id,
        queue=queue,
        function=function,
        reason="conformance test",
        failed_at=failed_at,
        data=b"\x00record\xff" + job_id.encode(),
    )


def require(broker: Broker, capability: str, wanted: Any = True) -> None:
    """Skip the test unless `broker.capabilities.<capability>` is `wanted`."""
    declared = asdict(broker.capabilities)
    assert capability in declared, f"no capability named {capability!r}"  # a typo in the suite
    value = declared[capability]
    if value != wanted:
        pytest.skip(
            f"needs capability {capability}={wanted!r}; "
            f"{type(broker).__name__} declares {capability}={value!r}"
        )


def require_dlq(broker: Broker) -> DeadLetterAdmin:
    """The broker as a `DeadLetterAdmin`; skip if it declares no DLQ access."""
    value = broker.capabilities.dlq_access
    if value is None:
        pytest.skip(f"needs capability dlq_access; {type(broker).__name__} declares None")
    assert isinstance(broker, DeadLetterAdmin), violated(
        f"dlq_access={value!r} is declared, so the broker must implement DeadLetterAdmin"
    )
    return broker


def own_result_store(broker: Broker) -> ResultStore:
    """The broker as its own `ResultStore`; skip if it is not one."""
    if not isinstance(broker, ResultStore):
        pytest.skip(f"{type(broker).__name__} is not its own result store")
    return broker


async def receive(
    broker: Broker,
    queues: Sequence[str],
    *,
    wait: float,
    lease: float = 30.0,
    limit: int = 100,
    grace: float = 2.0,
) -> list[Delivery]:
    """One `receive`, failing (not hanging) if it overruns `wait` by `grace` s."""
    try:
        async with asyncio.timeout(wait + grace):
            got = await broker.receive(queues, limit=limit, lease=lease, wait=wait)
    except TimeoutError:
        pytest.fail(violated(f"receive(wait={wait}) must return within its wait"))
    assert len(got) <= limit, violated(f"receive must return at most limit={limit} deliveries")
    return got


async def receive_exactly(
    broker: Broker,
    queues: Sequence[str],
    count: int,
    *,
    within: float,
    lease: float = 30.0,
    what: str = "enqueued jobs must be handed out",
) -> list[Delivery]:
    """Receive until `count` deliveries arrived, failing if that takes over `within` s."""
    out: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        out += await receive(broker, queues, wait=left, lease=lease, limit=count - len(out))
    assert len(out) == count, violated(f"{what}: got {len(out)} of {count} within {within:.2f} s")
    return out


async def dead_letter(broker: Broker, records: Sequence[DeadLetterRecord]) -> None:
    """Put `records` into the dead-letter queue the way a worker does: settle(DeadLetter)."""
    envelopes = [make_envelope(r.queue, job_id=r.job_id) for r in records]
    await broker.enqueue_many(envelopes)
    queues = sorted({r.queue for r in records})
    deliveries = await receive_exactly(broker, queues, len(records), within=10.0)
    by_job = {r.job_id: r for r in records}
    items = [DeadLetter(d, by_job[d.envelope.id]) for d in deliveries]
    outcomes = await broker.settle(items)
    assert outcomes == [None] * len(items), violated(
        f"settle(DeadLetter) of live deliveries must succeed, got {outcomes}"
    )


async def ack_all(broker: Broker, deliveries: Sequence[Delivery]) -> None:
    """Ack deliveries at the end of a test so nothing stays held."""
    if deliveries:
        await broker.settle([Ack(d) for d in deliveries])


def quantized(broker: Broker, delay: float) -> float:
    """`delay` rounded up to the broker's declared `delay_quantum`."""
    quantum = broker.capabilities.delay_quantum
    if quantum <= 0:
        return delay
    return math.ceil(delay / quantum - 1e-9) * quantum


@asynccontextmanager
async def blocked_receiver(
    broker: Broker,
    queues: Sequence[str],
    *,
    wait: float,
    lease: float = 30.0,
    settle_time: float = 0.1,
) -> AsyncIterator[asyncio.Task[tuple[list[Delivery], float]]]:
    """Start a receive that blocks for up to `wait` s; yield its task.

    The task returns the deliveries and the `time.monotonic()` at which
    receive returned. `settle_time` lets the receiver reach its blocking call
    before the test acts; the task is cancelled if the test leaves early.
    """

    async def run() -> tuple[list[Delivery], float]:
        got = await receive(broker, queues, wait=wait, lease=lease)
        return got, time.monotonic()

    task = asyncio.create_task(run())
    await asyncio.sleep(settle_time)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
