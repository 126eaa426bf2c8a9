"""The job pipeline: stage order, decisions, errors in middleware, registration.

Run on memory:// (the semantics every backend shares are in
`upnext.testing.semantics_middleware`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import upnext
from upnext.broker.memory import MemoryBroker
from upnext.errors import ConfigurationError, TaskExecutionError
from upnext.hooks import hookimpl
from upnext.middleware import (
    CallNext,
    DeadLetterJob,
    Decision,
    Delay,
    Job,
    Middleware,
    Outcome,
    Settlement,
    Submission,
)
from upnext.testing.semantics_base import wait_until

LIMIT = 5.0


def _worker(**options: Any) -> upnext.Worker:
    return upnext.Worker(
        f"mw-{uuid.uuid4().hex[:8]}",
        broker=f"memory://mw-{uuid.uuid4().hex}",
        load_plugins=False,
        **options,
    )


class Recorder(Middleware):
    """Writes `name:stage` to a shared log at every worker stage."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def before_run(self, job: Job) -> Decision | None:
        self.log.append(f"{self.name}:before")
        return None

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        self.log.append(f"{self.name}:enter")
        value = await call_next()
        self.log.append(f"{self.name}:exit")
        return value

    async def after_run(self, job: Job, outcome: Outcome) -> None:
        self.log.append(f"{self.name}:after_run:{outcome.kind}")

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        self.log.append(f"{self.name}:settled:{settlement.status}")


async def test_stages_run_in_the_documented_order() -> None:
    log: list[str] = []
    worker = _worker(middleware=[Recorder("a", log), Recorder("b", log)])

    @worker.task
    async def job() -> None:
        log.append("body")

    async with worker:
        await (await job.submit()).result(LIMIT)
        await worker.join(timeout=LIMIT)
    assert log == [
        "a:before",
        "b:before",
        "a:enter",
        "b:enter",
        "body",
        "b:exit",
        "a:exit",
        "b:after_run:success",
        "a:after_run:success",
        "b:settled:complete",
        "a:settled:complete",
    ]


async def test_after_settle_sees_retries_and_failures() -> None:
    log: list[str] = []
    worker = _worker(middleware=[Recorder("m", log)])

    @worker.task(retries=1, retry_delay=0.01)
    async def failing() -> None:
        raise ValueError("no")

    async with worker:
        with pytest.raises(TaskExecutionError):
            await (await failing.submit()).result(LIMIT)
        await worker.join(timeout=LIMIT)
    settled = [entry for entry in log if ":settled:" in entry or ":after_run:" in entry]
    assert settled == [
        "m:after_run:error",
        "m:settled:scheduled",
        "m:after_run:error",
        "m:settled:failed",
    ]


class RaisingBefore(Middleware):
    async def before_run(self, job: Job) -> Decision | None:
        if job.attempt == 1:
            raise RuntimeError("middleware broke")
        return None


async def test_a_raising_before_run_is_a_failed_attempt() -> None:
    worker = _worker(middleware=[RaisingBefore()])

    @worker.task(retries=1, retry_delay=0.01)
    async def job() -> int:
        return upnext.get_current_context().attempt

    @worker.task(name="mw.once")
    async def once() -> None: ...

    async with worker:
        assert await (await job.submit()).value(LIMIT) == 2  # attempt 1 charged, retried
        with pytest.raises(TaskExecutionError) as caught:
            await (await once.submit()).value(LIMIT)
        await worker.join(timeout=LIMIT)
        entries = (await worker.dlq.list()).items
    assert "middleware broke" in str(caught.value.error)
    assert [entry.reason for entry in entries] == ["retries exhausted"]


class RaisingAfter(Middleware):
    async def after_run(self, job: Job, outcome: Outcome) -> None:
        raise RuntimeError("after_run broke")

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        raise RuntimeError("after_settle broke")


async def test_raising_after_stages_are_logged_and_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _worker(middleware=[RaisingAfter()])

    @worker.task
    async def job() -> int:
        return 7

    with caplog.at_level(logging.ERROR, logger="upnext.worker"):
        async with worker:
            assert await (await job.submit()).value(LIMIT) == 7
            await worker.join(timeout=LIMIT)
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "after_run" in messages
    assert "after_settle" in messages


