"""`upnext.run`: the blocking entry point drains on SIGTERM/SIGINT and exits 0."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from typing import ClassVar

import pytest
import upnext
from upnext import _discovery, _run
from upnext._discovery import register
from upnext._run import EXIT_RESTART
from upnext.broker.memory import MemoryBroker
from upnext.broker.redact import redact_url
from upnext.errors import BrokerUnavailable

SECRET = "s3cr3t-canary"

# A worker process: one slow job is submitted, then `upnext.run` consumes it.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, warnings
    import upnext
    from upnext.broker.memory import MemoryBroker

    warnings.simplefilter("ignore", RuntimeWarning)  # "no worker yet" is expected here
    worker = upnext.Worker("run", broker="memory://run", concurrency=1, shutdown_grace=10.0)

    @worker.task
    async def slow(n: int) -> int:
        print("started", n, flush=True)
        await asyncio.sleep(0.5)
        print("finished", n, flush=True)
        return n * 2

    futures = asyncio.run(slow.submit_many([{"n": 1}, {"n": 2}]))
    code = upnext.run(worker)
    print("value", asyncio.run(futures[0].value(timeout=1.0)), flush=True)
    print("pending", MemoryBroker.from_url("memory://run").pending(), flush=True)
    sys.exit(code)
    """
)


def _run_until_started(sig: signal.Signals) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the job runs
        assert first == "started 1\n", proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, first + rest, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_drains_in_flight_job_on_signal(sig: signal.Signals) -> None:
    code, out, err = _run_until_started(sig)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["started 1", "finished 1"]
    assert "value 2" in lines  # the in-flight job completed and stored its result
    assert "started 2" not in lines  # nothing new starts once draining
    assert "pending 1" in lines  # the queued job stays queued (dropped with the process)
    assert "1 job(s) still queued on memory://run" in err
    assert "Traceback" not in err


def _drive(worker: upnext.Worker, action: Callable[[asyncio.AbstractEventLoop], object]) -> None:
    """On a helper thread: wait for the worker's loop, then run `action` against it."""

    def main() -> None:
        deadline = time.monotonic() + 5.0
        while worker.loop is None or not worker.running:
            if time.monotonic() > deadline:
                return  # the test fails on its own assertions
            time.sleep(0.01)
        action(worker.loop)

    threading.Thread(target=main, daemon=True).start()


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run `upnext.run` on uvloop when installed, and on plain asyncio."""
    kind: str = request.param
    if kind == "asyncio":
        monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    elif importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed (upnext[speed])")
    return kind


@pytest.mark.usefixtures("event_loop_kind")
def test_run_in_process_returns_zero_after_stop() -> None:
    url = f"memory://run-{uuid.uuid4().hex}"
    worker = upnext.Worker("run-inproc", broker=url, receive_wait=0.1)
    done = threading.Event()

    @worker.task
    async def job() -> None:
        await asyncio.sleep(0.2)
        done.set()

    def submit_then_stop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.run_coroutine_threadsafe(job.submit(), loop).result(2.0)
        time.sleep(0.05)  # let the job start
        loop.call_soon_threadsafe(worker.request_stop)

    _drive(worker, submit_then_stop)
    assert upnext.run(worker) == 0
    assert done.is_set()
    assert MemoryBroker.from_url(url).pending() == 0


def test_run_asks_for_a_restart_when_the_worker_is_fatal() -> None:
    worker = upnext.Worker("run-fatal", broker=f"memory://run-{uuid.uuid4().hex}")

    def fail() -> None:
        assert worker.consumer is not None
        worker.consumer.fatal = "too many abandoned threads"
        worker.request_stop()

    _drive(worker, lambda loop: loop.call_soon_threadsafe(fail))
    assert upnext.run(worker) == EXIT_RESTART == 75


@pytest.mark.usefixtures("event_loop_kind")
def test_run_on_a_non_main_thread() -> None:
    worker = upnext.Worker("run-thread", broker=f"memory://run-{uuid.uuid4().hex}")
    codes: list[int] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            codes.append(upnext.run(worker))
        except BaseException as exc:
            errors.append(exc)

    _drive(worker, lambda loop: loop.call_soon_threadsafe(worker.request_stop))
    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(5.0)
    assert errors == []
    assert codes == [0]


class FlakyBroker(MemoryBroker):
    """A memory broker whose first `failures[url]` connects fail as unreachable."""

    failures: ClassVar[dict[str, int]] = {}
    hang: ClassVar[set[str]] = set()

    async def connect(self) -> None:
        if self.url in FlakyBroker.hang:  # a server that accepts and never answers
            await asyncio.sleep(3600)
        left = FlakyBroker.failures.get(self.url, 0)
        if left:
            FlakyBroker.failures[self.url] = left - 1
            raise BrokerUnavailable(f"{redact_url(self.url)} is unreachable: connection refused")


def flaky_factory(url: str) -> FlakyBroker:
    """Factory for ``flaky://``: one broker object per connect attempt, like a real backend."""
    return FlakyBroker(url)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``flaky://`` privately to the test."""
    monkeypatch.setattr(_discovery, "_REGISTERED", dict(_discovery._REGISTERED))
    monkeypatch.setattr(_run, "CONNECT_BACKOFF", 0.02)  # same shape, 10x faster
    monkeypatch.setattr(_run, "CONNECT_BACKOFF_MAX", 0.1)
    register("flaky", f"{__name__}:flaky_factory")


