"""Scenario 3: the broker goes away mid-run and comes back.

Redis: a private redis-server (AOF, appendfsync always) is SIGKILLed and
restarted on the same port. RabbitMQ and PostgreSQL: workers and producer
reach the shared server through a proxy that cuts every connection and
refuses new ones (the shared servers are never stopped). Meanwhile the test
submits a job every 50 ms, retrying each one until it is accepted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import upnext
from chaoskit import FULL
from chaoskit.backends import (
    BACKENDS,
    Backend,
    cleanup,
    make_backend,
    server_address,
    through,
)
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import Pool, wait_until
from chaoskit.proxy import FaultyProxy
from chaoskit.servers import PrivateRedis
from chaoskit.worker import Options, Tasks, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240 if FULL else 90)]

OUTAGE = 15.0 if FULL else 3.0
BACKLOG = 5_000 if FULL else 800  # jobs of 50 ms queued before the outage: work left after it
SUBMIT_BOUND = 5.0  # an enqueue during the outage returns (either way) within this
RESUME_BOUND = 5.0  # jobs start again within this of the broker's return


class Outage:
    """Takes the broker away and brings it back."""

    async def down(self) -> None:
        raise NotImplementedError

    async def up(self) -> None:
        raise NotImplementedError


@dataclass
class _Killed(Outage):
    server: PrivateRedis

    async def down(self) -> None:
        await self.server.kill()

    async def up(self) -> None:
        await self.server.start()


@dataclass
class _Refused(Outage):
    proxy: FaultyProxy

    async def down(self) -> None:
        await self.proxy.down()

    async def up(self) -> None:
        await self.proxy.up()


@asynccontextmanager
async def _target(name: str, workdir: Path) -> AsyncIterator[tuple[Backend, Outage]]:
    """The backend every process uses for this run, and how to take it away."""
    if name == "redis":
        server = PrivateRedis(workdir)
        await server.start()
        token = uuid.uuid4().hex[:10]
        url = f"{server.url}?prefix=chaos-{token}"
        try:
            yield Backend(name, server.url, url, f"chaos-{token}", token), _Killed(server)
        finally:
            await server.kill()
        return
    backend = make_backend(name)
    try:
        async with FaultyProxy(*server_address(backend)) as proxy:
            yield through(backend, proxy.port), _Refused(proxy)
    finally:
        await cleanup(backend)


@dataclass
class _Producer:
    """Submits job after job, each retried until the broker accepts it."""

    tasks: Tasks
    accepted: dict[int, float] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)
    slowest: float = 0.0
    stop: bool = False

    async def run(self, first: int) -> None:
        index = first
        while not self.stop:
            started = time.monotonic()
            try:
                async with asyncio.timeout(SUBMIT_BOUND + 5.0):  # a hang fails below, not here
                    await self.tasks.work.submit(i=index, ms=20)
            except upnext.BrokerUnavailable:
                self.refused[index] = self.refused.get(index, 0) + 1
            else:
                self.accepted[index] = time.time()
                index += 1
            finally:
                self.slowest = max(self.slowest, time.monotonic() - started)
            await asyncio.sleep(0.05)


def _touched(ledger: Ledger, start: float, end: float) -> int:
    """Jobs with a ledger line between `start` and `end`: those a duplicate may come from."""
    return len({e.index for e in ledger.entries() if start <= e.at <= end})


@pytest.mark.parametrize("name", BACKENDS)
async def test_broker_outage_loses_no_acknowledged_job(
    name: str, tmp_path: Path, ledger: Ledger
) -> None:
    """Acknowledged enqueues all complete; enqueues during the outage fail fast; work resumes."""
    options = Options(concurrency=8, lease=2.0)
    async with _target(name, tmp_path) as (backend, outage):
        producer_worker, tasks = build(backend.url, backend.queue, ledger, options)
        await tasks.work.submit_many([{"i": i, "ms": 50} for i in range(BACKLOG)])
        producer = _Producer(tasks, accepted=dict.fromkeys(range(BACKLOG), time.time()))
        async with Pool(backend, ledger, options, 2) as pool:
            await wait_until(lambda: len(ledger.done()) > 20, 30.0, "the workers got going")
            submitting = asyncio.create_task(producer.run(BACKLOG))
            await asyncio.sleep(0.5)
            down_at = time.time()
            await outage.down()
            await asyncio.sleep(OUTAGE)
            await outage.up()
            up_at = time.time()
            left_at_up = len(set(producer.accepted) - ledger.done())
            resumed = await wait_until(
                lambda: any(e.at > up_at for e in ledger.entries("S")), 30.0, "jobs started again"
            )
            await asyncio.sleep(1.0)
            producer.stop = True
            await submitting
            await wait_until(
                lambda: ledger.done() >= set(producer.accepted), 120.0, "every accepted job ran"
            )
            dead = await producer_worker.dlq.count(queue=backend.queue)
            await pool.stop()
        await producer_worker.aclose()
    retried = set(producer.refused)
    result = verdict(ledger, set(producer.accepted))
    held = _touched(ledger, down_at - 0.5, up_at + 1.0)
    report(
        "broker-outage",
        name,
        jobs=result.jobs,
        lost=result.lost,
        duplicates=result.duplicates,
        bound=held + len(retried),
        outage=OUTAGE,
        refused_submits=sum(producer.refused.values()),
        slowest_submit=producer.slowest,
        resumed_after=resumed,
        left_at_up=left_at_up,
        dlq=dead,
    )
    assert producer.refused, "no submit fell in the outage"
    assert producer.slowest <= SUBMIT_BOUND, f"a submit took {producer.slowest:.1f} s"
    assert left_at_up > 0, "the backlog must outlast the outage"
    assert resumed <= RESUME_BOUND
    assert dead == 0
    result.check(max_duplicates=held + len(retried))
