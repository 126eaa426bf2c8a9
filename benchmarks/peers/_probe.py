"""What every framework's runner shares: the job body, the producer loops, the role dispatch.

A runner is run as ``python benchmarks/peers/<framework>_peer.py <role>`` with its
settings in the ``BENCH_CONFIG`` environment variable (JSON, see `Config`).
Roles: ``clean`` (drop and re-create what the framework keeps on the server),
``produce`` (enqueue the burst or retry jobs, print enqueue rates), ``latency``
(submit one job at a time and wait for it to run), ``work`` (run one worker until
SIGTERM) and, for memory://, ``inproc`` (produce and drain in one process).

Every framework's job calls `Probe.hit` with the job's index, so what is timed is
the same code everywhere and no framework's result store is in any figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BATCH",
    "Config",
    "Flaky",
    "Probe",
    "dispatch",
    "emit",
    "latency_async",
    "latency_sync",
    "produce_async",
    "produce_sync",
]

BATCH = 500  # jobs per batched enqueue call
SINGLES = 500  # at most this many jobs enqueued one at a time (the single-enqueue rate)
FILL_WINDOW = 50  # in-flight enqueues while filling the queue without a batch API
PROGRESS_EVERY = 0.2  # seconds between progress notes (a time-boxed drain is measured on the last)
_DATAGRAM = struct.Struct("!qd")  # job index, time.time() when the job ran


@dataclass(frozen=True, slots=True)
class Config:
    """One run's settings, passed from the harness in ``BENCH_CONFIG``."""

    framework: str
    broker: str
    url: str
    workload: str  # burst | latency | retry
    jobs: int  # measured jobs
    warm: int  # warm-up jobs enqueued before the measured ones (not timed)
    out: str  # where the worker writes its `Drain` JSON
    udp_port: int = 0
    queue: str = "bench"
    concurrency: int = 10
    retry_delay: float = 0.1
    fill: int = 0  # measured jobs to enqueue when fewer than `jobs` (0: all)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """Measured jobs enqueued: `jobs`, or fewer for a framework time-boxed before."""
        return self.fill or self.jobs

    @property
    def total(self) -> int:
        """Jobs enqueued for a burst or retry run (warm-up plus measured)."""
        return self.warm + self.depth

    @classmethod
    def load(cls) -> Config:
        """The config of this process."""
        return cls(**json.loads(os.environ["BENCH_CONFIG"]))

    def dump(self) -> str:
        """This config as the JSON the runners read."""
        return json.dumps(asdict(self))


class Flaky(RuntimeError):
    """What a retry-workload job raises on its first attempt."""


@dataclass(slots=True)
class Drain:
    """What one worker measured while draining: the figures of burst and retry."""

    jobs: int
    seconds: float
    cpu_seconds: float
    max_rss_kib: int


class Probe:
    """The body of every benchmark job, with the counters of this worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hits = 0
        self.done = 0
        self.first = 0.0
        self.cpu_first = 0.0
        self.failed: set[int] = set()
        self.finished = False
        self.on_finish: Callable[[], object] | None = None
        self.noted = 0.0
        self._udp: socket.socket | None = None
        self._lock = threading.Lock()

    def hit(self, i: int) -> None:
        """Run job `i`: note the time; fail its first attempt in the retry workload."""
        if self.config.workload == "latency":
            self._send(i)
            return
        # Threaded workers (dramatiq, celery threads) run jobs concurrently: count under a lock.
        with self._lock:
            self._count(i)

    def _count(self, i: int) -> None:
        config = self.config
        self.hits += 1
        measured = self.hits - config.warm
        # The warm-up jobs run first; the clock starts with the first measured one.
        if measured == 1:
            self.first = self.noted = time.perf_counter()
            self.cpu_first = time.process_time()
            # Tells the harness the measured drain began (its time box starts now).
            open(f"{config.out}.started", "w").close()
        if config.workload == "retry":
            # Progress in attempts (two per job): successes lag until the first pass ends.
            self._note(measured // 2)
            if i not in self.failed:
                self.failed.add(i)
                raise Flaky(f"job {i} fails its first attempt on purpose")
        self.done += 1
        if self.done == config.total:
            self._write(config.out, config.depth)
            self.finished = True
            if self.on_finish is not None:
                self.on_finish()
        elif config.workload == "burst" and measured > 0:
            self._note(measured)

    def _note(self, jobs: int) -> None:
        """Every PROGRESS_EVERY seconds, what a time-boxed drain is measured on."""
        if jobs > 0 and time.perf_counter() - self.noted >= PROGRESS_EVERY:
            self._write(f"{self.config.out}.progress", jobs)
            self.noted = time.perf_counter()

    def _send(self, i: int) -> None:
        if self._udp is None:
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.sendto(_DATAGRAM.pack(i, time.time()), ("127.0.0.1", self.config.udp_port))

    def _write(self, path: str, jobs: int) -> None:
        drain = Drain(
            jobs=jobs,
            seconds=time.perf_counter() - self.first,
            cpu_seconds=time.process_time() - self.cpu_first,
            max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(drain), f)
        os.replace(tmp, path)


def emit(payload: dict[str, Any]) -> None:
    """Hand a producer's figures to the harness (one marked line on stdout)."""
    print("BENCH_RESULT " + json.dumps(payload), flush=True)


