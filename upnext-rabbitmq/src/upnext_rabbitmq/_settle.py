"""Settling a batch of deliveries: publish what each outcome needs, then ack in one go.

A Retry or Release publishes a new copy of its job (into the delay ladder or
straight to its work queue), a DeadLetter its record into the DLQ, and an
Ack or DeadLetter with a result for another process the reply to that
process's inbox. Every message of the batch is confirmed together; only then
are the deliveries acked, each one whose messages all went out. A delivery
whose channel has gone is back on the server: its item reports LeaseLost.
"""

from __future__ import annotations

from collections.abc import Sequence

from upnext.broker.protocol import Ack, DeadLetter, Release, Retry, SettleItem, SettleOutcome
from upnext.errors import BrokerError, LeaseLost

from upnext_rabbitmq._consumer import Consumer, Receipt
from upnext_rabbitmq._errors import map_errors
from upnext_rabbitmq._jobs import envelope_message
from upnext_rabbitmq._publish import Outgoing, Publisher
from upnext_rabbitmq.dlq import record_message
from upnext_rabbitmq.results import ReplyInbox

__all__ = ["settle_messages", "settle_together"]


def settle_messages(item: SettleItem, inbox: ReplyInbox) -> list[Outgoing]:
    """The messages `item` publishes before its delivery is acked (maybe none)."""
    envelope = item.delivery.envelope
    out: list[Outgoing] = []
    if isinstance(item, Retry):
        out.append(envelope_message(envelope, item.body, item.delay))
    elif isinstance(item, Release):
        # As if this hand-out never happened: the earlier ones still count.
        held = item.delivery
        prior = held.deliveries - 1 if held.deliveries is not None else int(held.redelivered)
        out.append(envelope_message(envelope, envelope.body, 0.0, prior=prior))
    elif isinstance(item, DeadLetter):
        out.append(record_message(item.record))
    if isinstance(item, Ack | DeadLetter) and item.result is not None:
        write = item.result
        if write.reply_to not in (None, inbox.address):
            message = inbox.outgoing(write)
            if message is not None:
                out.append(message)
    return out


async def settle_together(
    url: str,
    consumer: Consumer,
    publisher: Publisher,
    inbox: ReplyInbox,
    items: Sequence[SettleItem],
) -> list[SettleOutcome]:
    """Settle `items` (their delay levels declared): confirmed publishes, then one ack.

    An item settled twice in the batch, or whose delivery's channel is gone,
    reports LeaseLost. If a publish fails for another reason, the other items
    are acked and that BrokerError is raised; the failed ones stay held.
    """
    outcomes: list[SettleOutcome] = [None] * len(items)
    plans: list[tuple[int, list[Outgoing]]] = []
    seen: set[int] = set()
    for i, item in enumerate(items):
        receipt = item.delivery.receipt
        if not consumer.live(receipt) or id(receipt) in seen:
            outcomes[i] = LeaseLost(f"lease lost for job {item.delivery.envelope.id}")
            continue
        seen.add(id(receipt))
        plans.append((i, settle_messages(item, inbox)))
    copies = [
        items[i].delivery.envelope.id for i, _ in plans if isinstance(items[i], Retry | Release)
    ]
    with consumer.hold_back(copies):
        return await _publish_then_ack(url, consumer, publisher, inbox, items, plans, outcomes)


async def _publish_then_ack(
    url: str,
    consumer: Consumer,
    publisher: Publisher,
    inbox: ReplyInbox,
    items: Sequence[SettleItem],
    plans: list[tuple[int, list[Outgoing]]],
    outcomes: list[SettleOutcome],
) -> list[SettleOutcome]:
    errors = await publisher.publish([m for _, msgs in plans for m in msgs])
    done: list[Receipt] = []
    failure: BrokerError | None = None
    start = 0
    for i, msgs in plans:
        failed = [e for e in errors[start : start + len(msgs)] if e is not None]
        start += len(msgs)
        receipt = items[i].delivery.receipt
        assert isinstance(receipt, Receipt)
        if not consumer.live(receipt):
            # The delivery is (or will be) back on the server: not ours to settle.
            outcomes[i] = LeaseLost(f"lease lost for job {items[i].delivery.envelope.id}")
        elif failed:
            # Still ours (e.g. the publishing channel was not back yet after a
            # reconnect while the consuming one was): settled again on retry.
            # Reported lost, it would stay unacked on a live channel for good.
            failure = failed[0]
        else:
            _keep_local_result(items[i], inbox)
            done.append(receipt)
    with map_errors(url, "acking"):
        await consumer.ack(done)
    if failure is not None:
        raise failure
    return outcomes


def _keep_local_result(item: SettleItem, inbox: ReplyInbox) -> None:
    if isinstance(item, Ack | DeadLetter) and item.result is not None:
        write = item.result
        # No address (an unreadable body): only waiters of this process can see it.
        if write.reply_to in (None, inbox.address):
            inbox.store(write.job_id, write.data, write.ttl)
