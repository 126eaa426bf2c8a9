"""Lifecycle events: per-task hooks and process-wide pluggy plugins.

Per-task hooks (`on_start`, `on_success`, `on_retry`, `on_failure`,
`on_complete`) are given to ``@worker.task``. Each may be sync or async and
take either nothing or one positional `HookEvent`; which is decided once, at
decoration. Plugins implement the hookspecs of `PluginSpec` with
``@upnext.hooks.hookimpl`` and are registered with ``Worker(plugins=[...])``
or by the entry point group ``upnext.plugins``. A hook or plugin that raises
is logged and changes nothing; each call is bounded by the worker's
`hook_timeout`. A plugin may also add middleware to every worker it is loaded
into (`PluginSpec.upnext_middleware`). Hooks other than `on_start` run after the job's settlement
is durable, so they are at-most-once and never delay or duplicate a job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from upnext._worker import Worker
    from upnext.middleware import Middleware

__all__ = ["HookEvent", "PluginSpec", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("upnext")
hookimpl = pluggy.HookimplMarker("upnext")


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What a hook is told about the job that triggered it.

    `status` is the job's status after the event (``active`` for on_start,
    ``scheduled`` for on_retry). `result` is the return value on success;
    `error` is ``"Type: message"`` and `exception` the exception itself on
    failure or retry; `next_delay` is the seconds until the retry.
    """

    job_id: str
    function: str
    queue: str
    attempt: int
    max_attempts: int
    status: str
    result: Any = None
    error: str | None = None
    exception: BaseException | None = None
    next_delay: float | None = None
    reason: str | None = None


class PluginSpec:
    """The events a plugin may implement; each takes one `HookEvent`.

    An implementation may be sync or return an awaitable. An event that no
    registered plugin implements costs nothing.
    """

    @hookspec
    def upnext_job_enqueued(self, event: HookEvent) -> Awaitable[None] | None:
        """A job was durably enqueued (status ``queued`` or ``scheduled``)."""

    @hookspec
    def upnext_job_started(self, event: HookEvent) -> Awaitable[None] | None:
        """An attempt is about to run."""

    @hookspec
    def upnext_job_succeeded(self, event: HookEvent) -> Awaitable[None] | None:
        """The job completed; `event.result` is its value."""

    @hookspec
    def upnext_job_retrying(self, event: HookEvent) -> Awaitable[None] | None:
        """An attempt failed and the job is scheduled again after `event.next_delay`."""

    @hookspec
    def upnext_job_failed(self, event: HookEvent) -> Awaitable[None] | None:
        """The job failed for good (it is in the dead-letter queue)."""

    @hookspec
    def upnext_job_completed(self, event: HookEvent) -> Awaitable[None] | None:
        """The job reached a final status (after succeeded/failed)."""

    @hookspec
    def upnext_job_dead_lettered(self, event: HookEvent) -> Awaitable[None] | None:
        """The job was written to the dead-letter queue; `event.reason` says why."""

    @hookspec
    def upnext_middleware(self, worker: Worker) -> Sequence[Middleware] | None:
        """Middleware to add to `worker`'s pipeline (after the built-ins, before its own).

        Called once, when the worker is built (its tasks may not be registered
        yet). Plugins' lists follow pluggy's call order (`tryfirst` first).
        """
