"""upnext in one file: retries with backoff, a timeout, the dead-letter queue and a replay.

Run it with nothing but upnext-core installed:

    python examples/quickstart.py

Producer and worker share this process through the in-process memory://
broker. Point UPNEXT_BROKER_URL at a server to run the same code there, e.g.
``UPNEXT_BROKER_URL=redis://localhost:6379/0`` after ``pip install 'upnext[redis]'``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import upnext
from upnext import TaskExecutionError, TaskTimeoutError

# No broker argument: Worker reads $UPNEXT_BROKER_URL, else uses memory://.
worker = upnext.Worker("quickstart")

# When each job last failed, to measure the delay before its next attempt.
last_failure: dict[str, float] = {}


class Gateway:
    """A stand-in for an external service that can be down."""

    up = False


@worker.task(retries=3, retry_delay=0.1, retry_backoff=2.0)
async def fetch_rates(currency: str) -> str:
    """Fail three times, then succeed: the retries wait 0.1, 0.2 and 0.4 s."""
    ctx = upnext.get_current_context()
    now = time.monotonic()
    failed_at = last_failure.get(ctx.job_id)
    waited = "first run" if failed_at is None else f"{now - failed_at:.2f} s after the failure"
    if ctx.attempt < ctx.max_attempts:
        print(f"  attempt {ctx.attempt}/{ctx.max_attempts}  {waited:<28} -> ConnectionError")
        last_failure[ctx.job_id] = time.monotonic()
        raise ConnectionError("rates service unavailable")
    print(f"  attempt {ctx.attempt}/{ctx.max_attempts}  {waited:<28} -> ok")
    return f"{currency} rates on attempt {ctx.attempt}"


@worker.task(timeout=0.2)
async def build_report(pages: int) -> int:
    """Take longer than the 0.2 s timeout allows; the attempt is cancelled."""
    await asyncio.sleep(pages * 0.1)
    return pages


@worker.task(retries=1, retry_delay=0.05)
async def charge(order_id: int, amount: float) -> str:
    """Fail while the gateway is down; after two attempts the job is dead-lettered."""
    ctx = upnext.get_current_context()
    if ctx.replay_of is not None:
        print(f"  the new job runs: replay_of={short(ctx.replay_of)}, attempt {ctx.attempt}")
    if not Gateway.up:
        raise ConnectionError("payment gateway down")
    return f"charged order {order_id}: {amount:.2f}"


@worker.task
async def add(a: int, b: int) -> int:
    """A task that simply works."""
    return a + b


@worker.task(retries=5)
async def parse_int(text: str) -> int:
    """Reject bad input: dead-lettered at once, the other five attempts unused."""
    try:
        return int(text)
    except ValueError:
        raise upnext.Reject(f"not a number: {text!r}") from None


def short(job_id: str) -> str:
    """The first characters of an id, enough to tell jobs apart."""
    return job_id[:8]


async def dead_letter_of(task: upnext.Task[..., Any], job_id: str) -> upnext.DeadLetterEntry:
    """The DLQ entry of a failed job (a shared broker may hold older entries too)."""
    await worker.join(timeout=10)  # its dead-letter write is settled before we look
    page = await worker.dlq.list(queue=task.queue, function=task.name)
    return next(item for item in page.items if item.job_id == job_id)


async def demo_retries() -> None:
    """Section 1: a flaky task retried with exponential backoff."""
    print("1. retries with backoff (retries=3, retry_delay=0.1, retry_backoff=2.0)")
    result = await fetch_rates.wait(currency="EUR")
    print(f"  wait() returned {result.value!r} (attempts={result.attempts})\n")


async def demo_timeout() -> None:
    """Section 2: a task that runs past its timeout."""
    print("2. a timeout (timeout=0.2, no retries)")
    try:
        await build_report.wait(pages=50)
    except TaskTimeoutError as e:
        print(f"  TaskTimeoutError for job {short(e.job_id)}: {e.error}\n")


async def demo_dead_letter() -> None:
    """Section 3: a failure lands in the DLQ; fix the cause, then replay it."""
    print("3. the dead-letter queue (retries=1)")
    future = await charge.submit(order_id=42, amount=19.99)
    try:
        await future.result(timeout=10)
    except TaskExecutionError as e:
        print(f"  job {short(e.job_id)} {e.status} after {e.task_result.attempts} attempts")
    entry = await dead_letter_of(charge, future.job_id)
    print(f"  DLQ entry {short(entry.id)}: reason={entry.reason!r}, error={entry.error}")
    for attempt in entry.attempts:
        print(f"    attempt {attempt.number}: {attempt.outcome} ({attempt.error})")

    Gateway.up = True
    print("  the gateway is back up: replaying the entry")
    new_job_id = await worker.dlq.replay(entry.id)
    replayed = upnext.Future(charge, new_job_id, entry.queue)
    value = await replayed.value(timeout=10)
    print(f"  new job {short(new_job_id)} returned {value!r}\n")


async def demo_gather() -> None:
    """Section 4: wait for several jobs and collect failures instead of raising."""
    print("4. gather(return_exceptions=True)")
    outcomes = await upnext.gather(
        add.wait(a=2, b=3),
        parse_int.wait(text="seven"),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, TaskExecutionError):
            attempts = outcome.task_result.attempts
            print(f"  failed:    {outcome.error} (attempts={attempts}, of 6 allowed)")
        else:
            print(f"  succeeded: {outcome.value!r}")


async def main() -> None:
    """Start the worker in this event loop, run each demo, then drain and stop."""
    started = time.monotonic()
    async with worker:
        print(f"upnext quickstart on {worker.broker_url.split('://')[0]}://\n")
        await demo_retries()
        await demo_timeout()
        await demo_dead_letter()
        await demo_gather()
        await worker.join(timeout=10)
        purged = await worker.dlq.purge(queue=worker.name)  # tidy up the demo's queue
        print(f"\npurged {purged} dead-letter entries of queue {worker.name!r}")
    print(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
