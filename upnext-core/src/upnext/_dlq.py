"""`worker.dlq`: browse, replay and delete dead-lettered jobs."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from upnext._result import ErrorInfo
from upnext._serializer import AttemptRecord, DeadLetterData, JobBody, encode_body
from upnext.broker.cursor import dead_letter_page
from upnext.broker.protocol import DeadLetterAdmin, DeadLetterRecord, Envelope
from upnext.errors import UnsupportedOperation

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = ["DeadLetterEntry", "DeadLetterQueue", "EntryPage", "Payload"]


class Payload(BaseModel):  # type: ignore[no-redef]  # a field named kwargs vs the mypy plugin
    """A job's arguments as they were submitted."""

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DeadLetterEntry(BaseModel):
    """A job in the dead-letter queue: what it was, why it died, every attempt."""

    model_config = ConfigDict(frozen=True)

    id: str
    job_id: str
    function: str
    queue: str
    reason: str
    payload: Payload | None
    raw: str | None = None
    error: ErrorInfo | None
    attempts: list[AttemptRecord]
    failed_at: datetime
    parent_id: str | None = None
    root_id: str | None = None
    replay_of: str | None = None
    priority: int = 0

    @property
    def replayable(self) -> bool:
        """False for bytes that never decoded into a job."""
        return self.payload is not None

    @classmethod
    def from_record(cls, record: DeadLetterRecord) -> DeadLetterEntry:
        """Decode a backend record into an entry."""
        data = _entry_data(record)
        body = data.body
        return cls(
            id=record.id,
            job_id=record.job_id,
            function=record.function,
            queue=record.queue,
            reason=record.reason,
            payload=None if body is None else Payload(args=body.args, kwargs=body.kwargs),
            raw=data.raw,
            error=data.error,
            attempts=[] if body is None else list(body.history),
            failed_at=datetime.fromtimestamp(record.failed_at, UTC),
            parent_id=None if body is None else body.parent_id,
            root_id=None if body is None else body.root_id,
            replay_of=None if body is None else body.replay_of,
            priority=data.priority,
        )


def _entry_data(record: DeadLetterRecord) -> DeadLetterData:
    """Core's entry; or, for a dead letter core did not write (a broker-side one), the
    job body alone, else the raw bytes."""
    try:
        return DeadLetterData.model_validate_json(record.data)
    except ValidationError:
        pass
    try:
        body = JobBody.model_validate_json(record.data)
    except ValidationError:
        return DeadLetterData.for_raw(
            record.reason, ErrorInfo(type="Unknown", message=""), record.data
        )
    return DeadLetterData(reason=record.reason, body=body)


class EntryPage(BaseModel):
    """A page of entries, newest first, and the cursor of the next page."""

    items: list[DeadLetterEntry]
    next_cursor: str | None


class DeadLetterQueue:
    """The dead-letter queue of a worker's broker."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def _admin(self) -> DeadLetterAdmin:
        client = await self._worker.client()
        if (
            not isinstance(client.broker, DeadLetterAdmin)
            or client.broker.capabilities.dlq_access is None
        ):
            raise UnsupportedOperation(f"{client.name} offers no dead-letter access")
        return client.broker

    async def list(
        self,
        limit: int = 50,
        cursor: str | None = None,
        queue: str | None = None,
        function: str | None = None,
        job_id: str | None = None,
    ) -> EntryPage:
        """Entries newest first; pass `next_cursor` back for the next page.

        `function` matches the dotted name or a dotted suffix of it
        (``charge_card`` finds ``app.charge_card``); `job_id` finds the
        entries of one job (the one it died as, not a replay's new id).
        """
        if not 1 <= limit <= 500:
            raise ValueError(f"limit must be between 1 and 500, got {limit}")
        admin = await self._admin()
        page = await dead_letter_page(
            admin, queue=queue, function=function, limit=limit, cursor=cursor, job_id=job_id
        )
        return EntryPage(
            items=[DeadLetterEntry.from_record(r) for r in page.records],
            next_cursor=page.next_cursor,
        )

    async def get(self, entry_id: str) -> DeadLetterEntry:
        """One entry; DeadLetterNotFound if it is gone."""
        admin = await self._admin()
        return DeadLetterEntry.from_record(await admin.dlq_get(entry_id))

    async def replay(self, entry_id: str) -> str:
        """Enqueue the entry's job again as a new job and remove the entry; the new job id.

        The new job keeps function, queue, arguments, lineage and priority,
        starts at attempt 1, and records `replay_of`. Of two concurrent replays one
        wins; the other raises DeadLetterNotFound.
        """
        admin = await self._admin()
        record = await admin.dlq_get(entry_id)
        data = _entry_data(record)
        old = data.body
        if old is None:
            raise UnsupportedOperation(
                f"entry {entry_id} never decoded into a job; it can't be replayed"
            )
        client = await self._worker.client()
        body = JobBody(
            id=uuid.uuid4().hex,
            fn=old.fn,
            queue=old.queue,
            args=old.args,
            kwargs=old.kwargs,
            parent_id=old.parent_id,
            root_id=old.root_id,
            replay_of=old.id,
            reply_to=client.store.reply_address(),
            result_ttl=old.result_ttl,
            enqueued_at=time.time(),
        )
        encoded = encode_body(body, self._worker.max_payload)
        envelope = Envelope(body.id, body.queue, encoded, priority=data.priority)
        await admin.dlq_replay(entry_id, envelope)
        return body.id

    async def delete(self, entry_id: str) -> None:
        """Remove one entry; DeadLetterNotFound if it is gone."""
        await (await self._admin()).dlq_delete(entry_id)

    async def purge(self, queue: str | None = None) -> int:
        """Remove every entry (of `queue`); how many were removed."""
        return await (await self._admin()).dlq_purge(queue)

    async def count(self, queue: str | None = None) -> int:
        """How many entries (of `queue`)."""
        return await (await self._admin()).dlq_count(queue)
