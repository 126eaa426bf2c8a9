"""What the pipeline's stages are given and may return.

`Submission` is one job about to be enqueued (the producer's side). `Job` is
one delivery being worked on (the worker's side); `Outcome` says how its
body's call ended; `Settlement` what was written for it. A `before_run`
stage may answer with a `Decision`: `Skip`, `Delay`, `Release` or
`DeadLetterJob`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from upnext._durations import duration_problem

if TYPE_CHECKING:
    from upnext._jobrun import JobRun
    from upnext._serializer import JobBody
    from upnext._task import Task
    from upnext.broker.protocol import Delivery

__all__ = [
    "CancelReason",
    "DeadLetterJob",
    "Decision",
    "Delay",
    "Job",
    "Outcome",
    "OutcomeKind",
    "Release",
    "Skip",
    "Submission",
]

CancelReason = Literal["timeout", "lease_lost", "shutdown", "user"]
"""Why a job was stopped before its body ended.

``timeout``: its attempt ran past the task's timeout (settled as a timed-out
attempt: retried, then dead-lettered). ``lease_lost``: its lease could not be
kept, another worker may hold it (the outcome is discarded). ``shutdown``: the
worker gives it back, uncounted (stopping, or making room for a job that must
run alone). ``user``: someone cancelled it (settled ``cancelled``: no retry,
no dead letter).
"""

OutcomeKind = Literal["success", "error", "timeout", "retry", "rejected", "cancelled"]


@dataclass(frozen=True, slots=True)
class Skip:
    """Settle the job without running it: status ``cancelled`` with `reason`.

    Acked, never retried nor dead-lettered; a waiter's ``value()`` raises
    `TaskExecutionError` with status ``cancelled``.
    """

    reason: str = "skipped"


@dataclass(frozen=True, slots=True)
class Delay:
    """Make the job due again after `seconds`, unchanged: no attempt is charged.

    `seconds` must be a duration upnext accepts (finite, >= 0, at most 90
    days); anything else raises ValueError here, where the middleware made it.
    """

    seconds: float

    def __post_init__(self) -> None:
        if (problem := duration_problem(self.seconds)) is not None:
            raise ValueError(f"invalid Delay: {self.seconds!r} ({problem})")


@dataclass(frozen=True, slots=True)
class Release:
    """Give the job back at once, unchanged and uncounted (any worker may take it)."""


@dataclass(frozen=True, slots=True)
class DeadLetterJob:
    """Dead-letter the job now, with `reason`, keeping its remaining attempts unused."""

    reason: str


Decision = Skip | Delay | Release | DeadLetterJob


class Job:
    """One delivered job as the worker stages see it.

    `attempt` is the attempt this run would be (1-based); `args` and `kwargs`
    are the decoded arguments (None when the body could not be decoded or
    validated); `task` is None when no task of that name is registered here.
    `state` is a dict for middleware to carry data from one stage to the next
    of the same job (a span, a slot it holds); `headers` are the job's own (a
    trace context), and what a middleware writes there before the settle
    travels with the job's retry.
    """

    __slots__ = (
        "_run",
        "_state",
        "args",
        "attempt",
        "body",
        "function",
        "id",
        "kwargs",
        "max_attempts",
        "queue",
        "task",
    )

    def __init__(
        self,
        run: JobRun,
        *,
        function: str,
        task: Task[Any, Any] | None,
        body: JobBody | None,
    ) -> None:
        envelope = run.delivery.envelope
        self._run = run
        self._state: dict[str, Any] | None = None
        self.id = envelope.id
        self.queue = envelope.queue
        self.function = function
        self.task = task
        self.body = body
        self.attempt = body.attempts + 1 if body is not None else 1
        self.max_attempts = task.policy.max_attempts if task is not None else 0
        self.args: list[Any] | None = None
        self.kwargs: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.function} attempt={self.attempt}>"

    @property
    def delivery(self) -> Delivery:
        """The broker's delivery (its envelope, receipt and redelivery facts)."""
        return self._run.delivery

    @property
    def redelivered(self) -> bool:
        """True if an earlier hand-out of this body ended without a settle."""
        return self._run.delivery.redelivered

    @property
    def cancel_reason(self) -> CancelReason | None:
        """Why the job is being stopped early, or None while it is not."""
        return self._run.cancel_reason

    @property
    def headers(self) -> dict[str, str]:
        """The job's headers (made on first use; empty for an undecodable body).

        Written before the settle, they are part of the retry's body: that is
        how one attempt leaves something for the next.
        """
        body = self.body
        if body is None:
            kept: dict[str, str] = self.state.setdefault("_headers", {})
            return kept
        if body.headers is None:
            body.headers = {}
        return body.headers

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space of this job's run, shared by the stages (made on first use)."""
        if self._state is None:
            self._state = {}
        return self._state


@dataclass(slots=True)
class Outcome:
    """How one attempt of a task's body ended: a value, or an exception, and its kind.

    `kind` is ``success`` (`value` holds the return value), ``error`` (the
    body raised `exception`), ``timeout``, ``retry`` (`upnext.Retry`),
    ``rejected`` (`upnext.Reject`) or ``cancelled`` (a user cancel).
    `number` is the attempt (1-based), `worker_id` the worker that ran it,
    `started` and `finished` Unix timestamps.
    """

    task: Task[Any, Any]
    body: JobBody
    number: int
    worker_id: str
    started: float
    finished: float
    kind: OutcomeKind
    value: Any = None
    exception: BaseException | None = None


@dataclass(slots=True)
class Submission:
    """One job about to be enqueued, as `before_enqueue` may change it.

    `delay` (seconds) and `priority` may be changed; `dedupe_to` makes the
    caller get a Future for that existing job id instead of enqueuing this one.
    `args` and `kwargs` are the encoded (JSON-ready) arguments. `headers`
    (strings to strings, a trace context say) travel with the job to the
    worker's `Job.headers`, and through its retries.
    """

    task: Task[Any, Any]
    job_id: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    delay: float = 0.0
    priority: int = 0
    dedupe_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def dedupe(self, job_id: str) -> None:
        """Do not enqueue this job: the caller gets a Future for `job_id` instead
        (`Future.duplicate` is True: the caller made no job)."""
        self.dedupe_to = job_id
