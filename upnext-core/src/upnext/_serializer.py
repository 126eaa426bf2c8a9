"""The wire format: job bodies, results and dead-letter entries as JSON bytes.

This is the only module that makes or reads bytes. Everything goes through
pydantic; nothing is ever unpickled. A body starts with its format version
(`v`); a worker dead-letters a version it does not know.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from upnext._durations import MAX_DURATION
from upnext._result import ErrorInfo
from upnext.errors import PayloadTooLarge, SerializationError

__all__ = [
    "FORMAT_VERSION",
    "AttemptRecord",
    "DeadLetterData",
    "JobBody",
    "ResultRecord",
    "body_json",
    "check_finite",
    "check_size",
    "decode_body",
    "encode_body",
]

FORMAT_VERSION = 1

Outcome = Literal["success", "error", "timeout", "retry", "rejected", "lost", "invalid"]


class AttemptRecord(BaseModel):
    """One run of a job: its number, how it ended, where and when."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    number: int
    outcome: Outcome
    worker: str | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None


class JobBody(BaseModel):  # type: ignore[no-redef]  # a field named kwargs vs the mypy plugin
    """Everything a worker needs to run a job, and its history so far.

    Its numbers are finite and its `result_ttl` within `MAX_DURATION`: a body
    read from a broker with anything else is undecodable. NaN and Infinity in
    the arguments are written as JSON can't hold them, so `encode_body` refuses
    them instead of letting them turn into null.
    """

    model_config = ConfigDict(allow_inf_nan=False, ser_json_inf_nan="constants")

    v: int = FORMAT_VERSION
    id: str
    fn: str
    queue: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    lost: int = 0
    history: list[AttemptRecord] = Field(default_factory=list)
    parent_id: str | None = None
    root_id: str | None = None
    replay_of: str | None = None
    reply_to: str | None = None
    result_ttl: float = Field(default=3600.0, ge=0.0, le=MAX_DURATION)
    enqueued_at: float = 0.0
    # Epoch seconds by which the first attempt must start (`expires`): past it,
    # a job no attempt has been charged for is dead-lettered `expired`. Left out
    # of the JSON while None, like `headers`: old bodies decode, and bytes stay.
    expires_at: float | None = None
    # Set by middleware (a trace context, say), carried through retries; no
    # backend reads them. Left out of the JSON while None (see `body_json`).
    headers: dict[str, str] | None = None


# `exclude` arguments that leave out the optional fields that are None, keyed
# by (headers is None, expires_at is None): a body without them is the same
# bytes as before the fields existed (and as small).
_EXCLUDE: dict[tuple[bool, bool], set[str] | None] = {
    (False, False): None,
    (True, False): {"headers"},
    (False, True): {"expires_at"},
    (True, True): {"headers", "expires_at"},
}


def body_json(body: JobBody) -> bytes:
    """The body as JSON bytes, without the optional keys it has no value for (unchecked)."""
    exclude = _EXCLUDE[body.headers is None, body.expires_at is None]
    return body.model_dump_json(exclude=exclude).encode()


class _Version(BaseModel):
    v: int


class ResultRecord(BaseModel):
    """A final result in its compact stored form; the caller builds TaskResult."""

    s: Literal["complete", "failed", "cancelled"]
    v: Any = None
    fn: str
    at: int = 0
    st: float | None = None
    ct: float | None = None
    p: str | None = None
    r: str | None = None
    e: ErrorInfo | None = None


class DeadLetterData(BaseModel):
    """Core's opaque dead-letter entry: the job, why it died, its attempts, its priority."""

    reason: str
    error: ErrorInfo | None = None
    body: JobBody | None = None
    raw: str | None = None  # base64 of an undecodable body
    priority: int = 0  # the envelope's, for a replay

    def to_json(self) -> bytes:
        """The entry as JSON bytes; its body without the optional keys it has no value for."""
        body = self.body
        exclude = None if body is None else _EXCLUDE[body.headers is None, body.expires_at is None]
        return self.model_dump_json(exclude=None if exclude is None else {"body": exclude}).encode()

    @classmethod
    def for_raw(cls, reason: str, error: ErrorInfo, raw: bytes) -> DeadLetterData:
        """An entry for bytes that never decoded into a job."""
        return cls(reason=reason, error=error, raw=base64.b64encode(raw).decode("ascii"))


def check_size(data: bytes, limit: int, what: str) -> bytes:
    """`data` itself, or PayloadTooLarge if it is over `limit` bytes."""
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} is {len(data)} bytes, over the {limit}-byte max_payload")
    return data


def encode_body(body: JobBody, limit: int) -> bytes:
    """The body as bytes, checked against `limit` (and for NaN/Infinity) before any I/O."""
    what = f"job {body.id} ({body.fn})"
    return check_size(check_finite(body_json(body), what), limit, what)


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def check_finite(data: bytes, what: str) -> bytes:
    """`data` itself, or SerializationError if its JSON holds NaN or Infinity.

    Pydantic writes them as bare constants (or null), which JSON can't hold;
    the byte search is cheap, and only a hit is parsed to rule out a string.
    """
    if b"NaN" in data or b"Infinity" in data:
        try:
            json.loads(data, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise SerializationError(f"{what} holds {exc}, which JSON cannot represent") from None
    return data


class UndecodableBody(SerializationError):
    """A body that is not a job this worker can read; carries the reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_body(data: bytes, limit: int) -> JobBody:
    """Parse a body; UndecodableBody (with a reason) for anything else."""
    if len(data) > limit:
        raise UndecodableBody("payload too large", f"{len(data)} bytes > {limit}")
    try:
        body = JobBody.model_validate_json(data)
    except ValidationError as exc:
        try:
            version = _Version.model_validate_json(data).v
        except ValidationError:
            version = FORMAT_VERSION
        if version != FORMAT_VERSION:
            raise UndecodableBody("unknown format version", f"v={version}") from None
        raise UndecodableBody("undecodable", one_line(exc)) from None
    if body.v != FORMAT_VERSION:
        raise UndecodableBody("unknown format version", f"v={body.v}")
    return body


def one_line(exc: ValidationError) -> str:
    """A pydantic error on one line: each failing field and what was wrong."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)[:500]