def _split(config: Config, size: int) -> tuple[list[int], list[list[int]]]:
    """Up to a fifth (at most SINGLES) one at a time, timed; the rest in chunks of `size`."""
    indices = list(range(config.total))
    cut = max(1, min(SINGLES, len(indices) // 5))
    rest = indices[cut:]
    return indices[:cut], [rest[k : k + size] for k in range(0, len(rest), size)]


def _rates(singles: int, single_s: float, batched: int, batch_s: float) -> dict[str, Any]:
    return {
        "enqueue_single": singles / single_s if single_s > 0 else None,
        "enqueue_batch": batched / batch_s if batched and batch_s > 0 else None,
    }


async def produce_async(
    config: Config,
    one: Callable[[int], Awaitable[object]],
    batch: Callable[[Sequence[int]], Awaitable[object]] | None = None,
) -> dict[str, Any]:
    """Enqueue the run's jobs with an async client; returns the enqueue rates.

    Without a batch API the rest of the queue is filled with concurrent single
    enqueues, untimed (only a real batch API gets a batched rate).
    """
    singles, chunks = _split(config, BATCH if batch is not None else FILL_WINDOW)
    t0 = time.perf_counter()
    for i in singles:
        await one(i)
    t1 = time.perf_counter()
    for chunk in chunks:
        if batch is not None:
            await batch(chunk)
        else:
            await asyncio.gather(*(one(i) for i in chunk))
    t2 = time.perf_counter()
    return _rates(len(singles), t1 - t0, sum(map(len, chunks)) if batch else 0, t2 - t1)


def produce_sync(
    config: Config,
    one: Callable[[int], object],
    batch: Callable[[Sequence[int]], object] | None = None,
) -> dict[str, Any]:
    """Enqueue the run's jobs with a blocking client; returns the enqueue rates.

    Without a batch API the rest is filled from a few threads, untimed.
    """
    singles, chunks = _split(config, BATCH if batch is not None else FILL_WINDOW)
    t0 = time.perf_counter()
    for i in singles:
        one(i)
    t1 = time.perf_counter()
    if batch is not None:
        for chunk in chunks:
            batch(chunk)
    else:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, [i for chunk in chunks for i in chunk]))
    t2 = time.perf_counter()
    return _rates(len(singles), t1 - t0, sum(map(len, chunks)) if batch else 0, t2 - t1)


def _listen(config: Config, blocking: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", config.udp_port))
    sock.setblocking(blocking)
    if blocking:
        sock.settimeout(30.0)
    return sock


def _ran_at(data: bytes, i: int) -> float | None:
    index, at = _DATAGRAM.unpack(data)
    return at if index == i else None


async def latency_async(
    config: Config,
    one: Callable[[int], Awaitable[object]],
    after: Callable[[object, float], Awaitable[float]] | None = None,
) -> dict[str, Any]:
    """Submit jobs one at a time, each after the last one ran; submit→ran in ms.

    `after(handle, submitted_at)` may take a further measurement per job in ms
    (upnext's submit→result), reported as ``result_ms``.
    """
    loop = asyncio.get_running_loop()
    sock = _listen(config, blocking=False)
    samples: list[float] = []
    further: list[float] = []
    for i in range(config.total):
        submitted = time.time()
        handle = await one(i)
        while (ran := _ran_at(await asyncio.wait_for(loop.sock_recv(sock, 64), 30.0), i)) is None:
            pass
        if i >= config.warm:
            samples.append((ran - submitted) * 1000)
            if after is not None:
                further.append(await after(handle, submitted))
    sock.close()
    return {"latency_ms": samples, "result_ms": further or None}


def latency_sync(config: Config, one: Callable[[int], object]) -> dict[str, Any]:
    """Blocking twin of `latency_async`."""
    sock = _listen(config, blocking=True)
    samples: list[float] = []
    for i in range(config.total):
        submitted = time.time()
        one(i)
        while (ran := _ran_at(sock.recv(64), i)) is None:
            pass
        if i >= config.warm:
            samples.append((ran - submitted) * 1000)
    sock.close()
    return {"latency_ms": samples}


def use_uvloop() -> None:
    """Run asyncio frameworks on uvloop, the same for every one of them (and upnext)."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def dispatch(roles: dict[str, Callable[[Config], dict[str, Any] | None]]) -> None:
    """Run the role named in argv[1] with this process's config; print what it returns."""
    role = sys.argv[1]
    config = Config.load()
    use_uvloop()
    if role not in roles:
        raise SystemExit(f"{config.framework}: no role {role!r} (has {sorted(roles)})")
    if "clean" in roles and (
        role == "produce" or (role == "work" and config.workload == "latency")
    ):
        roles["clean"](config)  # one process start fewer per run: clean first
        open(f"{config.out}.ready", "w").close()
    result = roles[role](config)
    if result is not None:
        emit(result)
