"""Suspects run alone: a job one lost run away from the DLQ (docs/semantics.md, "Lost runs").

A worker that dies takes every delivery it holds with it, and each is
charged a lost run. So a job that has lost `max_lost_runs` runs (one more
dead-letters it) starts only once its worker holds no other job, and
nothing else is received or started until its body ends: if it kills the
worker again, only it is charged. Most tests here use max_lost_runs=1, so
one lost run makes a suspect; jobs with chances left run as usual.

Killing the process would kill the test, so these tests check what a crash
would charge: the deliveries the broker counts as held (`in_flight`) at the
moment a suspect's body runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import pytest
import upnext
from upnext._serializer import JobBody, encode_body
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import Envelope
from upnext.testing._support import receive_exactly
from upnext.testing.semantics_base import wait_until

LEASE = 0.2


@dataclass
class Watch:
    """What ran beside what: bodies running now, and what each suspect saw."""

    running: set[str] = field(default_factory=set)
    suspect_running: str | None = None
    beside_suspect: list[str] = field(default_factory=list)
    # per suspect body: (others running at its start, deliveries held at its start)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)


def _worker(url: str, **options: object) -> upnext.Worker:
    options.setdefault("max_lost_runs", 1)
    return upnext.Worker(
        f"lost-{uuid.uuid4().hex[:8]}",
        broker=url,
        lease=LEASE,
        load_plugins=False,
        **options,  # type: ignore[arg-type]
    )


def _tasks(worker: upnext.Worker, watch: Watch) -> tuple[upnext.Task[..., None], ...]:
    broker = MemoryBroker.from_url(worker.broker_url)

    @worker.task(name="lost.work")
    async def work(name: str, ms: float = 20.0) -> None:
        if watch.suspect_running is not None:
            watch.beside_suspect.append(name)
        watch.running.add(name)
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            watch.running.discard(name)
        if watch.suspect_running is not None:
            watch.beside_suspect.append(name)
        watch.done.append(name)

    @worker.task(name="lost.suspect")
    async def suspect(name: str, ms: float = 50.0) -> None:
        stats = await broker.stats(worker.name)
        watch.seen[name] = (len(watch.running), stats.in_flight or 0)
        watch.suspect_running = name
        watch.running.add(name)
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            watch.running.discard(name)
            watch.suspect_running = None
        raise upnext.Reject("to the DLQ, so its history can be read")

    return work, suspect


async def _lose_runs(worker: upnext.Worker, count: int) -> None:
    """A worker takes `count` jobs and dies holding them (their leases run out)."""
    broker = (await worker.client()).broker
    await receive_exactly(broker, [worker.name], count, within=2.0, lease=LEASE)
    await asyncio.sleep(LEASE + 0.05)


async def _history(worker: upnext.Worker, job_id: str) -> list[str]:
    page = await worker.dlq.list(queue=worker.name, limit=100)
    [entry] = [e for e in page.items if e.job_id == job_id]
    return [a.outcome for a in entry.attempts]


@pytest.mark.parametrize("prefetch", [0, 8])
async def test_a_suspect_runs_alone_holding_nothing_else(prefetch: int) -> None:
    """The suspect starts with nothing else running or held; nothing starts beside it."""
    worker = _worker(f"memory://{uuid.uuid4().hex}", concurrency=4, prefetch=prefetch)
    watch = Watch()
    work, suspect = _tasks(worker, watch)
    lost = await suspect.submit(name="S")
    await _lose_runs(worker, 1)
    async with worker:
        for wave in range(20):  # a steady stream before, around and after the suspect
            await work.submit_many([{"name": f"w{wave}.{i}", "ms": 40} for i in range(6)])
            await asyncio.sleep(0.03)
        await worker.join(timeout=10.0)
        history = await _history(worker, lost.job_id)
    assert watch.seen == {"S": (0, 1)}, "the suspect must start alone, its delivery the only held"
    assert watch.beside_suspect == []
    assert len(watch.done) == 120
    assert history == ["lost", "rejected"]


async def test_a_job_with_chances_left_runs_beside_others() -> None:
    """One lost run of three allowed: no isolation, the job runs beside the others."""
    worker = _worker(f"memory://{uuid.uuid4().hex}", concurrency=4, max_lost_runs=3)
    watch = Watch()
    work, suspect = _tasks(worker, watch)
    lost = await suspect.submit(name="S", ms=300.0)
    await _lose_runs(worker, 1)
    await work.submit_many([{"name": f"w{i}", "ms": 100} for i in range(6)])
    async with worker:
        await worker.join(timeout=10.0)
        history = await _history(worker, lost.job_id)
    others_at_start, _ = watch.seen["S"]
    assert others_at_start > 0 or watch.beside_suspect, "S ran alone with chances left"
    assert history == ["lost", "rejected"]


async def test_jobs_lost_together_each_run_alone_and_are_charged_once() -> None:
    """Innocent neighbours of a lost run: each is a suspect, runs alone, charged once only."""
    worker = _worker(f"memory://{uuid.uuid4().hex}", concurrency=8, prefetch=8)
    watch = Watch()
    work, suspect = _tasks(worker, watch)
    futures = [await suspect.submit(name=f"S{i}") for i in range(5)]
    await _lose_runs(worker, 5)
    await work.submit_many([{"name": f"w{i}"} for i in range(60)])
    async with worker:
        await worker.join(timeout=20.0)
        histories = [await _history(worker, f.job_id) for f in futures]
    assert watch.seen == {f"S{i}": (0, 1) for i in range(5)}
    assert watch.beside_suspect == []
    assert len(watch.done) == 60
    assert histories == [["lost", "rejected"]] * 5, "each suspect is charged its one lost run"


async def test_suspect_waiting_on_its_child_does_not_deadlock() -> None:
    """A suspect that awaits a job of its own lets the worker run that job."""
    worker = _worker(f"memory://{uuid.uuid4().hex}", concurrency=2)

    @worker.task(name="lost.child")
    async def child(x: int) -> int:
        return x * 2

    @worker.task(name="lost.parent")
    async def parent(x: int) -> int:
        result = await (await child.submit(x=x)).result(timeout=5.0)
        assert result.value is not None
        return result.value + 1

    future = await parent.submit(x=20)
    await _lose_runs(worker, 1)
    async with worker:
        result = await future.result(timeout=5.0)
    assert result.value == 41


async def test_stopping_gives_back_a_waiting_suspect_uncounted() -> None:
    """A suspect still waiting for its turn when the worker stops is released, not charged."""
    url = f"memory://{uuid.uuid4().hex}"
    worker = _worker(url, concurrency=2, prefetch=0, shutdown_grace=5.0)
    watch = Watch()
    work, suspect = _tasks(worker, watch)
    lost = await suspect.submit(name="S")
    await _lose_runs(worker, 1)
    async with worker:
        # A long job holds the worker; the suspect (rewritten with its lost
        # run) comes back while it runs and waits for its turn.
        await work.submit(name="long", ms=600.0)
        await asyncio.sleep(0.3)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.0, "the long job finished; the suspect did not start"
    assert "long" in watch.done
    assert watch.seen == {}
    broker = MemoryBroker.from_url(url)
    [again] = await receive_exactly(broker, [worker.name], 1, within=2.0, lease=LEASE)
    assert again.envelope.id == lost.job_id
    assert (again.redelivered, again.deliveries) == (False, 1), "a release is not a lost run"


async def test_a_suspect_cancelled_while_receiving_pauses_leaves_receiving_on() -> None:
    """Cancelled while its worker stops receiving for it, a suspect leaves receiving resumed.

    A job runs; the suspect waits behind it while the receive loop blocks in
    a receive. When the suspect's turn comes, that loop ends at its next
    slice; cancelling the suspect meanwhile frees the isolation, so receiving
    must start again once the loop has ended (it stayed off for good before).
    """
    worker = _worker(f"memory://{uuid.uuid4().hex}", concurrency=1, prefetch=2, max_lost_runs=1)
    watch = Watch()
    work, _ = _tasks(worker, watch)
    async with worker:
        consumer = worker.consumer
        assert consumer is not None
        await work.submit(name="first", ms=300)
        await wait_until(lambda: "first" in watch.running, within=5.0, what="first runs")
        body = JobBody(
            id="suspect", fn="lost.work", queue=worker.name, kwargs={"name": "S"}, lost=1
        )
        broker = (await worker.client()).broker
        await broker.enqueue_many([Envelope("suspect", worker.name, encode_body(body, 2**20))])
        await wait_until(
            lambda: consumer.isolated is not None, within=5.0, what="the suspect's turn", step=0
        )
        assert consumer.cancel_job("suspect")
        later = await work.submit(name="after", ms=1)
        await later.result(timeout=5.0)
    assert "after" in watch.done
    assert "S" not in watch.done
