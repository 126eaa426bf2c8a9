"""Unique jobs, the producer's side: one claim per key in the `StateStore`.

A submit whose job has a key (a chosen `job_id`, `submit_idempotent`'s key,
a task's `unique_key`) first claims ``upnext:unique:<queue>:<key>`` with
``expect="absent"``. The one caller whose claim is written enqueues the job;
every other caller gets a Future for the job named in the claim, marked
`duplicate`, and enqueues nothing. Linearizable writes on one key make that
exactly one caller, across any number of processes.

A claim is written ``pending`` with a short TTL (`PENDING_TTL`) and marked
``ok`` with the job's own TTL once the enqueue returned, so a producer
killed between the two holds the key only until the pending TTL lapses. A
caller that meets a pending claim waits for it to be marked (the job then
exists, as `submit`'s contract says) or to lapse (then it claims the key
itself). While the job waits or runs, its claim lives `HOLD` past its due
time and each attempt's start renews it; at the job's final settle the
worker cuts it to the job's `result_ttl` (`upnext._unique_run`), so a key
is free again when its result expires. With ``unique_for`` (throttle) the
claim lives exactly that long from the first submit, whatever the job does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import TYPE_CHECKING, Any, Final

from upnext._backoff import Backoff
from upnext._statekeys import unique_key
from upnext.broker.state import StateStore, StateWrite
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._calloptions import CallOptions
    from upnext._task import Task

__all__ = [
    "HOLD",
    "PENDING_TTL",
    "UNIQUE_HEADER",
    "Claim",
    "check_unique_template",
    "claim_value",
    "confirm",
    "cut_claim",
    "format_unique_key",
    "read_claim",
    "release",
    "take",
    "task_key",
]

log = logging.getLogger("upnext")

PENDING_TTL: Final = 30.0
"""Seconds a claim stays ``pending`` while its job is enqueued (a killed producer's lapses)."""

HOLD: Final = 86400.0
"""Seconds a claim outlives its job's due time while the job waits, and each start's timeout."""

UNIQUE_HEADER: Final = "upnext-unique"
"""The header naming a job's unique key, for the worker to cut its claim at the final settle."""

_FIELD_ROOT = re.compile(r"[.\[]")


def task_key(task_name: str, key: object) -> str:
    """The job id of a task's idempotency key: ``<task name>:<key>``."""
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"invalid idempotency key: {key!r} (must be a non-empty str)")
    return f"{task_name}:{key}"


