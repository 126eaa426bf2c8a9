"""`upnext.run`: the blocking entry point drains on SIGTERM/SIGINT and exits 0."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable

import pytest
import upnext
from upnext._run import EXIT_RESTART
from upnext.broker.memory import MemoryBroker

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
