"""Job metrics on memory://: what `JobMetrics` counts, the worker's exporter, the tick's
snapshot, and the server's ``GET /metrics`` reading snapshots through the state store.

Counts are read back through prometheus-client's own text parser, so each
test asserts what a Prometheus scrape would see.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import upnext
import upnext.middleware._builtins as builtins_module
from prometheus_client.parser import text_string_to_metric_families
from upnext._statekeys import metrics_key
from upnext.errors import ConfigurationError
from upnext.metrics import JobMetrics, MetricsSnapshot, read_snapshots
from upnext.metrics.prometheus import SnapshotCollector, render
from upnext.server import create_app
from upnext.testing.semantics_base import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (what PromQL's sum gives)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def scrape_worker(worker: upnext.Worker) -> Samples:
    """What the worker's own counts expose now."""
    metrics = worker.metrics
    assert metrics is not None
    collector = SnapshotCollector(lambda: [metrics.snapshot("w")])
    return samples(render(collector).decode())


async def settled(worker: upnext.Worker, jobs: int, timeout: float = 10.0) -> None:
    """Wait until `jobs` jobs are counted as ended (counted after the settle, not before it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = scrape_worker(worker)
        ended = total(found, "upnext_jobs_succeeded_total") + total(
            found, "upnext_jobs_dead_lettered_total"
        )
        if ended >= jobs or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


def flaky_worker(url: str, **options: object) -> upnext.Worker:
    """A worker whose `work(n)` fails for every n divisible by 10."""
    worker = upnext.Worker("m", broker=url, load_plugins=False, concurrency=20, **options)  # type: ignore[arg-type]  # only metrics options

    @worker.task(retries=0, name="work")
    async def work(n: int) -> int:
        if n % 10 == 0:
            raise ValueError(n)
        return n

    return worker


async def test_1000_jobs_count_exactly_1000_starts_and_the_failures() -> None:
    worker = flaky_worker(f"memory://metrics-{uuid.uuid4().hex}", metrics=True)
    async with worker:
        await worker.tasks["work"].submit_many({"n": n} for n in range(1000))
        await worker.join(timeout=30)
        await settled(worker, 1000)
        found = scrape_worker(worker)
    labels = {"queue": "m", "task": "work"}
    assert total(found, "upnext_jobs_started_total", **labels) == 1000
    assert total(found, "upnext_jobs_succeeded_total", **labels) == 900
    assert total(found, "upnext_jobs_failed_total", **labels) == 100
    assert total(found, "upnext_jobs_dead_lettered_total", **labels) == 100
    assert total(found, "upnext_jobs_retried_total", **labels) == 0
    assert total(found, "upnext_job_run_seconds_count", **labels) == 1000
    assert total(found, "upnext_job_wait_seconds_count", **labels) == 1000
    assert total(found, "upnext_job_run_seconds_bucket", le="+Inf", **labels) == 1000


async def test_retries_count_each_attempt_and_the_wait_since_the_last_one() -> None:
    worker = upnext.Worker("r", broker=f"memory://r-{uuid.uuid4().hex}", metrics=True)
    calls = 0

    @worker.task(retries=2, retry_delay=0.0, name="twice")
    async def twice() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("not yet")
        return "ok"

    future = await twice.submit()  # queued 0.2 s before any worker runs
    await asyncio.sleep(0.2)
    async with worker:
        assert (await future.result(timeout=10)).value == "ok"
        await settled(worker, 1)
        found = scrape_worker(worker)
    await worker.aclose()  # the producer's client
    assert total(found, "upnext_jobs_started_total") == 3
    assert total(found, "upnext_jobs_retried_total") == 2
    assert total(found, "upnext_jobs_failed_total") == 2
    assert total(found, "upnext_jobs_succeeded_total") == 1
    assert total(found, "upnext_jobs_dead_lettered_total") == 0
    assert total(found, "upnext_job_wait_seconds_count") == 3
    # 0.2 s for the first attempt, ~0 for each retry (from enqueue, it would be >= 0.6 s)
    assert 0.2 <= total(found, "upnext_job_wait_seconds_sum") < 0.5


async def test_a_slow_body_lands_in_its_run_bucket() -> None:
    worker = upnext.Worker("s", broker=f"memory://s-{uuid.uuid4().hex}", metrics=True)

    @worker.task(name="nap")
    async def nap() -> None:
        await asyncio.sleep(0.06)

    async with worker:
        await nap.wait()
        await settled(worker, 1)  # counted once the settle is durable, as a job's log line
        found = scrape_worker(worker)
    assert total(found, "upnext_job_run_seconds_bucket", le="0.05") == 0
    assert total(found, "upnext_job_run_seconds_bucket", le="0.1") == 1
    assert 0.06 <= total(found, "upnext_job_run_seconds_sum") < 0.1


def test_metrics_off_puts_nothing_in_the_pipeline() -> None:
    worker = upnext.Worker("off", broker="memory://off", load_plugins=False)
    assert worker.metrics is None
    assert not any(isinstance(m, JobMetrics) for m in worker.middleware)
    on = upnext.Worker("on", broker="memory://on", load_plugins=False, metrics=True)
    assert isinstance(on.middleware[0], JobMetrics)


def test_core_never_imports_prometheus_client_for_counting() -> None:
    code = (
        "import sys, upnext; upnext.Worker('x', metrics=True);"
        " assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_metrics_port_without_prometheus_client_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, "upnext.metrics.prometheus", raising=False)
    with pytest.raises(ConfigurationError, match=r"upnext\[metrics\]"):
        upnext.Worker("x", broker="memory://x", metrics_port=0)


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="run_buckets"):
        JobMetrics(run_buckets=(1.0, 0.5))


async def test_the_exporter_serves_the_counts_over_http_until_the_worker_stops() -> None:
    worker = flaky_worker(f"memory://exp-{uuid.uuid4().hex}", metrics_port=0)
    assert worker.metrics_exporter is not None
    async with worker, httpx.AsyncClient() as http:
        await worker.tasks["work"].submit_many({"n": n} for n in range(20))
        await worker.join(timeout=10)
        await settled(worker, 20)
        url = f"http://127.0.0.1:{worker.metrics_exporter.port}/metrics"
        response = await http.get(url)
        assert response.status_code == 200
        found = samples(response.text)
        assert worker.consumer is not None
        mine = {"worker_id": worker.consumer.worker_id}
        assert total(found, "upnext_jobs_started_total", **mine) == 20
        assert total(found, "upnext_jobs_failed_total", **mine) == 2
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


async def test_a_taken_port_is_a_configuration_error_and_nothing_runs() -> None:
    first = upnext.Worker("p1", broker=f"memory://p-{uuid.uuid4().hex}", metrics_port=0)
    async with first:
        assert first.metrics_exporter is not None
        port = first.metrics_exporter.port
        second = upnext.Worker("p2", broker=first.broker_url, metrics_port=port)
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await second.start()
        assert second.consumer is None
        await second.aclose()


async def test_the_tick_writes_the_snapshot_and_a_clean_stop_removes_it() -> None:
    worker = flaky_worker(f"memory://tick-{uuid.uuid4().hex}", metrics=True)
    async with worker:
        await worker.tasks["work"].submit_many({"n": n} for n in range(30))
        await worker.join(timeout=10)
        await settled(worker, 30)
        client = await worker.client()
        state = client.require_state("test")
        await tick(worker)
        assert worker.consumer is not None
        (snapshot,) = await read_snapshots(state)
        assert isinstance(snapshot, MetricsSnapshot)
        assert snapshot.worker_id == worker.consumer.worker_id
        (series,) = snapshot.series
        assert (series.started, series.succeeded, series.failed) == (30, 27, 3)
        key = metrics_key(worker.consumer.worker_id)
    assert await state.state_get([key]) == [None]


async def tick(worker: upnext.Worker) -> None:
    """One tick now (instead of waiting for the next second's)."""
    assert worker.consumer is not None
    assert worker.consumer.tick is not None
    await worker.consumer.tick.tick()


async def test_two_workers_1000_jobs_scraped_from_the_server() -> None:
    url = f"memory://srv-metrics-{uuid.uuid4().hex}"
    first, second = flaky_worker(url, metrics=True), flaky_worker(url, metrics=True)
    app = create_app(url, queues=["m"])
    transport = httpx.ASGITransport(app=app)
    async with (
        first,
        second,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        await first.tasks["work"].submit_many({"n": n} for n in range(1000))
        await first.join(timeout=30)
        await second.join(timeout=30)
        for worker in (first, second):
            await settled(worker, 1)
        await tick(first)
        await tick(second)
        response = await client.get("/metrics")
        await app.state.backend.aclose()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    labels = {"queue": "m", "task": "work"}
    assert total(found, "upnext_jobs_started_total", **labels) == 1000
    assert total(found, "upnext_jobs_succeeded_total", **labels) == 900
    assert total(found, "upnext_jobs_failed_total", **labels) == 100
    assert total(found, "upnext_jobs_dead_lettered_total", **labels) == 100
    assert total(found, "upnext_workers_alive") == 2
    assert total(found, "upnext_queue_depth", queue="m", state="dead") == 100
    assert total(found, "upnext_queue_depth", queue="m", state="ready") == 0
    worker_ids = {dict(ls)["worker_id"] for (n, ls) in found if n == "upnext_jobs_started_total"}
    assert len(worker_ids) == 2


async def test_without_metrics_on_the_server_still_shows_depth_and_workers() -> None:
    url = f"memory://srv-plain-{uuid.uuid4().hex}"
    worker = upnext.Worker("plain", broker=url, load_plugins=False)
    app = create_app(url, queues=["plain"])
    transport = httpx.ASGITransport(app=app)
    async with (
        worker,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        await tick(worker)
        found = samples((await client.get("/metrics")).text)
        await app.state.backend.aclose()
    assert total(found, "upnext_workers_alive") == 1
    assert total(found, "upnext_queue_depth", queue="plain", state="ready") == 0
    assert not any(n == "upnext_jobs_started_total" for (n, _) in found)


@pytest.mark.parametrize("given_as", ["metrics=True", "middleware"])
async def test_counted_in_the_tail_with_metrics_on_and_as_stages_as_middleware(
    given_as: str,
) -> None:
    """metrics=True: no stage per job (the executor counts); in middleware=[...]: its stages.

    Both count the same: a job retried once, then succeeded.
    """
    broker = f"memory://{uuid.uuid4().hex}"
    custom = JobMetrics(run_buckets=(0.5,), wait_buckets=(1.0,))
    if given_as == "metrics=True":
        worker = upnext.Worker("tail", broker=broker, metrics=True)
    else:
        worker = upnext.Worker("stage", broker=broker, middleware=[custom])
    counter = worker.metrics or custom
    tries: list[int] = []

    @worker.task(name="flaky", retries=1, retry_delay=0.01)
    async def flaky() -> None:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("once")

    async with worker:
        await flaky.wait()
        assert worker.consumer is not None
        stages = worker.consumer.execution.pipeline.stages(flaky)
        taking_part = (*stages.after_run, *stages.after_settle_inline)
        assert (counter in taking_part) == (given_as == "middleware")
        await wait_until(
            lambda: counter.snapshot("w").series[0].succeeded == 1, within=5, what="the count"
        )
    [series] = counter.snapshot("w").series
    assert (series.started, series.failed, series.retried, series.succeeded) == (2, 1, 1, 1)


async def test_an_abandoned_body_counts_as_one_started_failed_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A body that ignores its timeout's cancellation is abandoned and counted as a failure.

    It returns later; that return changes no count.
    """
    monkeypatch.setattr(builtins_module, "ABANDON_AFTER", 0.2)
    worker = upnext.Worker("ab", broker=f"memory://ab-{uuid.uuid4().hex}", metrics=True)
    returned = asyncio.Event()

    @worker.task(name="stubborn", timeout=0.1, retries=0)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.6)  # ignores its cancellation, then returns
        returned.set()
        return "late"

    counter = worker.metrics
    assert counter is not None
    async with worker:
        await stubborn.submit()
        await wait_until(
            lambda: (
                bool(counter.snapshot("w").series)
                and counter.snapshot("w").series[0].dead_lettered == 1
            ),
            within=5,
            what="the dead letter counted",
        )
        await asyncio.wait_for(returned.wait(), 5)
        await asyncio.sleep(0.05)
    [series] = counter.snapshot("w").series
    assert (series.started, series.failed, series.succeeded, series.dead_lettered) == (1, 1, 0, 1)
