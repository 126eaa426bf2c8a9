"""The sync-task thread pool: results, errors, reuse, and a process that still exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from upnext._threads import DaemonThreadPool


def test_results_errors_and_reuse() -> None:
    """Results and exceptions reach the Future; idle threads are reused, not multiplied."""
    pool = DaemonThreadPool(4, "t")
    assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(timeout=5) == 5
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(20)}
    assert len(names) == 1
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t_"))
    pool.shutdown()


def test_at_most_max_workers_run_at_once() -> None:
    """With every thread busy, further work waits for one to come free."""
    pool = DaemonThreadPool(2, "cap")
    gate = threading.Event()
    running = []
    lock = threading.Lock()

    def body() -> None:
        with lock:
            running.append(1)
        gate.wait(5)

    futures = [pool.submit(body) for _ in range(5)]
    time.sleep(0.2)
    assert len(running) == 2
    gate.set()
    for f in futures:
        f.result(timeout=5)
    assert len(running) == 5
    pool.shutdown()


def test_shutdown_cancels_unstarted_work_and_refuses_more() -> None:
    """Queued work is cancelled at shutdown; submit afterwards raises."""
    pool = DaemonThreadPool(1, "sd")
    gate = threading.Event()
    first = pool.submit(gate.wait, 5)
    time.sleep(0.1)
    queued = pool.submit(lambda: "never")
    pool.shutdown()
    assert queued.cancelled()
    gate.set()
    assert first.result(timeout=5) is True
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)


def test_a_stuck_thread_does_not_hold_the_process_open() -> None:
    """A body that never returns does not keep the interpreter from exiting."""
    code = textwrap.dedent(
        """
        import time
        from upnext._threads import DaemonThreadPool
        pool = DaemonThreadPool(2, "stuck")
        pool.submit(time.sleep, 60)
        time.sleep(0.1)
        pool.shutdown()
        print("done", flush=True)
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert time.monotonic() - started < 10
