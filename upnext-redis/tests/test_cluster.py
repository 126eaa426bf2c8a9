"""Redis Cluster: a private 3-master cluster runs the conformance and semantic classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio.cluster import RedisCluster
from upnext.broker.protocol import Envelope
from upnext.testing import (
    BrokerConformance,
    JobBrowserConformance,
    StateStoreConformance,
    WorkerSemantics,
)
from upnext_redis import RedisBroker

# Run by `nox -s tests` after the rest, alone (see the `serial` marker): three
# servers and a worker's tight timings (a retry within 0.15 s of its delay) ran
# late beside other tests on two cores.
pytestmark = pytest.mark.serial


class TestClusterBroker(BrokerConformance, JobBrowserConformance, StateStoreConformance):
    """The broker, browser and state contracts over three masters (results: see semantics)."""

    @pytest_asyncio.fixture
    async def broker(self, cluster_broker: RedisBroker) -> AsyncIterator[RedisBroker]:
        """The connected cluster broker (own key prefix)."""
        yield cluster_broker


class TestClusterSemantics(WorkerSemantics):
    """A real Worker on the cluster, through every semantic class."""

    @pytest.fixture
    def broker_url(self, redis_cluster_url: str, key_prefix: str) -> str:
        """The cluster URL under this test's own key prefix."""
        return f"{redis_cluster_url}&prefix={key_prefix}"


async def test_a_stale_slot_map_is_reloaded_on_moved(cluster_broker: RedisBroker) -> None:
    """Commands sent to the wrong master come back MOVED; redis-py reloads the map."""
    cluster = cluster_broker._client.redis
    assert isinstance(cluster, RedisCluster)
    await cluster.initialize()
    slots = cluster.nodes_manager.slots_cache
    first = slots[0]
    for slot in slots:
        slots[slot] = first  # every slot on one master
    queues = [f"q{i}" for i in range(12)]
    await cluster_broker.enqueue_many([Envelope(f"j-{q}", q, b"x") for q in queues])
    got = await cluster_broker.receive(queues, limit=20, lease=30.0, wait=1.0)
    assert sorted(d.envelope.queue for d in got) == sorted(queues)
    masters = {nodes[0].name for nodes in cluster.nodes_manager.slots_cache.values()}
    assert len(masters) == 3, "the real map is back"
