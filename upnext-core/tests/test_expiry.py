"""`expires`: checked where it is given, turned into the body's deadline, enforced at the head.

The behaviour through a real worker on every backend is `upnext.testing`'s
`ExpirySemantics`; these tests pin what it cannot see: the one-line errors,
the deadline's arithmetic, a middleware's delay moving it, and which jobs
the fixed head holds to it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import upnext
from upnext._serializer import JobBody, decode_body, encode_body
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Envelope
from upnext.errors import ConfigurationError
from upnext.middleware import Middleware, Submission

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # no worker runs here


def _worker(**options: Any) -> tuple[upnext.Worker, MemoryBroker]:
    """A worker on a fresh memory:// broker that records every envelope enqueued."""
    url = f"memory://expiry-{uuid.uuid4().hex}"
    broker = MemoryBroker.from_url(url)
    recorded: list[Envelope] = []
    enqueue_many = broker.enqueue_many

    async def record(envelopes: Sequence[Envelope]) -> None:
        recorded.extend(envelopes)
        await enqueue_many(envelopes)

    broker.enqueue_many = record  # type: ignore[method-assign]  # a recording test double
    broker.recorded = recorded  # type: ignore[attr-defined]  # read back by _bodies
    return upnext.Worker("expiry", broker=url, load_plugins=False, **options), broker


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "60", True, 1e9])
def test_a_bad_expires_is_one_line_at_the_call_and_at_decoration(bad: object) -> None:
    worker, _ = _worker()

    @worker.task
    async def job() -> None: ...

    with pytest.raises(ConfigurationError) as at_call:
        job.options(expires=bad)  # type: ignore[arg-type]  # a wrong type is the point
    assert str(at_call.value).startswith(f"invalid expires: {bad!r} (")
    with pytest.raises(ConfigurationError) as at_decoration:
        worker.task(name="other", expires=bad)(job.fn)  # type: ignore[call-overload]  # the point
    assert str(at_decoration.value).startswith(f"task other: invalid expires: {bad!r} (")
    assert "\n" not in str(at_call.value) + str(at_decoration.value)


async def test_the_deadline_is_expires_after_the_job_is_due() -> None:
    """expires_at = submit time + delay + expires; the call's `expires` replaces the task's."""
    worker, broker = _worker()

    @worker.task(expires=30.0)
    async def job() -> None: ...

    before = time.time()
    await job.submit()
    await job.options(delay=100.0).submit()
    await job.options(delay=100.0, expires=5.0).submit()
    after = time.time()
    bodies = await _bodies(broker, 3, worker.max_payload)
    deadlines = sorted(_deadline(body) for body in bodies)
    assert deadlines == pytest.approx([30.0, 105.0, 130.0])
    assert all(before <= body.enqueued_at <= after for body in bodies)
    await worker.aclose()


async def test_a_task_without_expires_has_no_deadline() -> None:
    worker, broker = _worker()

    @worker.task
    async def job() -> None: ...

    await job.options(delay=1.0).submit()
    [body] = await _bodies(broker, 1, worker.max_payload)
    assert body.expires_at is None
    await worker.aclose()


class Postpone(Middleware):
    """Adds 50 s to every job's delay before it is enqueued."""

    async def before_enqueue(self, submission: Submission) -> None:
        submission.delay += 50.0


async def test_a_delay_a_middleware_adds_moves_the_deadline_with_it() -> None:
    """The deadline runs from when the job is due, whoever chose the delay."""
    worker, broker = _worker(middleware=[Postpone()])

    @worker.task(expires=10.0)
    async def job() -> None: ...

    await job.options(delay=5.0).submit()
    [body] = await _bodies(broker, 1, worker.max_payload)
    assert _deadline(body) == pytest.approx(65.0)
    await worker.aclose()


async def _bodies(broker: MemoryBroker, n: int, limit: int) -> list[JobBody]:
    """The bodies of the last `n` envelopes enqueued (recorded by `_worker`)."""
    return [decode_body(e.body, limit) for e in broker.recorded[-n:]]  # type: ignore[attr-defined]


def _deadline(body: JobBody) -> float:
    """Seconds from the submit to the body's deadline."""
    assert body.expires_at is not None
    return body.expires_at - body.enqueued_at


@pytest.mark.parametrize(
    ("attempts", "lost", "runs"),
    [(0, 0, False), (0, 1, False), (1, 0, True)],
    ids=["never-run", "a-lost-run-is-no-start", "a-retry-has-started"],
)
async def test_the_head_expires_only_a_job_no_attempt_was_charged_for(
    attempts: int, lost: int, runs: bool
) -> None:
    """Past its deadline: a retry body runs; a fresh one, or one whose runs were lost, expires."""
    worker, broker = _worker()
    ran: list[int] = []

    @worker.task(name="expiry.job", retries=1)
    async def job() -> int:
        ran.append(upnext.get_current_context().attempt)
        return 1

    body = JobBody(
        id=uuid.uuid4().hex, fn="expiry.job", queue="expiry", attempts=attempts, lost=lost
    )
    body.expires_at = time.time() - 1.0
    await broker.enqueue_many([Envelope(body.id, "expiry", encode_body(body, 10_000))])
    async with worker:
        with contextlib.suppress(upnext.TaskExecutionError):
            await job.future(body.id).value(5.0)
        entries = (await worker.dlq.list()).items
    assert ran == ([attempts + 1] if runs else [])
    assert [e.reason for e in entries] == ([] if runs else ["expired"])