class DeadLettering(Middleware):
    async def before_run(self, job: Job) -> Decision | None:
        return DeadLetterJob("quarantined")


async def test_dead_letter_decision_keeps_the_attempts_unused() -> None:
    worker = _worker(middleware=[DeadLettering()])
    ran: list[int] = []

    @worker.task(retries=3)
    async def job() -> None:
        ran.append(1)

    async with worker:
        with pytest.raises(TaskExecutionError) as caught:
            await (await job.submit()).value(LIMIT)
        await worker.join(timeout=LIMIT)
        entries = (await worker.dlq.list()).items
    assert caught.value.status == "failed"
    assert [entry.reason for entry in entries] == ["quarantined"]
    assert ran == []


class Producer(Middleware):
    """Delays jobs of `delayed`, dedupes `dedupe` onto `existing`, refuses `refused`."""

    def __init__(self, existing: str) -> None:
        self.existing = existing
        self.seen: list[Submission] = []

    async def before_enqueue(self, submission: Submission) -> None:
        self.seen.append(submission)
        if submission.kwargs.get("mode") == "delayed":
            submission.delay = 60.0
            submission.priority = 5
        elif submission.kwargs.get("mode") == "dedupe":
            submission.dedupe(self.existing)
        elif submission.kwargs.get("mode") == "refused":
            raise ConfigurationError("refused by policy")
        elif submission.kwargs.get("mode") == "urgent":
            submission.priority = 8
        elif submission.kwargs.get("mode") == "out of range":
            submission.priority = 12


async def test_before_enqueue_delays_dedupes_and_refuses() -> None:
    existing = uuid.uuid4().hex
    producer = Producer(existing)
    worker = _worker(middleware=[producer])

    @worker.task
    async def job(mode: str) -> None: ...

    broker = (await worker.client()).broker
    assert isinstance(broker, MemoryBroker)
    with pytest.raises(ConfigurationError, match="refused by policy"):
        await job.submit(mode="refused")
    assert broker.pending() == 0
    deduped = await job.submit(mode="dedupe")
    assert deduped.job_id == existing
    assert deduped.duplicate, "a middleware's dedupe makes the caller's Future a duplicate"
    assert broker.pending() == 0
    delayed = await job.submit(mode="delayed")
    stats = await broker.stats(delayed.queue)
    assert (stats.ready, stats.scheduled) == (0, 1)
    assert [s.kwargs["mode"] for s in producer.seen] == ["refused", "dedupe", "delayed"]
    await worker.aclose()


async def test_before_enqueue_sets_the_priority_the_broker_gets() -> None:
    """A priority a middleware sets travels in the envelope; one out of range is refused."""
    worker = _worker(middleware=[Producer(uuid.uuid4().hex)])

    @worker.task
    async def job(mode: str) -> None: ...

    broker = (await worker.client()).broker
    urgent = await job.submit(mode="urgent")
    [delivery] = await broker.receive([urgent.queue], limit=5, lease=30.0, wait=0.0)
    assert (delivery.envelope.id, delivery.envelope.priority) == (urgent.job_id, 8)
    with pytest.raises(ConfigurationError, match="invalid priority: 12"):
        await job.submit(mode="out of range")
    assert await broker.receive([urgent.queue], limit=5, lease=30.0, wait=0.0) == []
    await worker.aclose()


def test_worker_refuses_what_is_not_middleware() -> None:
    with pytest.raises(ConfigurationError, match="Middleware"):
        _worker(middleware=[object()])


class ProvidesMiddleware:
    def __init__(self, provided: Sequence[Middleware]) -> None:
        self.provided = provided

    @hookimpl
    def upnext_middleware(self, worker: upnext.Worker) -> Sequence[Middleware]:
        return self.provided


class ProvidesFirst(ProvidesMiddleware):
    @hookimpl(tryfirst=True)
    def upnext_middleware(self, worker: upnext.Worker) -> Sequence[Middleware]:
        return self.provided


