"""Scenario 7: what cannot be serialized fails loudly and early, and is never retried blindly."""

from __future__ import annotations

from typing import Any

import pytest
import upnext
from chaoskit.backends import Backend
from upnext.testing.loopback import free_port

pytestmark = pytest.mark.chaos


def _unreachable(scheme: str) -> str:
    """A URL of `scheme` on a closed loopback port: any network I/O would fail there."""
    port = free_port()
    return {
        "redis": f"redis://127.0.0.1:{port}/0",
        "rabbitmq": f"amqp://guest:guest@127.0.0.1:{port}/",
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/test",
    }[scheme]


@pytest.mark.parametrize("scheme", ["redis", "rabbitmq", "postgres"])
async def test_bad_arguments_fail_before_any_network_io(scheme: str) -> None:
    """Unserializable arguments or an oversize payload: their own error, not BrokerUnavailable."""
    worker = upnext.Worker("ser", broker=_unreachable(scheme), load_plugins=False)

    @worker.task(name="ser.take")
    async def take(value: Any) -> None: ...

    with pytest.raises(upnext.SerializationError):
        await take.submit(value=object())
    with pytest.raises(upnext.PayloadTooLarge):
        await take.submit(value="x" * (1024 * 1024 + 1))
    await worker.aclose()


async def test_unserializable_result_fails_the_job_once(any_backend: Backend) -> None:
    """A result that cannot be serialized: the job fails and is dead-lettered, not retried."""
    worker = upnext.Worker(any_backend.queue, broker=any_backend.url, receive_wait=0.5)
    runs: list[int] = []

    @worker.task(name="ser.give", retries=3, retry_delay=0.1)
    async def give() -> Any:
        runs.append(upnext.get_current_context().attempt)
        return object()

    async with worker:
        future = await give.submit()
        with pytest.raises(upnext.TaskExecutionError) as caught:
            await future.result(20.0)
        entries = (await worker.dlq.list(queue=any_backend.queue)).items
    await worker.aclose()
    assert caught.value.status == "failed"
    assert runs == [1], "an unserializable result must not be retried"
    assert [e.job_id for e in entries] == [future.job_id]
