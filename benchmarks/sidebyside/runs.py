"""Running one framework's roles as bounded subprocesses and collecting what they measured."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidebyside.frameworks import Framework

__all__ = ["PEERS", "RunError", "Sample", "Workload", "run_once"]

PEERS = Path(__file__).resolve().parent.parent / "peers"
STARTUP = 30.0  # seconds a worker may take to start its first measured job
# A drain still running this long after its first measured job is measured on the jobs
# it finished by then (the worker notes its progress every 0.2 s), so one slow
# framework cannot spend the 10-minute budget of a broker run. Reported, never hidden.
TIME_BOX = {"burst": 5.0, "retry": 5.0}


class RunError(Exception):
    """A framework failed to run: the message carries its own error."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload's size: measured jobs and untimed warm-up jobs."""

    name: str  # burst | latency | retry
    jobs: int
    warm: int


@dataclass(slots=True)
class Sample:
    """What one repeat of one workload measured (None where it does not apply)."""

    drain: float | None = None  # jobs/s, timed inside the worker
    enqueue_single: float | None = None
    enqueue_batch: float | None = None
    cpu_per_1000: float | None = None
    max_rss_mib: float | None = None
    latency_ms: list[float] = field(default_factory=list)
    result_ms: list[float] = field(default_factory=list)
    partial: str | None = None  # set when the drain was time-boxed
    drained: int = 0  # measured jobs the drain figure is based on


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-800:] or "(no output)"