async def test_plugins_middleware_come_after_builtins_and_before_the_workers() -> None:
    log: list[str] = []
    plain = ProvidesMiddleware([Recorder("plain", log)])
    first = ProvidesFirst([Recorder("first", log)])
    worker = _worker(plugins=[first, plain], middleware=[Recorder("own", log)])
    assert [m.name for m in worker.middleware] == ["first", "plain", "own"]  # type: ignore[attr-defined]

    @worker.task
    async def job() -> None: ...

    async with worker:
        await (await job.submit()).result(LIMIT)
        await worker.join(timeout=LIMIT)
    assert [entry for entry in log if entry.endswith(":before")] == [
        "first:before",
        "plain:before",
        "own:before",
    ]


class OnlyAround(Middleware):
    def applies_to(self, task: Any) -> bool:
        return task is not None and task.name == "mw.wrapped"

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        return await call_next()


def test_stages_hold_only_middleware_that_override_them_and_apply() -> None:
    from upnext._pipeline import Pipeline

    worker = _worker()

    @worker.task(name="mw.wrapped")
    async def wrapped() -> None: ...

    @worker.task(name="mw.other")
    async def other() -> None: ...

    only = OnlyAround()
    pipeline = Pipeline([only], hook_timeout=1.0)
    assert pipeline.stages(wrapped).around_run == (only,)
    assert pipeline.stages(wrapped).before_run == ()
    assert not any(pipeline.stages(other))


class SeesCancel(Middleware):
    def __init__(self) -> None:
        self.reasons: list[str | None] = []

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        try:
            return await call_next()
        except asyncio.CancelledError:
            self.reasons.append(job.cancel_reason)
            raise


