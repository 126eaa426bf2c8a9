"""`WorkflowSemantics`: tasks that submit and await tasks, through a real worker.

Covers "Failures in workflows" of docs/errors.md (a child failure bubbles up
to the parent as an exception) and the workflow rules of docs/tasks.md: lineage (parent_id, root_id)
flows through the context; a waiting job lends its concurrency slot, so a
full worker can't deadlock on its own children; the parent's timeout keeps
running while it waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import upnext
from upnext import TaskExecutionError, TaskTimeoutError
from upnext.testing.semantics_base import (
    SemanticsBase,
    Timing,
    WorkerFactory,
    bounded,
    violated,
)

__all__ = ["WorkflowSemantics"]

LIMIT = 5.0


def _lineage() -> dict[str, Any]:
    ctx = upnext.get_current_context()
    return {"job": ctx.job_id, "parent": ctx.parent_id, "root": ctx.root_id}


class WorkflowSemantics(SemanticsBase):
    """Workflows as docs/errors.md and docs/tasks.md describe them."""

    @pytest.mark.asyncio
    async def test_lineage_flows_from_parent_to_child_to_grandchild(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A child's parent_id is its parent's job id; root_id is the first job's id throughout."""
        worker = make_worker()
        wait = timing.tolerance(LIMIT)

        @worker.task
        async def grandchild() -> dict[str, Any]:
            return _lineage()

        @worker.task
        async def child() -> list[dict[str, Any]]:
            below = await grandchild.wait(wait_timeout=wait)
            assert below.value is not None
            return [_lineage(), below.value]

        @worker.task
        async def root() -> list[dict[str, Any]]:
            below = await child.wait(wait_timeout=wait)
            assert below.value is not None
            return [_lineage(), *below.value]

        async with worker:
            result = await root.wait(wait_timeout=wait)
        assert result.value is not None
        top, middle, bottom = result.value
        assert (top["parent"], top["root"]) == (None, top["job"]), violated(
            "a root job has no parent and is its own root"
        )
        assert (middle["parent"], middle["root"]) == (top["job"], top["job"]), violated(
            "a child's parent_id is the submitting job; root_id is the workflow's root"
        )
        assert (bottom["parent"], bottom["root"]) == (middle["job"], top["job"]), violated(
            "a grandchild keeps the root_id and names its own parent"
        )
        assert (result.parent_id, result.root_id) == (None, result.job_id), violated(
            "TaskResult carries the root's lineage"
        )

    @pytest.mark.asyncio
    async def test_child_task_result_carries_its_lineage(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """The TaskResult a parent gets for its child carries parent_id and root_id."""
        worker = make_worker()

        @worker.task
        async def child() -> int:
            return 1

        @worker.task
        async def parent() -> tuple[str, str | None, str | None]:
            result = await child.wait(wait_timeout=timing.tolerance(LIMIT))
            return upnext.get_current_context().job_id, result.parent_id, result.root_id

        async with worker:
            result = await parent.wait(wait_timeout=timing.tolerance(LIMIT))
        assert result.value is not None
        parent_id, child_parent, child_root = result.value
        assert (child_parent, child_root) == (parent_id, parent_id), violated(
            "a child's TaskResult names its parent and root"
        )

    @pytest.mark.asyncio
    async def test_child_failure_surfaces_in_the_parent_as_task_execution_error(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: a child's failure is raised in its parent as TaskExecutionError."""
        worker = make_worker()

        @worker.task
        async def child(x: int) -> int:
            raise ValueError(f"child got {x}")

        @worker.task
        async def recovering_parent() -> list[Any]:
            try:
                await child.wait(x=1, wait_timeout=timing.tolerance(LIMIT))
            except TaskExecutionError as e:
                return [type(e).__name__, e.status, e.error]
            return []

        @worker.task
        async def careless_parent() -> None:
            await child.wait(x=2, wait_timeout=timing.tolerance(LIMIT))

        async with worker:
            recovered = await recovering_parent.wait(wait_timeout=timing.tolerance(LIMIT))
            with pytest.raises(TaskExecutionError) as caught:
                await careless_parent.wait(wait_timeout=timing.tolerance(LIMIT))
        assert recovered.value == ["TaskExecutionError", "failed", "ValueError: child got 1"], (
            violated("the parent catches the child's failure as TaskExecutionError")
        )
        assert caught.value.error is not None
        assert "child got 2" in caught.value.error, violated(
            "an uncaught child failure fails the parent with the child's error"
        )

    @pytest.mark.asyncio
    async def test_gather_in_a_parent_collects_children_outcomes(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """Seed: gather(return_exceptions=True) in a workflow collects each child's outcome."""
        worker = make_worker(concurrency=2)
        wait = timing.tolerance(LIMIT)

        @worker.task
        async def square(x: int) -> int:
            if x < 0:
                raise ValueError("negative")
            return x * x

        @worker.task
        async def fan_out() -> list[Any]:
            results = await upnext.gather(
                *(square.wait(x=x, wait_timeout=wait) for x in (1, -1, 3)), return_exceptions=True
            )
            return [r.error if isinstance(r, TaskExecutionError) else r.value for r in results]

        async with worker:
            result = await fan_out.wait(wait_timeout=wait)
        assert result.value == [1, "ValueError: negative", 9], violated(
            "gather keeps order and returns failures in place"
        )

    @pytest.mark.asyncio
    async def test_waiting_parent_lends_its_slot_so_a_full_worker_never_deadlocks(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """With concurrency=1, a parent awaiting a child awaiting a grandchild completes."""
        worker = make_worker(concurrency=1)
        wait = timing.tolerance(LIMIT)

        @worker.task
        async def leaf() -> str:
            return "leaf"

        @worker.task
        async def middle() -> str:
            return f"middle>{(await leaf.wait(wait_timeout=wait)).value}"

        @worker.task
        async def top() -> str:
            return f"top>{(await middle.wait(wait_timeout=wait)).value}"

        async with worker:
            result = await bounded(
                top.wait(wait_timeout=wait), timing.tolerance(3.0), "a parent's slot is lent"
            )
        assert result.value == "top>middle>leaf", violated(
            "a job waiting on another lends its slot: no deadlock at concurrency=1"
        )

    @pytest.mark.asyncio
    async def test_parent_timeout_keeps_running_while_it_waits(
        self, make_worker: WorkerFactory, timing: Timing
    ) -> None:
        """A parent's timeout keeps running while it awaits a child."""
        worker = make_worker(concurrency=2)
        timeout = timing.delay(0.3)
        done = asyncio.Event()

        @worker.task
        async def slow_child() -> None:
            async with asyncio.timeout(timing.delay(3.0)):
                await done.wait()

        @worker.task(timeout=timeout)
        async def impatient_parent() -> None:
            await slow_child.wait(wait_timeout=timing.tolerance(LIMIT))

        async with worker:
            with pytest.raises(TaskTimeoutError):
                await bounded(
                    impatient_parent.wait(wait_timeout=timing.tolerance(LIMIT)),
                    timeout + timing.tolerance(1.0),
                    "the parent times out while waiting",
                )
            done.set()  # let the child finish so the worker stops at once