def _attempt_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("connecting to")]


@pytest.mark.usefixtures("flaky")
async def test_connect_retries_with_capped_backoff_and_one_line_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five refusals, then a connection: five warnings, delays doubling up to the cap."""
    url = f"flaky://user:{SECRET}@127.0.0.1:1/{uuid.uuid4().hex}"
    FlakyBroker.failures[url] = 5
    worker = upnext.Worker("connect", broker=url, connect_timeout=10.0)
    caplog.set_level(logging.WARNING, "upnext.worker")
    assert await _run.connect(worker) is True
    lines = _attempt_lines(caplog)
    assert len(lines) == 5
    delays = [float(line.split("retrying in ")[1].split(" s")[0]) for line in lines]
    assert delays == [0.0, 0.0, 0.1, 0.1, 0.1]  # 0.02, 0.04, 0.08 -> "0.1" (cap 0.1)
    assert lines[2].startswith("connecting to flaky://user:***@127.0.0.1:1/")
    assert "failed (attempt 3, retrying in 0.1 s): " in lines[2]
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    await worker.aclose()


@pytest.mark.usefixtures("flaky")
async def test_connect_gives_up_on_time(caplog: pytest.LogCaptureFixture) -> None:
    """Never reachable: False after connect_timeout (not later), with a final error line."""
    url = f"flaky://127.0.0.1:1/{uuid.uuid4().hex}"
    FlakyBroker.failures[url] = 10**9
    worker = upnext.Worker("connect", broker=url, connect_timeout=0.5)
    started = time.monotonic()
    assert await _run.connect(worker) is False
    assert 0.5 <= time.monotonic() - started < 0.8
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "giving up after connect_timeout=0.5 s" in errors[0].getMessage()


@pytest.mark.usefixtures("flaky")
async def test_connect_timeout_bounds_an_attempt_that_hangs() -> None:
    """A server that never answers cannot hold the worker past connect_timeout."""
    url = f"flaky://127.0.0.1:1/{uuid.uuid4().hex}"
    FlakyBroker.hang.add(url)
    worker = upnext.Worker("connect", broker=url, connect_timeout=0.3)
    started = time.monotonic()
    assert await _run.connect(worker) is False
    assert time.monotonic() - started < 0.6


@pytest.mark.usefixtures("flaky")
async def test_a_stop_request_ends_the_retries_at_once() -> None:
    """SIGTERM while the broker is unreachable: connect returns promptly (run exits 0)."""
    url = f"flaky://127.0.0.1:1/{uuid.uuid4().hex}"
    FlakyBroker.failures[url] = 10**9
    worker = upnext.Worker("connect", broker=url, connect_timeout=60.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    assert await _run.connect(worker, stop) is False
    assert time.monotonic() - started < 0.4


def test_worker_refuses_a_non_positive_connect_timeout() -> None:
    with pytest.raises(upnext.ConfigurationError, match="connect_timeout"):
        upnext.Worker("connect", connect_timeout=0)


def test_run_exits_69_when_the_broker_stays_unreachable(flaky: None) -> None:
    url = f"flaky://127.0.0.1:1/{uuid.uuid4().hex}"
    FlakyBroker.failures[url] = 10**9
    worker = upnext.Worker("connect", broker=url, connect_timeout=0.2)
    assert upnext.run(worker) == _run.EXIT_UNAVAILABLE == 69


# A worker process without uvloop: one job fails, then a second stops the worker.
NO_UVLOOP = textwrap.dedent(
    """
    import asyncio, sys
    sys.modules["uvloop"] = None  # `import uvloop` raises ImportError, as when not installed
    import upnext

    worker = upnext.Worker("nouv", broker="memory://nouv", concurrency=1)

    @worker.task
    async def boom() -> None:
        raise ValueError("boom")

    @worker.task
    async def stop() -> None:
        worker.request_stop()

    async def submit() -> None:
        await boom.submit()
        await stop.submit()

    asyncio.run(submit())
    assert upnext.run(worker) == 0
    entry = asyncio.run(worker.dlq.list()).items[0]
    print(entry.error.traceback)
    """
)


def test_a_dead_letter_traceback_without_uvloop_is_only_the_jobs_own() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_UVLOOP], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert "ValueError: boom" in proc.stdout
    assert "uvloop" not in proc.stdout
    assert "During handling" not in proc.stdout