async def test_around_run_sees_why_a_job_is_cancelled() -> None:
    seer = SeesCancel()
    worker = _worker(middleware=[seer])

    @worker.task(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(5)

    async with worker:
        with pytest.raises(upnext.TaskTimeoutError):
            await (await slow.submit()).value(LIMIT)
    assert seer.reasons == ["timeout"]


async def test_cancel_job_settles_a_job_waiting_here_when_it_would_start() -> None:
    worker = _worker(concurrency=1)
    release = asyncio.Event()
    ran: list[str] = []

    @worker.task
    async def job(name: str) -> None:
        ran.append(name)
        await release.wait()

    async with worker:
        first = await job.submit("first")
        second = await job.submit("second")
        consumer = worker.consumer
        assert consumer is not None
        await wait_until(lambda: len(consumer.runs) == 2 and bool(ran), within=LIMIT, what="held")
        assert [r.job_id for r in consumer.running_jobs()] == [first.job_id]
        assert consumer.cancel_job(second.job_id)
        assert not consumer.cancel_job(uuid.uuid4().hex)
        release.set()
        await first.result(LIMIT)
        with pytest.raises(TaskExecutionError) as caught:
            await second.value(LIMIT)
    assert caught.value.status == "cancelled"
    assert ran == ["first"]


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_delay_refuses_what_is_not_a_duration(seconds: float) -> None:
    with pytest.raises(ValueError, match="invalid Delay"):
        Delay(seconds)


class SeesContext(Middleware):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        self.seen.append((job.id, upnext.get_current_context().job_id))
        return await call_next()


async def test_leading_builtins_run_inline_with_their_order_kept() -> None:
    """JobContext and Timeout lead around_run inline; one behind Hooks stays in the chain."""
    from upnext._pipeline import Pipeline
    from upnext.middleware._builtins import Hooks, JobContext, Timeout

    seer = SeesContext()
    worker = _worker(middleware=[seer])

    @worker.task(name="mw.plain")
    async def plain() -> None: ...

    @worker.task(name="mw.hooked", on_start=lambda: None)
    async def hooked() -> None: ...

    loop = asyncio.get_running_loop()
    context, timeout = JobContext(worker), Timeout(loop, lambda run: None)
    pipeline = Pipeline([context, Hooks(worker), timeout, seer], hook_timeout=1.0)
    bare = pipeline.stages(plain)
    assert (bare.context, bare.timeout) == (context, timeout)
    assert bare.around_run_inside_out == (seer.around_run,)
    with_hooks = pipeline.stages(hooked)
    assert (with_hooks.context, with_hooks.timeout) == (context, None)
    assert len(with_hooks.around_run_inside_out) == 3  # seer, Timeout, Hooks (inside out)
    async with worker:
        await (await plain.submit()).value(LIMIT)
        await (await hooked.submit()).value(LIMIT)
    assert [job_id == seen for job_id, seen in seer.seen] == [True, True]


class WhereSettled(Middleware):
    """Records, per settlement, whether its after_settle ran in a background task."""

    def __init__(self, worker: upnext.Worker, inline: bool) -> None:
        self.worker = worker
        self.settles_inline = inline  # type: ignore[misc]  # per instance, for the test
        self.in_background: list[bool] = []

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        assert self.worker.consumer is not None
        self.in_background.append(asyncio.current_task() in self.worker.consumer.background)
        if self.settles_inline:
            raise RuntimeError("inline after_settle broke")


async def test_settles_inline_runs_in_the_jobs_task_and_a_raise_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = _worker()
    inline, background = WhereSettled(worker, True), WhereSettled(worker, False)
    worker.middleware = (inline, background)

    @worker.task
    async def job(n: int) -> int:
        return n

    with caplog.at_level(logging.ERROR, logger="upnext.worker"):
        async with worker:
            assert [await (await job.submit(n)).value(LIMIT) for n in range(3)] == [0, 1, 2]
            await worker.join(timeout=LIMIT)
    assert inline.in_background == [False, False, False]
    assert background.in_background == [True, True, True]
    assert "inline after_settle broke" in caplog.text


class Headers(Middleware):
    """Sets a header at submit; each attempt notes the headers it got and adds its own."""

    def __init__(self, header: object = "sent") -> None:
        self.header = header
        self.seen: list[dict[str, str]] = []

    async def before_enqueue(self, submission: Submission) -> None:
        submission.headers["origin"] = self.header  # type: ignore[assignment]

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        self.seen.append(dict(job.headers))
        job.headers[f"attempt-{job.attempt}"] = "ran"
        return await call_next()


async def test_headers_travel_to_the_worker_and_through_a_retry() -> None:
    """Submission.headers reach Job.headers; what attempt 1 adds, attempt 2 reads."""
    headers = Headers()
    worker = _worker(middleware=[headers])

    @worker.task(retries=1, retry_delay=0.01)
    async def flaky() -> str:
        if len(headers.seen) == 1:
            raise ValueError("first attempt fails")
        return "ok"

    async with worker:
        assert (await (await flaky.submit()).result(LIMIT)).value == "ok"
    assert headers.seen == [{"origin": "sent"}, {"origin": "sent", "attempt-1": "ran"}]


async def test_headers_that_are_not_strings_are_refused_before_any_io() -> None:
    worker = _worker(middleware=[Headers(header=3)])

    @worker.task
    async def job() -> None: ...

    broker = (await worker.client()).broker
    assert isinstance(broker, MemoryBroker)
    with pytest.raises(ConfigurationError, match="headers must map str to str"):
        await job.submit()
    assert broker.pending() == 0
    await worker.aclose()


class _HeaderStamp(Middleware):
    """Gives the jobs of one task a header at submit."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name

    async def before_enqueue(self, submission: Submission) -> None:
        if submission.task.name == self.task_name:
            submission.headers["x-stamp"] = "1"


class _HeadersOnly(Recorder):
    headers_only = True

    async def after_settle(self, job: Job, settlement: Settlement) -> None:
        self.log.append(f"{job.function}:settled")

    async def before_run(self, job: Job) -> Decision | None:
        self.log.append(f"{job.function}:before")
        return None


async def test_headers_only_middleware_skips_jobs_without_headers() -> None:
    """A `headers_only` middleware takes part only in jobs with headers, at every stage."""
    log: list[str] = []
    worker = _worker(middleware=[_HeaderStamp("stamped"), _HeadersOnly("h", log)])

    @worker.task(name="stamped")
    async def stamped() -> str:
        return "s"

    @worker.task(name="plain")
    async def plain() -> str:
        return "p"

    async with worker:
        assert await (await stamped.submit()).value() == "s"
        assert await (await plain.submit()).value() == "p"
        await wait_until(lambda: "stamped:settled" in log, within=LIMIT, what="the settle")
        await asyncio.sleep(0.1)  # a late call for the plain job would show by now
    assert log == ["stamped:before", "h:enter", "h:exit", "h:after_run:success", "stamped:settled"]
