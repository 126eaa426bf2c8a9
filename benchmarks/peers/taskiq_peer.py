"""taskiq on Redis (taskiq-redis ListQueueBroker) or RabbitMQ (taskiq-aio-pika).

One receiver in this process (``run_receiver_task``, what ``taskiq worker`` runs in
each of its processes), max_async_tasks=10, no result backend, uvloop.
Retries: SmartRetryMiddleware (2 attempts, 0.1 s delay; the Redis list broker
has no delayed delivery, so there the retry is immediate).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import _probe
import _servers
from taskiq.api import run_receiver_task  # type: ignore[import-not-found, unused-ignore]
from taskiq.middlewares import SmartRetryMiddleware  # type: ignore[import-not-found, unused-ignore]

CONFIG = _probe.Config.load()
PROBE = _probe.Probe(CONFIG)
NAME = "bench_taskiq"


async def _noop(i: int) -> None:
    PROBE.hit(i)


def _broker(config: _probe.Config) -> Any:
    if config.broker == "rabbitmq":
        from taskiq_aio_pika import AioPikaBroker  # type: ignore[import-not-found, unused-ignore]
        from taskiq_aio_pika.exchange import Exchange  # type: ignore[import-not-found, unused-ignore]
        from taskiq_aio_pika.queue import Queue, QueueType  # type: ignore[import-not-found, unused-ignore]

        broker = AioPikaBroker(
            config.url,
            exchange=Exchange(name=NAME),
            # Classic queues, as upnext uses by default (taskiq-aio-pika defaults to quorum).
            task_queues=[Queue(name=NAME, type=QueueType.CLASSIC)],
            dead_letter_queue=Queue(name=f"{NAME}.dead_letter", type=QueueType.CLASSIC),
            delay_queue=Queue(name=f"{NAME}.delay", type=QueueType.CLASSIC),
        )
    else:
        from taskiq_redis import ListQueueBroker  # type: ignore[import-not-found, unused-ignore]

        broker = ListQueueBroker(config.url, queue_name=NAME)
    return broker.with_middlewares(
        SmartRetryMiddleware(default_retry_count=2, default_delay=config.retry_delay)
    )


BROKER = _broker(CONFIG)
NOOP = BROKER.task(task_name="noop", retry_on_error=True)(_noop)


async def _with_broker(config: _probe.Config, run: Any) -> dict[str, Any]:
    await BROKER.startup()

    async def one(i: int) -> Any:
        return await NOOP.kiq(i)

    result: dict[str, Any] = await run(config, one)  # taskiq has no batch kick
    await BROKER.shutdown()
    return result


async def _work(config: _probe.Config) -> None:
    BROKER.is_worker_process = True  # what `taskiq worker` sets: startup then declares consumers
    await BROKER.startup()
    with contextlib.suppress(asyncio.CancelledError):
        await run_receiver_task(BROKER, max_async_tasks=config.concurrency)


def _clean(config: _probe.Config) -> None:
    if config.broker == "rabbitmq":
        queues = [NAME, f"{NAME}.dead_letter", f"{NAME}.delay"]
        _servers.clean_rabbit(queues, [NAME], config.url)
    else:
        _servers.flush_redis(config.url)


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            "produce": lambda c: asyncio.run(_with_broker(c, _probe.produce_async)),
            "latency": lambda c: asyncio.run(_with_broker(c, _probe.latency_async)),
            "work": lambda c: asyncio.run(_work(c)),
        }
    )


if __name__ == "__main__":
    main()
