"""The enqueue itself: encode job bodies and hand them to the broker in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from upnext._serializer import JobBody, encode_body
from upnext._unconsumed import warn_if_no_worker
from upnext.broker.optional import TransactionalEnqueue
from upnext.broker.protocol import Envelope
from upnext.errors import UnsupportedOperation
from upnext.hooks import HookEvent

if TYPE_CHECKING:
    from upnext._task import Task
    from upnext._worker import Worker

__all__ = ["enqueue_bodies"]


async def enqueue_bodies(
    worker: Worker,
    task: Task[Any, Any],
    bodies: Sequence[JobBody],
    delays: Sequence[float],
    priorities: Sequence[int],
    connection: object | None,
) -> None:
    """Encode `bodies` and enqueue them in one round trip (in `connection`'s transaction)."""
    client = worker.connected_client()
    if client is None:
        # Bad input (unencodable, too large) fails before any I/O.
        for body in bodies:
            encode_body(body, worker.max_payload)
        client = await worker.client()
    # The reply address is known once connected; encoded once, with it.
    reply_to = client.store.reply_address()
    if reply_to is not None:
        for body in bodies:
            body.reply_to = reply_to
    encoded = [encode_body(body, worker.max_payload) for body in bodies]
    envelopes = [
        Envelope(body.id, body.queue, data, delay, priority)
        for body, data, delay, priority in zip(bodies, encoded, delays, priorities, strict=True)
    ]
    warn_if_no_worker(client.broker)
    if connection is None:
        await client.broker.enqueue_many(envelopes)
    elif isinstance(client.broker, TransactionalEnqueue):
        await client.broker.enqueue_in_transaction(connection, envelopes)
    else:
        raise UnsupportedOperation(f"{client.name} cannot enqueue in your transaction")
    if "upnext_job_enqueued" in worker.plugins.active:
        for body, delay in zip(bodies, delays, strict=True):
            status = "scheduled" if delay > 0 else "queued"
            event = HookEvent(body.id, body.fn, body.queue, 0, task.policy.max_attempts, status)
            await worker.plugins.emit("upnext_job_enqueued", event, worker.hook_timeout)
