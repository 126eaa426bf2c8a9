"""Settlements of a decoded job that did not run: a before_run decision, a dead letter, a cancel.

No attempt is charged for them (a user cancel of a running job charges the
attempt that ran).
"""

from __future__ import annotations

from upnext._result import ErrorInfo
from upnext._settlement import Settlement, dead_letter, settle_cancelled
from upnext.broker.protocol import Release as ReleaseItem
from upnext.broker.protocol import Retry as RetryItem
from upnext.middleware._types import Decision, Delay, Job, Release, Skip

__all__ = ["cancelled_by_user", "dead_letter_unrun", "settle_decision"]


def dead_letter_unrun(job: Job, reason: str, error: ErrorInfo) -> Settlement:
    """Dead-letter a decoded job before it ran (its remaining attempts unused)."""
    assert job.body is not None
    return dead_letter(
        job.delivery,
        reason=reason,
        error=error,
        body=job.body,
        attempts=job.body.attempts,
        max_attempts=job.max_attempts,
    )


def settle_decision(job: Job, decision: Decision) -> Settlement:
    """The settlement of a before_run decision (no attempt is charged)."""
    delivery = job.delivery
    if isinstance(decision, Skip):
        assert job.body is not None
        return settle_cancelled(
            delivery,
            job.body,
            reason=decision.reason,
            attempts=job.body.attempts,
            max_attempts=job.max_attempts,
        )
    if isinstance(decision, Delay):
        retry = RetryItem(delivery, delivery.envelope.body, decision.seconds)
        return Settlement(retry, status="scheduled")
    if isinstance(decision, Release):
        return Settlement(ReleaseItem(delivery), status="released")
    error = ErrorInfo(type="DeadLettered", message=decision.reason)
    return dead_letter_unrun(job, decision.reason, error)


def cancelled_by_user(job: Job, started: float | None) -> Settlement:
    """Cancelled by a user: before its body ran (`started` None), or while it ran."""
    assert job.body is not None
    attempts = job.attempt if started is not None else job.body.attempts
    return settle_cancelled(
        job.delivery,
        job.body,
        reason="cancelled by user",
        attempts=attempts,
        max_attempts=job.max_attempts,
        started=started,
    )
