"""celery on Redis or RabbitMQ: ``worker -P solo`` (the fastest pool for no-op jobs),
prefetch multiplier 64, no gossip/mingle/heartbeat/remote control, no result backend.
Retry: autoretry_for with countdown 0.1 s.
"""

from __future__ import annotations

from typing import Any

import _probe
import _servers
from celery import Celery  # type: ignore[import-not-found, unused-ignore]

CONFIG = _probe.Config.load()
PROBE = _probe.Probe(CONFIG)
QUEUE = "bench_celery"

APP = Celery("bench", broker=CONFIG.url)
APP.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=64,
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


def _noop(i: int) -> None:
    PROBE.hit(i)


NOOP = APP.task(
    name="noop",
    autoretry_for=(_probe.Flaky,),
    max_retries=1,
    default_retry_delay=CONFIG.retry_delay,
    retry_backoff=False,
    retry_jitter=False,
)(_noop)


def _send(i: int) -> Any:
    return NOOP.apply_async((i,), queue=QUEUE)


def _work(config: _probe.Config) -> None:
    APP.worker_main(
        [
            "worker",
            "-P",
            "solo",
            "-Q",
            QUEUE,
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def _clean(config: _probe.Config) -> None:
    if config.broker == "rabbitmq":
        _servers.clean_rabbit([QUEUE], [QUEUE], config.url)
    else:
        _servers.flush_redis(config.url)


def main() -> None:
    """Dispatch the role given on the command line."""
    _probe.dispatch(
        {
            "clean": lambda c: _clean(c),
            # celery has no batch publish (group() still sends one message per task).
            "produce": lambda c: _probe.produce_sync(c, _send),
            "latency": lambda c: _probe.latency_sync(c, _send),
            "work": lambda c: _work(c),
        }
    )


if __name__ == "__main__":
    main()
