"""`PluginSemantics`: process-wide pluggy plugins, through a real worker.

Covers the plugin half of docs/hooks.md: an object registered with
``Worker(plugins=[...])`` whose methods carry ``@upnext.hooks.hookimpl`` gets
every lifecycle event of every job, including enqueue and dead-letter, with
the job's status after the event.
"""

from __future__ import annotations

import pytest

from upnext import HookEvent, TaskExecutionError
from upnext.hooks import hookimpl
from upnext.testing.semantics_base import SemanticsBase, Timing, WorkerFactory, violated

__all__ = ["EventLog", "PluginSemantics"]

LIMIT = 5.0


class EventLog:
    """A plugin recording every event it is told about, as (event name, HookEvent)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, HookEvent]] = []

    def of(self, job_id: str) -> list[tuple[str, str]]:
        """(event name, status) of one job, in order."""
        return [(name, e.status) for name, e in self.events if e.job_id == job_id]

    @hookimpl
    def upnext_job_enqueued(self, event: HookEvent) -> None:
        """Record it."""
        self.events.append(("enqueued", event))

    @hookimpl
    def upnext_job_started(self, event: HookEvent) -> None:
        """Record it."""
        self.events.append(("started", event))

    @hookimpl
    async def upnext_job_succeeded(self, event: HookEvent) -> None:
        """Record it (async on purpose: plugins may be either)."""
        self.events.append(("succeeded", event))

    @hookimpl
    def upnext_job_retrying(self, event: HookEvent) -> None:
        """Record it."""
        self.events.append(("retrying", event))

    @hookimpl
    def upnext_job_failed(self, event: HookEvent) -> None:
        """Record it."""
        self.events.append(("failed", event))

    @hookimpl
    def upnext_job_dead_lettered(self, event: HookEvent) -> None:
        """Record it."""
        self.events.append(("dead_lettered", event))

    @hookimpl
    def upnext_job_completed(self, event: HookEvent) -> None:
        """Record it."""
        self.events.append(("completed", event))


def _run_events(plugin: EventLog, job_id: str) -> list[tuple[str, str]]:
    """A job's events from the worker (everything but the producer's "enqueued")."""
    return [event for event in plugin.of(job_id) if event[0] != "enqueued"]


class PluginSemantics(SemanticsBase):
    """Plugins as docs/hooks.md describes them."""

    @pytest.mark.asyncio
    async def test_plugins_get_every_event_with_statuses(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A Worker(plugins=[...]) plugin gets enqueued/started/retrying/... events, in order."""
        plugin = EventLog()
        worker = make_worker(plugins=[plugin])

        @worker.task(retries=1, retry_delay=timing.delay(0.02))
        async def maybe(fail: bool) -> bool:
            if fail:
                raise ValueError("fail")
            return fail

        async with worker:
            good = await maybe.submit(fail=False)
            bad = await maybe.submit(fail=True)
            later = await maybe.options(delay=timing.delay(0.05)).submit(fail=False)
            for future in (good, later):
                await future.result(timing.tolerance(LIMIT))
            with pytest.raises(TaskExecutionError):
                await bad.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        # the producer announces "enqueued" after the enqueue returns, so a fast worker may
        # already have started the job: only the worker's events have an order to check
        for future, status in ((good, "queued"), (bad, "queued"), (later, "scheduled")):
            assert ("enqueued", status) in plugin.of(future.job_id), violated(
                f"a job is announced as enqueued with status {status!r}"
            )
        success = [("started", "active"), ("succeeded", "complete"), ("completed", "complete")]
        assert _run_events(plugin, good.job_id) == success, violated(
            "plugin events of a successful job"
        )
        assert _run_events(plugin, later.job_id) == success
        assert _run_events(plugin, bad.job_id) == [
            ("started", "active"),
            ("retrying", "scheduled"),
            ("started", "active"),
            ("failed", "failed"),
            ("dead_lettered", "failed"),
            ("completed", "failed"),
        ], violated(f"plugin events of a failing job, got {plugin.of(bad.job_id)}")
        dead = [e for name, e in plugin.events if name == "dead_lettered"]
        assert dead[0].reason, violated("the dead-letter event says why")

    @pytest.mark.asyncio
    async def test_jobs_dead_lettered_at_once_announce_their_failure(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A job dead-lettered before it runs (bad arguments) still fires failure events."""
        plugin = EventLog()
        producer, consumer = make_worker(), make_worker(plugins=[plugin])
        failures: list[str] = []

        @producer.task(name="semantics.typed_hooks")
        async def loose(x: str) -> None: ...

        @consumer.task(name="semantics.typed_hooks", on_failure=lambda e: failures.append(e.status))
        async def strict(x: int) -> None: ...

        async with consumer:
            future = await loose.submit(x="not a number")
            with pytest.raises(TaskExecutionError):
                await future.result(timing.tolerance(LIMIT))
            await consumer.join(timeout=timing.tolerance(LIMIT))
        assert _run_events(plugin, future.job_id) == [
            ("failed", "failed"),
            ("dead_lettered", "failed"),
            ("completed", "failed"),
        ], violated("a job dead-lettered at once is announced failed, dead-lettered, completed")
        assert failures == ["failed"], violated("its task's on_failure hook runs once")