def check_unique_template(
    template: object, fn: Callable[..., Any], owner: str, *, option: str = "unique_key"
) -> str:
    """`template` if each of its ``{placeholders}`` names a parameter of `fn`; else one line.

    `option` names the option the template was given to, in the error.
    """
    if not isinstance(template, str) or not template:
        raise ConfigurationError(f"{owner}: {option} must be a non-empty str, got {template!r}")
    params = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    try:
        fields = [field for _, field, _, _ in Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigurationError(f"{owner}: invalid {option} {template!r}: {exc}") from None
    for field in fields:
        name = _FIELD_ROOT.split(field, maxsplit=1)[0]
        if name not in params:
            raise ConfigurationError(
                f"{owner}: {option} {template!r} names {name or '{}'!r}, which is not a"
                f" parameter (parameters: {', '.join(params) or 'none'})"
            )
    return template


def format_unique_key(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The task's `unique_key` filled in with a valid call's validated arguments."""
    assert task.unique_key is not None
    try:
        return task.unique_key.format(**task.signature.bound(args, kwargs))
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"task {task.name}: unique_key {task.unique_key!r} cannot be filled in: {exc!r}"
        ) from None


def claim_value(job_id: str, ok: bool) -> bytes:
    """A claim's stored value: the job holding the key, and whether it is enqueued."""
    return json.dumps({"job": job_id, "ok": ok}, separators=(",", ":")).encode()


def read_claim(value: bytes, key: str) -> tuple[str, bool]:
    """(job id, enqueued) of a stored claim; a value not ours reads as `key`'s job, enqueued."""
    try:
        data = json.loads(value)
        return str(data["job"]), bool(data["ok"])
    except (ValueError, KeyError, TypeError):
        return key, True


@dataclass(frozen=True, slots=True)
class Claim:
    """One key to claim for one job: the state `key`, the job's id and the claim's TTL once
    the job is enqueued (`ttl`)."""

    key: str
    job_id: str
    ttl: float

    @classmethod
    def of(cls, queue: str, key: str, job_id: str, options: CallOptions) -> Claim:
        """The claim of a job with unique `key` in `queue`, submitted with `options`."""
        if options.unique_for is not None:
            return cls(unique_key(queue, key), job_id, options.unique_for)
        return cls(unique_key(queue, key), job_id, options.delay + HOLD)

    def pending(self) -> StateWrite:
        """The write that takes the key for this job, not yet enqueued."""
        return StateWrite(
            self.key, claim_value(self.job_id, False), min(PENDING_TTL, self.ttl), "absent"
        )


async def take(state: StateStore, claims: Sequence[Claim]) -> list[str | None]:
    """Claim each key; None where this caller now holds it (it must enqueue the job), else
    the id of the job holding it, returned once that job is enqueued. A key claimed twice in
    one call is held by its first claim; the later ones get that claim's job."""
    first: dict[str, Claim] = {}
    for claim in claims:
        first.setdefault(claim.key, claim)
    won = await state.state_put([claim.pending() for claim in first.values()])
    holders = {
        claim.key: None if ok else await _holder(state, claim)
        for ok, claim in zip(won, first.values(), strict=True)
    }
    return [
        holders[claim.key]
        if first[claim.key] is claim
        else holders[claim.key] or first[claim.key].job_id
        for claim in claims
    ]


async def _holder(state: StateStore, claim: Claim) -> str | None:
    """The job holding `claim.key` once enqueued; None if the key came free and is ours now."""
    pauses = Backoff(first=0.005, cap=0.1)
    while True:
        [entry] = await state.state_get([claim.key])
        if entry is None:  # its pending claim lapsed, or its result expired: try again
            [won] = await state.state_put([claim.pending()])
            if won:
                return None
            continue
        job_id, enqueued = read_claim(entry.value, claim.key)
        if enqueued:
            return job_id
        await asyncio.sleep(next(pauses))


async def confirm(state: StateStore, claims: Sequence[Claim]) -> None:
    """Mark the claims of enqueued jobs, each with its job's TTL: only a claim still pending
    for its job. A worker may have run the job meanwhile, renewed its claim and cut it at
    its settle; writing then would hold a finished job's key for `HOLD`."""
    await _while_pending(state, claims, lambda c: (claim_value(c.job_id, True), c.ttl))


async def release(state: StateStore, claims: Sequence[Claim]) -> None:
    """Free the pending claims of jobs whose enqueue failed (only while still ours)."""
    try:
        await _while_pending(state, claims, lambda c: (None, None))
    except Exception as exc:  # the enqueue's own error matters more; the claims lapse anyway
        log.warning("freeing unique claims after a failed enqueue failed: %s", exc)


async def _while_pending(
    state: StateStore,
    claims: Sequence[Claim],
    value: Callable[[Claim], tuple[bytes | None, float | None]],
) -> None:
    """Write `value(claim)` (a value and TTL; None deletes) over each claim still pending for
    its own job, compare-and-set on the version read: one read and one write for them all."""
    if not claims:
        return
    entries = await state.state_get([c.key for c in claims])
    writes = [
        StateWrite(c.key, *value(c), expect=entry.version)
        for c, entry in zip(claims, entries, strict=True)
        if entry is not None and read_claim(entry.value, c.key) == (c.job_id, False)
    ]
    if writes:
        await state.state_put(writes)


async def cut_claim(state: StateStore, queue: str, key: str, job_id: str, ttl: float) -> None:
    """A settled job keeps its key only while its result is kept (`ttl`; 0 frees it now).

    Only a claim naming `job_id` is changed: a key another job took since is left alone.
    """
    state_key = unique_key(queue, key)
    [entry] = await state.state_get([state_key])
    if entry is None or read_claim(entry.value, state_key)[0] != job_id:
        return
    keep = ttl > 0.001  # a TTL that small is gone before it is written
    value = claim_value(job_id, True) if keep else None
    await state.state_put([StateWrite(state_key, value, ttl if keep else None, entry.version)])
