"""The job pipeline: `Middleware` and what its stages see and decide.

A middleware overrides the stages it needs (see `Middleware`); a worker runs
its built-ins first (`LostRunIsolation`, `JobContext`, `Hooks`, `Timeout`),
then the middleware of its plugins (``upnext_middleware`` hook), then its own
``Worker(middleware=[...])``. See docs/middleware.md.
"""

from upnext._settlement import Settlement
from upnext.middleware._base import CallNext, Middleware
from upnext.middleware._builtins import Hooks, JobContext, LostRunIsolation, Timeout
from upnext.middleware._types import (
    CancelReason,
    DeadLetterJob,
    Decision,
    Delay,
    Job,
    Outcome,
    OutcomeKind,
    Release,
    Skip,
    Submission,
)

__all__ = [
    "CallNext",
    "CancelReason",
    "DeadLetterJob",
    "Decision",
    "Delay",
    "Hooks",
    "Job",
    "JobContext",
    "LostRunIsolation",
    "Middleware",
    "Outcome",
    "OutcomeKind",
    "Release",
    "Settlement",
    "Skip",
    "Submission",
    "Timeout",
]