class _Runner:
    """Spawns one framework's runner for each role, each in its own process group."""

    def __init__(self, framework: Framework, config: dict[str, Any], workdir: Path) -> None:
        self.framework = framework
        self.env = {**os.environ, "BENCH_CONFIG": json.dumps(config), "PYTHONUNBUFFERED": "1"}
        if framework.source:
            path = [*framework.source, os.environ.get("PYTHONPATH", "")]
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        self.workdir = workdir

    def argv(self, role: str) -> list[str]:
        return [sys.executable, str(PEERS / self.framework.runner), role]

    def call(self, role: str, timeout: float) -> dict[str, Any]:
        """Run a role to completion within `timeout` seconds; its BENCH_RESULT, if any."""
        proc = subprocess.Popen(
            self.argv(role),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise RunError(f"{role} timed out after {timeout:.0f} s: {_tail(err)}") from None
        except BaseException:  # interrupted: leave nothing running behind
            _kill_group(proc)
            raise
        if proc.returncode != 0:
            raise RunError(f"{role} exited {proc.returncode}: {_tail(err)}")
        for line in out.splitlines():
            if line.startswith("BENCH_RESULT "):
                result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
                return result
        return {}

    def start(self) -> _Worker:
        """Start the worker role in the background."""
        log = open(self.workdir / "worker.log", "w+")  # noqa: SIM115  # closed by _Worker.stop
        proc = subprocess.Popen(
            self.argv("work"),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return _Worker(proc, log)


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    log: Any

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RunError(f"worker exited {self.proc.returncode}: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return _tail(self.log.read())

    def stop(self) -> None:
        # The figures are in and the next run cleans the server: no graceful drain needed.
        _kill_group(self.proc)
        self.log.close()


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_for(path: Path, worker: _Worker, box: float) -> dict[str, Any]:
    """The worker's final drain figures, or its progress (``partial``) when the box ends.

    The box starts when the worker's first measured job does (it touches a marker).
    """
    deadline = time.monotonic() + STARTUP
    started = path.with_name(path.name + ".started")
    progress = path.with_name(path.name + ".progress")
    boxed = False
    while not path.exists():
        worker.check()
        now = time.monotonic()
        if not boxed and started.exists():
            boxed, deadline = True, now + box
        if now > deadline:
            if progress.exists():
                drain: dict[str, Any] = json.loads(progress.read_text())
                return {**drain, "partial": True}
            if boxed:
                what = f"one job done {box:.0f} s after the first measured one started"
            else:
                what = f"measured job started within {STARTUP:.0f} s"
            raise RunError(f"not even {what}: {worker.output()}")
        time.sleep(0.05)
    drain = json.loads(path.read_text())
    return drain


def _from_drain(sample: Sample, drain: dict[str, Any]) -> None:
    jobs, seconds = drain["jobs"], drain["seconds"]
    sample.drained = jobs
    sample.drain = jobs / seconds if seconds > 0 else None
    sample.cpu_per_1000 = drain["cpu_seconds"] / jobs * 1000
    sample.max_rss_mib = drain["max_rss_kib"] / 1024
    if drain.get("partial"):
        sample.partial = f"time-boxed: {jobs:,} jobs in {seconds:.1f} s"


def run_once(
    framework: Framework, broker: str, url: str, workload: Workload, fill: int = 0
) -> Sample:
    """One repeat of one workload: clean, produce, drain (or probe latency); bounded.

    `fill` (burst) enqueues that many measured jobs instead of all: for a
    framework whose drain an earlier repeat time-boxed, 2x what it drained then.
    """
    with tempfile.TemporaryDirectory(prefix="upnext-bench-") as tmp:
        out = Path(tmp) / "drain.json"
        config = {
            "framework": framework.name,
            "broker": broker,
            "url": url,
            "workload": workload.name,
            "jobs": workload.jobs,
            "warm": workload.warm,
            "out": str(out),
            "udp_port": _free_udp_port(),
            "fill": fill if 0 < fill < workload.jobs else 0,
            "extra": dict(framework.extra),
        }
        runner = _Runner(framework, config, Path(tmp))
        # Bounds: start-up plus a rate no framework should fall under (200 jobs/s; 2 s per
        # latency job), so a hung peer costs a bounded slice of the 10-minute budget.
        total = workload.jobs + workload.warm
        bound = 30.0 + total / 200
        sample = Sample()
        if broker == "memory":
            _inproc(runner, workload, sample, out, bound)
        elif workload.name == "latency":
            _latency(runner, sample, out, 30.0 + 2.0 * total)
        else:
            _drain(runner, workload, sample, out, bound)
            if config["fill"]:
                done = sample.partial or f"drained {sample.drained:,} jobs"
                sample.partial = f"{done}, queue sized from repeat 1: {config['fill']:,}"
        return sample


def _latency(runner: _Runner, sample: Sample, out: Path, bound: float) -> None:
    worker = runner.start()  # it cleans first, then marks itself ready
    try:
        _wait_ready(out.with_name(out.name + ".ready"), worker)
        result = runner.call("latency", bound)
        sample.latency_ms = result["latency_ms"]
        sample.result_ms = result.get("result_ms") or []
    except RunError as exc:
        raise RunError(f"{exc} (worker: {worker.output()})") from None
    finally:
        worker.stop()


def _wait_ready(marker: Path, worker: _Worker) -> None:
    deadline = time.monotonic() + STARTUP
    while not marker.exists():
        worker.check()
        if time.monotonic() > deadline:
            raise RunError(f"worker not ready after {STARTUP:.0f} s")
        time.sleep(0.05)


def _drain(runner: _Runner, workload: Workload, sample: Sample, out: Path, bound: float) -> None:
    rates = runner.call("produce", bound)
    sample.enqueue_single = rates.get("enqueue_single")
    sample.enqueue_batch = rates.get("enqueue_batch")
    worker = runner.start()
    try:
        _from_drain(sample, _wait_for(out, worker, TIME_BOX[workload.name]))
    finally:
        worker.stop()


def _inproc(runner: _Runner, workload: Workload, sample: Sample, out: Path, bound: float) -> None:
    """memory://: one process enqueues and drains (the broker lives in it)."""
    if workload.name == "latency":
        result = runner.call("inproc", 30.0 + 2.0 * (workload.jobs + workload.warm))
        sample.latency_ms = result["latency_ms"]
        sample.result_ms = result.get("result_ms") or []
        return
    rates = runner.call("inproc", 2 * bound)
    sample.enqueue_single = rates.get("enqueue_single")
    sample.enqueue_batch = rates.get("enqueue_batch")
    _from_drain(sample, json.loads(out.read_text()))
