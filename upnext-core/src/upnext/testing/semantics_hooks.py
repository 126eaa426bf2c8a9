"""`HookSemantics`: per-task lifecycle hooks through a real worker.

Covers the per-task half of docs/hooks.md: order,
arity (no argument or one `HookEvent`), isolation (a raising hook changes
nothing), `hook_timeout`, and hooks after the settlement is durable (plugins
are in `semantics_plugins`). `worker.join()` waits for pending hooks, so the
tests read what the hooks recorded right after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import upnext
from upnext import HookEvent, TaskExecutionError
from upnext.testing.semantics_base import (
    EARLY_SLACK,
    SemanticsBase,
    Timing,
    WorkerFactory,
    capabilities_of,
    dlq_entry,
    violated,
)

__all__ = ["HookSemantics"]

LIMIT = 5.0
HOOKS = ("on_start", "on_success", "on_failure", "on_retry", "on_complete")


def _recorders(log: list[str]) -> dict[str, Any]:
    """One no-argument hook per name, each appending its name to `log`."""

    def recorder(name: str) -> Callable[[], None]:
        return lambda: log.append(name)

    return {name: recorder(name) for name in HOOKS}


class HookSemantics(SemanticsBase):
    """Per-task hooks as docs/hooks.md describes them."""

    @pytest.mark.asyncio
    async def test_seed_lifecycle_hooks_example(
        self, make_worker: WorkerFactory, timing: Timing, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Seed: an async no-argument on_failure and a lambda on_retry run as the page shows."""
        worker = make_worker()
        alerts: list[str] = []

        async def on_task_failure() -> None:
            alerts.append("alert sent")

        @worker.task(
            retries=3,
            retry_delay=timing.delay(0.02),
            retry_backoff=1.0,
            on_failure=on_task_failure,
            on_retry=lambda: print("Retrying..."),
        )
        async def monitored_task() -> None:
            raise ConnectionError("down")

        async with worker:
            with pytest.raises(TaskExecutionError):
                await monitored_task.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        printed = [line for line in capsys.readouterr().out.splitlines() if line]
        assert printed.count("Retrying...") == 3, violated("on_retry runs once per retry")
        assert alerts == ["alert sent"], violated("on_failure runs once, when the job fails")

    @pytest.mark.asyncio
    async def test_hook_order_when_the_job_fails(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Hooks run on_start → on_retry ... → on_failure → on_complete for a failing job."""
        worker = make_worker()
        log: list[str] = []

        @worker.task(retries=2, retry_delay=timing.delay(0.05), **_recorders(log))
        async def fails() -> None:
            raise ValueError("no")

        async with worker:
            with pytest.raises(TaskExecutionError):
                await fails.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert log == [
            "on_start",
            "on_retry",
            "on_start",
            "on_retry",
            "on_start",
            "on_failure",
            "on_complete",
        ], violated(f"hook order of a failing job, got {log}")

    @pytest.mark.asyncio
    async def test_hook_order_when_the_job_succeeds(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Hooks run on_start → on_success → on_complete for a job that succeeds."""
        worker = make_worker()
        log: list[str] = []

        @worker.task(**_recorders(log))
        async def succeeds() -> int:
            return 1

        async with worker:
            await succeeds.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert log == ["on_start", "on_success", "on_complete"], violated(
            f"hook order of a successful job, got {log}"
        )

    @pytest.mark.asyncio
    async def test_hook_taking_an_argument_gets_a_filled_hook_event(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A hook with a positional parameter gets a HookEvent with the job's details."""
        worker = make_worker()
        got: dict[str, HookEvent] = {}
        delay = timing.delay(0.05)

        def keep(name: str) -> Callable[[HookEvent], None]:
            def hook(event: HookEvent) -> None:
                got.setdefault(f"{name}{event.attempt}", event)

            return hook

        hooks: dict[str, Any] = {n: keep(n) for n in HOOKS}

        @worker.task(retries=1, retry_delay=delay, **hooks)
        async def second_time_lucky(x: int) -> int:
            if upnext.get_current_context().attempt == 1:
                raise ValueError("first")
            return x + 1

        async with worker:
            future = await second_time_lucky.submit(x=1)
            await future.result(timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        start, retry, success = got["on_start1"], got["on_retry1"], got["on_success2"]
        for event in got.values():
            assert (event.job_id, event.function, event.max_attempts) == (
                future.job_id,
                second_time_lucky.name,
                2,
            ), violated("every HookEvent names the job, its function and max_attempts")
        assert (start.attempt, start.status) == (1, "active"), violated("on_start: active")
        assert (retry.status, retry.error) == ("scheduled", "ValueError: first"), violated(
            "on_retry: status scheduled, with the error"
        )
        assert retry.next_delay == pytest.approx(delay), violated("on_retry: the next delay")
        assert isinstance(retry.exception, ValueError), violated("on_retry gets the exception")
        assert (success.status, success.result) == ("complete", 2), violated(
            "on_success: complete, with the result"
        )
        assert got["on_complete2"].status == "complete"

    @pytest.mark.asyncio
    async def test_failure_hooks_get_status_failed_and_the_error(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """on_failure and on_complete of a failed job get status "failed" and its error."""
        worker = make_worker()
        got: list[HookEvent] = []

        @worker.task(on_failure=got.append, on_complete=got.append)
        async def fails() -> None:
            raise KeyError("gone")

        async with worker:
            with pytest.raises(TaskExecutionError):
                await fails.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert [(e.status, e.error) for e in got] == [("failed", "KeyError: 'gone'")] * 2, violated(
            "failure hooks see status failed and the final error"
        )

    @pytest.mark.asyncio
    async def test_raising_hook_changes_nothing(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A hook that raises is logged and ignored: the job and the other hooks go on."""
        worker = make_worker()
        runs: list[int] = []
        completed: list[str] = []

        def explode(*_: Any) -> None:
            raise RuntimeError("hook bug")

        @worker.task(
            retries=2,
            on_start=explode,
            on_success=explode,
            on_complete=lambda e: completed.append(e.status),
        )
        async def fine() -> str:
            runs.append(1)
            return "done"

        async with worker:
            result = await fine.wait(wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert (result.value, result.attempts, runs) == ("done", 1, [1]), violated(
            "a raising hook neither fails nor retries the job"
        )
        assert completed == ["complete"], violated("hooks after a raising one still run")

    @pytest.mark.asyncio
    async def test_slow_hook_is_bounded_by_hook_timeout(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A hook is cut off after hook_timeout, and never delays the job's result."""
        hook_timeout = timing.delay(0.3)
        worker = make_worker(hook_timeout=hook_timeout)
        marks: dict[str, float] = {}

        async def slow(event: HookEvent) -> None:
            marks["success_began"] = time.monotonic()
            await asyncio.sleep(timing.delay(10.0))
            marks["success_ended"] = time.monotonic()

        @worker.task(
            on_success=slow, on_complete=lambda: marks.setdefault("complete", time.monotonic())
        )
        async def quick() -> int:
            return 1

        async with worker:
            await quick.wait(wait_timeout=timing.tolerance(LIMIT))
            marks["result"] = time.monotonic()
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert "success_ended" not in marks, violated("a hook past hook_timeout is cut off")
        assert "complete" in marks, violated("the next hook runs after a timed-out one")
        began = marks["success_began"]
        assert marks["result"] < began + hook_timeout, violated(
            "a slow hook never delays the job's result"
        )
        span = marks["complete"] - began
        assert hook_timeout - EARLY_SLACK <= span <= hook_timeout + timing.tolerance(0.3), violated(
            f"hook_timeout={hook_timeout} s bounds the hook; it ran {span:.3f} s"
        )

    @pytest.mark.asyncio
    async def test_on_start_runs_outside_the_task_timeout(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """on_start runs before the body, outside its timeout: a slow on_start does not time out."""
        worker = make_worker()
        timeout = timing.delay(0.2)

        async def slow_start() -> None:
            await asyncio.sleep(timeout * 1.5)

        @worker.task(timeout=timeout, on_start=slow_start)
        async def instant() -> str:
            return "ok"

        async with worker:
            result = await instant.wait(wait_timeout=timing.tolerance(LIMIT))
        assert result.value == "ok", violated("on_start does not count against the timeout")

    @pytest.mark.asyncio
    async def test_hooks_run_after_the_settlement_is_durable(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """on_success sees the result stored; on_failure sees the job in the DLQ already."""
        worker = make_worker()
        seen: dict[str, bool] = {}

        async def stored(event: HookEvent) -> None:
            store = (await worker.client()).store
            data = await store.get_result(event.job_id, queue=event.queue, wait=0.0)
            seen[f"{event.status} result stored"] = data is not None
            if event.status == "failed" and (await capabilities_of(worker)).dlq_access:
                entry = await dlq_entry(worker, event.queue, event.job_id)
                seen["failed in dlq"] = entry is not None

        @worker.task(on_success=stored, on_failure=stored)
        async def either(fail: bool) -> bool:
            if fail:
                raise ValueError("fail")
            return fail

        async with worker:
            await either.wait(fail=False, wait_timeout=timing.tolerance(LIMIT))
            with pytest.raises(TaskExecutionError):
                await either.wait(fail=True, wait_timeout=timing.tolerance(LIMIT))
            await worker.join(timeout=timing.tolerance(LIMIT))
        assert seen.get("complete result stored"), violated("on_success runs after the result")
        assert seen.get("failed result stored"), violated("on_failure runs after the result")
        assert seen.get("failed in dlq", True), violated("on_failure runs after the DLQ write")
