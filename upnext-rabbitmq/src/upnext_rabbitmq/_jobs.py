"""A job as an AMQP message: built for its queue or delay, and given back uncounted.

`job_message` routes a job to its work queue, or into the delay ladder, with
the earlier unsettled hand-outs it carries (`HANDED_OUT_HEADER`). `give_back`
re-publishes prefetched jobs a process will not run (closing, isolating a
last-chance job, or held too close to consumer_timeout) and acks the
originals; a job whose copy could not be published goes back into the buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

from pamqp.common import FieldTable

from upnext_rabbitmq._consumer import Consumer
from upnext_rabbitmq._publish import Outgoing, Publisher, persistent
from upnext_rabbitmq._wire_message import WireMessage
from upnext_rabbitmq.topology import HANDED_OUT_HEADER, delay_route, work_queue

__all__ = ["give_back", "job_message"]


def job_message(
    queue: str, job_id: str | None, body: bytes, delay: float, *, prior: int = 0
) -> Outgoing:
    """A job's message; `prior` unsettled hand-outs make its next one a redelivery."""
    route = delay_route(queue, delay)
    exchange, key = route if route is not None else ("", work_queue(queue))
    headers: FieldTable | None = {HANDED_OUT_HEADER: prior} if prior else None
    return Outgoing(exchange, key, body, persistent(job_id, headers=headers), needs=queue)


async def give_back(
    consumer: Consumer, publisher: Publisher, drained: Sequence[tuple[str, WireMessage]]
) -> None:
    """Re-publish `drained` (taken out of the buffer) and ack their originals."""
    if not drained:
        return
    messages = [
        job_message(q, m.message_id, m.body, 0.0, prior=consumer.handed_out_before(m))
        for q, m in drained
    ]
    # Taken now: the channel may change while the copies are published.
    receipts = [consumer.receipt(m) for _, m in drained]
    # A copy may come back to this process before its original is acked.
    with consumer.hold_back([m.message_id or "" for _, m in drained]):
        outcomes = await publisher.publish(messages)
        done = [r for r, err in zip(receipts, outcomes, strict=True) if err is None and r]
        await consumer.ack([r for r in done if consumer.live(r)])
    # Not given back: into the buffer again, to be handed out (not held unseen).
    failed = zip(drained, receipts, outcomes, strict=True)
    consumer.restore([(q, m, r) for (q, m), r, err in failed if err and r])
