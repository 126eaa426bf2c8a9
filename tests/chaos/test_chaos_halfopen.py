"""Scenario 5: half-open connections: the worker's connections go silent without closing.

The worker reaches the broker through a proxy that, at the fault, stops
forwarding on every connection open at that moment — sockets stay open, bytes
are held, as when a NAT or firewall drops the flows or the broker host dies
without a reset — while new connections get through. Jobs are in flight at
the fault; probe jobs submitted afterwards (directly, not through the proxy)
can only start once the worker has noticed and reconnected, so the first
probe's start time is the detection time. The full run keeps every default;
the short one tightens the backend's timeouts by URL so the same path is
proven in a few seconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from chaoskit import FULL
from chaoskit.backends import Backend, server_address, through
from chaoskit.ledger import Ledger, report, verdict
from chaoskit.procs import spawn, wait_until
from chaoskit.proxy import FaultyProxy
from chaoskit.worker import Options, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180 if FULL else 60)]

BLACKHOLE = 20.0 if FULL else 9.0
DETECT_BOUND = 15.0 if FULL else 8.0
IN_FLIGHT = 4  # 1.5 s jobs running at the fault
# Short variant: the same detection paths, with shorter timeouts.
FAST = {
    "redis": "socket_timeout=1&recovery_interval=1",
    "rabbitmq": "heartbeat=1",
    "postgres": "command_timeout=2&lease_recovery_interval=1",
}


def _tuned(backend: Backend) -> Backend:
    if FULL:
        return backend
    from dataclasses import replace

    sep = "&" if "?" in backend.url else "?"
    return replace(backend, url=f"{backend.url}{sep}{FAST[backend.name]}")


async def test_half_open_connections_are_detected_and_lose_nothing(
    backend: Backend, ledger: Ledger
) -> None:
    """Silent connections are replaced within the bound; every job completes."""
    options = Options(concurrency=IN_FLIGHT, lease=2.0)
    producer, tasks = build(backend.url, backend.queue, ledger, options)
    await tasks.work.submit_many([{"i": i, "ms": 1500} for i in range(IN_FLIGHT)])
    async with FaultyProxy(*server_address(backend)) as proxy:
        proc = await spawn(through(_tuned(backend), proxy.port), ledger, options)
        try:
            await wait_until(
                lambda: len(ledger.entries("S")) >= IN_FLIGHT, 30.0, "the slow jobs started"
            )
            fault_at = time.time()
            proxy.blackhole(existing_only=True)
            probes = 0
            while time.time() - fault_at < BLACKHOLE:
                await tasks.work.submit(i=1000 + probes, ms=10)
                probes += 1
                await asyncio.sleep(0.25)
            proxy.blackhole(False)
            expected = set(range(IN_FLIGHT)) | set(range(1000, 1000 + probes))
            try:
                await wait_until(lambda: ledger.done() >= expected, 60.0, "every job completed")
            except AssertionError as exc:
                missing = sorted(expected - ledger.done())
                raise AssertionError(f"{exc}; never completed: {missing}") from None
            dead = await producer.dlq.count(queue=backend.queue)
        finally:
            proc.terminate()
            await proc.wait()
            await producer.aclose()
    starts = [e.at for e in ledger.entries("S") if e.index >= 1000]
    detected = min(starts) - fault_at
    closed = [
        link.closed_by_client - fault_at
        for link in proxy.links
        if link.opened < fault_at and link.closed_by_client is not None
    ]
    result = verdict(ledger, expected)
    # Duplicates may come from the jobs in flight at the fault and from those the
    # worker handled while it replaced its connections (a settle retried after
    # the reconnect may publish a job's copy twice): at least once, bounded.
    reconnecting = {
        e.index for e in ledger.entries() if fault_at <= e.at <= fault_at + detected + 1
    }
    bound = len(set(range(IN_FLIGHT)) | reconnecting)
    report(
        "half-open",
        backend.name,
        jobs=result.jobs,
        lost=result.lost,
        duplicates=result.duplicates,
        bound=bound,
        blackhole=BLACKHOLE,
        detected_after=detected,
        first_close_after=min(closed) if closed else -1.0,
        dlq=dead,
    )
    assert detected <= DETECT_BOUND, f"the worker noticed after {detected:.1f} s"
    assert dead == 0
    result.check(max_duplicates=bound)
