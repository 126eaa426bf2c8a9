"""RedisBroker's script plumbing: group indexes, receipts, RECEIVE replies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from upnext.broker.protocol import Delivery, Envelope
from upnext.errors import LeaseLost

if TYPE_CHECKING:
    from upnext_redis._client import RedisClient

__all__ = ["Groups", "Taken", "deliveries", "lost", "receipt_of", "taken", "unpart"]

# One standalone RECEIVE: deliveries, ms to the next event, the wake ids seen.
Taken = tuple[list[Delivery], int, list[bytes]]


class Groups:
    """Assigns 1-based script group indexes to queue names, in first-seen order."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self.index: dict[str, int] = {}

    def __call__(self, queue: str) -> int:
        found = self.index.get(queue)
        if found is None:
            found = self.index[queue] = len(self.index) + 1
        return found

    @property
    def keys(self) -> list[str]:
        return [key for q in self.index for key in self._client.keys.queue(q).group]


def receipt_of(delivery: Delivery) -> tuple[str, str, bytes]:
    receipt = delivery.receipt
    if isinstance(receipt, tuple) and len(receipt) == 3:
        queue, job_id, token = receipt
        if isinstance(queue, str) and isinstance(job_id, str) and isinstance(token, bytes):
            return queue, job_id, token
    # Not one of ours (or forged): a token no hand-out has makes it LeaseLost.
    return delivery.envelope.queue, delivery.envelope.id, b"-"


def taken(names: list[str], reply: list[Any]) -> Taken:
    """What one standalone RECEIVE reply says: deliveries, ms to the next event, ids seen."""
    got = deliveries(names, reply) if len(reply) > 2 + 3 * len(names) else []
    until_ms = int(reply[1]) - int(reply[0]) if int(reply[1]) >= 0 else -1
    return got, until_ms, [bytes(reply[2 + 3 * i]) for i in range(len(names))]


def deliveries(names: list[str], reply: list[Any]) -> list[Delivery]:
    """Deliveries from a RECEIVE reply (layout in scripts.py)."""
    out = []
    pos = 2 + 3 * len(names)
    for i, queue in enumerate(names):
        token = bytes(reply[3 + 3 * i])
        for _ in range(int(reply[4 + 3 * i])):
            job_id = reply[pos].decode()
            count = int(reply[pos + 2])
            envelope = Envelope(job_id, queue, reply[pos + 1], 0.0, int(reply[pos + 3]))
            out.append(Delivery(envelope, (queue, job_id, token), count > 1, count))
            pos += 4
    return out


def unpart(parts: list[list[int]], replies: list[Any], size: int) -> list[Any]:
    """Per-item replies of `parts` back in the batch's order."""
    flags: list[Any] = [0] * size
    for part, reply in zip(parts, replies, strict=True):
        for i, ok in zip(part, reply, strict=True):
            flags[i] = ok
    return flags


def lost(delivery: Delivery) -> LeaseLost:
    return LeaseLost(f"lease lost for job {delivery.envelope.id}")
