"""Which server a key lives on: one for standalone Redis, a slot map for Cluster.

On Cluster (URL option ``cluster=true``) the URL names a seed node; the slot
map comes from ``CLUSTER SLOTS`` and is reloaded when a reply says MOVED or
ASK. Every node gets its own command and blocking pools, built from the
seed's settings (credentials, TLS, timeouts) with the node's address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from upnext_redis._wire import Wire, pack

__all__ = ["Node", "Router"]


class Node:
    """One server: its command pool and its pool for blocking reads."""

    def __init__(self, pool: ConnectionPool, block_pool: ConnectionPool, retries: int) -> None:
        self.pool = pool
        self.block_pool = block_pool
        self.wire = Wire(pool, retries)
        self.block_wire = Wire(block_pool, retries)

    async def aclose(self) -> None:
        """Close both pools."""
        await self.wire.aclose()
        await self.block_wire.aclose()
        await self.pool.disconnect()
        await self.block_pool.disconnect()


def _moved(reply: Any) -> bool:
    # redis-py parses MOVED/ASK into AskError (MovedError is a subclass).
    if isinstance(reply, rx.AskError | rx.TryAgainError):
        return True
    return isinstance(reply, rx.ResponseError) and str(reply).startswith(("MOVED", "ASK"))


class Router:
    """Routes commands by their first key and runs them, one round trip per server."""

    def __init__(self, seed: Node, *, cluster: bool, retries: int) -> None:
        self.seed = seed
        self.cluster = cluster
        self._retries = retries
        self._nodes: dict[tuple[str, int], Node] = {}
        self._slots: list[Node] = []
        self._lock = asyncio.Lock()

    @property
    def nodes(self) -> list[Node]:
        """Every known primary (the seed alone when not a cluster)."""
        return list(self._nodes.values()) if self.cluster else [self.seed]

    async def node_for(self, key: str) -> Node:
        """The server holding `key`."""
        if not self.cluster:
            return self.seed
        if not self._slots:
            await self.refresh()
        return self._slots[key_slot(key.encode())]

    async def refresh(self) -> None:
        """Reload the slot map from the cluster."""
        async with self._lock:
            (reply,) = await self.seed.wire.run([pack(["CLUSTER", "SLOTS"])])
            if isinstance(reply, Exception):
                raise reply
            slots: list[Node | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
            seed_host = self.seed.pool.connection_kwargs.get("host", "127.0.0.1")
            for start, end, primary, *_ in reply:
                host = primary[0].decode() if primary[0] else seed_host
                node = self._node(host, int(primary[1]))
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = node
            if any(node is None for node in slots):
                raise rx.ClusterDownError("the cluster does not cover every slot")
            self._slots = [node for node in slots if node is not None]

    def _node(self, host: str, port: int) -> Node:
        found = self._nodes.get((host, port))
        if found is None:

            def clone(pool: ConnectionPool) -> ConnectionPool:
                kwargs = {**pool.connection_kwargs, "host": host, "port": port}
                if isinstance(pool, BlockingConnectionPool):
                    return BlockingConnectionPool(
                        connection_class=pool.connection_class,
                        max_connections=pool.max_connections,
                        timeout=pool.timeout,
                        **kwargs,
                    )
                return ConnectionPool(connection_class=pool.connection_class, **kwargs)

            found = Node(clone(self.seed.pool), clone(self.seed.block_pool), self._retries)
            self._nodes[(host, port)] = found
        return found

    async def run(self, routed: Sequence[tuple[str, bytes]]) -> list[Any]:
        """Run (routing key, packed command) pairs; replies in order, errors as values."""
        if not self.cluster:
            return await self.seed.wire.run([packed for _, packed in routed])
        replies = await self._run_cluster(routed)
        stale = [i for i, reply in enumerate(replies) if _moved(reply)]
        if stale:
            await self.refresh()
            again = await self._run_cluster([routed[i] for i in stale])
            for i, reply in zip(stale, again, strict=True):
                replies[i] = reply
        return replies

    async def _run_cluster(self, routed: Sequence[tuple[str, bytes]]) -> list[Any]:
        by_node: dict[int, tuple[Node, list[int]]] = {}
        for i, (key, _) in enumerate(routed):
            node = await self.node_for(key)
            by_node.setdefault(id(node), (node, []))[1].append(i)
        groups = list(by_node.values())
        results = await asyncio.gather(
            *(node.wire.run([routed[i][1] for i in idx]) for node, idx in groups)
        )
        replies: list[Any] = [None] * len(routed)
        for (_, idx), got in zip(groups, results, strict=True):
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies

    async def aclose(self) -> None:
        """Close every server's pools."""
        for node in {id(n): n for n in [self.seed, *self._nodes.values()]}.values():
            await node.aclose()
        self._nodes.clear()
        self._slots = []
