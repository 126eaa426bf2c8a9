"""dramatiq on Redis or RabbitMQ: one process with 10 worker threads (``--processes 1
--threads 10``), no Results middleware; Retries max_retries=1 with a 100 ms backoff.

On RabbitMQ dramatiq publishes without publisher confirms by default
(``confirm_delivery=False``); the framework ``dramatiq-confirm`` runs the same
with ``RabbitmqBroker(confirm_delivery=True)``, each send waiting for its confirm.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import _probe
import _servers
import dramatiq  # type: ignore[import-not-found, unused-ignore]

CONFIG = _probe.Config.load()
PROBE = _probe.Probe(CONFIG)
QUEUE = "bench_dramatiq"


def _broker(config: _probe.Config) -> Any:
    if config.broker == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker  # type: ignore[import-not-found, unused-ignore]

        confirm = bool(config.extra.get("confirm_delivery", False))
        return RabbitmqBroker(url=config.url, confirm_delivery=confirm)
    from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found, unused-ignore]

    return RedisBroker(url=config.url)


def _noop(i: int) -> None:
    PROBE.hit(i)


BROKER = _broker(CONFIG)
dramatiq.set_broker(BROKER)
NOOP = dramatiq.actor(
    _noop,
    actor_name="noop",
    queue_name=QUEUE,
    max_retries=1,
    min_backoff=int(CONFIG.retry_delay * 1000),
    max_backoff=int(CONFIG.retry_delay * 1000),
)


def _produce(config: _probe.Config) -> dict[str, Any]:
    # dramatiq has no batch enqueue (group().run() sends one message at a time).
    return _probe.produce_sync(config, lambda i: NOOP.send(i))


def _latency(config: _probe.Config) -> dict[str, Any]:
    return _probe.latency_sync(config, lambda i: NOOP.send(i))


def _work(config: _probe.Config) -> None:
    from dramatiq import Worker

    worker = Worker(BROKER, worker_threads=config.concurrency)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop()


def _clean(config: _probe.Config) -> None:
    if config.broker == "rabbitmq":
        _servers.clean_rabbit([QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"], (), config.url)
    else:
        _servers.flush_redis(config.url)


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            "produce": _produce,
            "latency": _latency,
            "work": lambda c: _work(c),
        }
    )


if __name__ == "__main__":
    main()
