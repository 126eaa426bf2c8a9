"""A job as an AMQP message: built for its queue or delay, and given back uncounted.

`job_message` routes a job to its work queue, or into the delay ladder, with
the earlier unsettled hand-outs it carries (`HANDED_OUT_HEADER`) and its
priority (the AMQP property; `envelope_message` keeps an envelope's). `give_back`
re-publishes prefetched jobs a process will not run (closing, isolating a
last-chance job, or held too close to consumer_timeout) and acks the
originals; a job whose copy could not be published goes back into the buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

from pamqp.common import FieldTable
from upnext.broker.protocol import Envelope

from upnext_rabbitmq._consumer import Consumer
from upnext_rabbitmq._publish import Outgoing, Publisher, persistent
from upnext_rabbitmq._wire_message import WireMessage
from upnext_rabbitmq.topology import HANDED_OUT_HEADER, delay_route, work_queue

__all__ = ["envelope_message", "give_back", "job_message"]


def job_message(
    queue: str, job_id: str | None, body: bytes, delay: float, *, prior: int = 0, priority: int = 0
) -> Outgoing:
    """A job's message; `prior` unsettled hand-outs make its next one a redelivery.

    The priority travels as the AMQP priority property: the delay ladder's
    dead-lettering keeps properties, and a delivery carries it back.
    """
    route = delay_route(queue, delay)
    exchange, key = route if route is not None else ("", work_queue(queue))
    headers: FieldTable | None = {HANDED_OUT_HEADER: prior} if prior else None
    properties = persistent(job_id, headers=headers, priority=priority)
    return Outgoing(exchange, key, body, properties, needs=queue)


def envelope_message(envelope: Envelope, body: bytes, delay: float, *, prior: int = 0) -> Outgoing:
    """The message of `envelope`'s job with `body` and `delay`: its id and priority kept."""
    queue, job_id, priority = envelope.queue, envelope.id, envelope.priority
    return job_message(queue, job_id, body, delay, prior=prior, priority=priority)


async def give_back(
    consumer: Consumer, publisher: Publisher, drained: Sequence[tuple[str, WireMessage]]
) -> None:
    """Re-publish `drained` (taken out of the buffer) and ack their originals."""
    # Receipts taken now: the channel may change while the copies are published.
    # Deliveries of a channel already gone are back on the server: no copy.
    held = [(q, m, r) for q, m in drained if (r := consumer.receipt(m)) and consumer.live(r)]
    if not held:
        return
    messages = [
        job_message(
            q, m.message_id, m.body, 0.0, prior=consumer.handed_out_before(m), priority=m.priority
        )
        for q, m, _ in held
    ]
    # A copy may come back to this process before its original is acked.
    with consumer.hold_back([m.message_id or "" for _, m, _ in held]):
        outcomes = await publisher.publish(messages)
        done = [r for (_, _, r), err in zip(held, outcomes, strict=True) if err is None]
        await consumer.ack([r for r in done if consumer.live(r)])
    # Not given back: into the buffer again, to be handed out (not held unseen).
    consumer.restore([h for h, err in zip(held, outcomes, strict=True) if err])
