"""Scenario 4: a worker started while its broker is unreachable.

One log line per failed attempt (password hidden), backoff doubling from
0.2 s up to a 5 s cap, exit code 69 once `connect_timeout` has passed; and a
broker that arrives late is used as soon as the next attempt comes.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from pathlib import Path

import pytest
from chaoskit import FULL
from chaoskit.backends import BACKENDS, Backend, server_address, through
from chaoskit.ledger import Ledger, report
from chaoskit.procs import spawn, wait_until
from chaoskit.proxy import FaultyProxy
from chaoskit.servers import free_port
from chaoskit.worker import Options, build

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120 if FULL else 60)]

CANARY = "Canary5ecret4404"
# Long enough to reach the 5 s cap in the full run (0.2+0.4+0.8+1.6+3.2 = 6.2 s, then 5 s steps).
GIVE_UP = 20.0 if FULL else 2.5
DOWN_FOR = 8.0 if FULL else 1.5
DEAD = {
    "redis": "redis://:{secret}@127.0.0.1:{port}/0",
    "rabbitmq": "amqp://guest:{secret}@127.0.0.1:{port}/",
    "postgres": "postgresql://postgres:{secret}@127.0.0.1:{port}/test",
}
ATTEMPT = re.compile(
    r"^(?P<at>\d+\.\d+) WARNING upnext\.worker: connecting to (?P<url>\S+) failed"
    r" \(attempt (?P<n>\d+), retrying in (?P<wait>[\d.]+) s\): (?P<why>.+)$"
)
GAVE_UP = re.compile(
    r"^(?P<at>\d+\.\d+) ERROR upnext\.worker: connecting to (?P<url>\S+) failed"
    r" \(attempt (?P<n>\d+), giving up after connect_timeout=(?P<limit>[\d.]+) s\): .+$"
)


def _check_attempts(lines: list[str], port: int) -> list[re.Match[str]]:
    """One upnext line per attempt, numbered 1..n, each wait doubling to the cap, kept."""
    attempts = [m for m in map(ATTEMPT.match, lines) if m]
    assert [int(m["n"]) for m in attempts] == list(range(1, len(attempts) + 1))
    for k, m in enumerate(attempts[:-1]):
        assert float(m["wait"]) == pytest.approx(min(0.2 * 2**k, 5.0), abs=0.05)
    for m, after in itertools.pairwise(attempts):  # waited as announced
        assert float(after["at"]) - float(m["at"]) >= float(m["wait"]) - 0.05
    for m in attempts:
        assert f":***@127.0.0.1:{port}/" in m["url"]
    return attempts


@pytest.mark.parametrize("name", BACKENDS)
async def test_unreachable_broker_at_start_exits_69_on_time(name: str, tmp_path: Path) -> None:
    """Nothing listens: one redacted line per attempt, capped backoff, exit 69 at the timeout."""
    port = free_port()
    url = DEAD[name].format(secret=CANARY, port=port)
    backend = Backend(name, url, url, f"chaos-{uuid.uuid4().hex[:10]}", "dead")
    options = Options(connect_timeout=GIVE_UP)
    spawned = time.time()
    proc = await spawn(backend, Ledger(tmp_path / "ledger.txt"), options, capture=True)
    _, err = await asyncio.wait_for(proc.communicate(), GIVE_UP + 20)
    elapsed = time.time() - spawned
    text = err.decode()
    assert CANARY not in text
    lines = text.splitlines()
    assert lines, "the worker logged nothing"
    final = GAVE_UP.match(lines[-1])
    assert final is not None, f"no final 'giving up' line: {lines[-3:]}"
    attempts = _check_attempts(lines, port)
    assert attempts, "no retry was logged"
    assert int(final["n"]) == len(attempts) + 1
    # The deadline starts once the worker is imported (about a second after spawning).
    assert GIVE_UP <= float(final["at"]) - spawned <= GIVE_UP + 5.0
    assert proc.returncode == 69
    report(
        "unreachable-at-start",
        name,
        attempts=len(attempts) + 1,
        longest_wait=max(float(m["wait"]) for m in attempts),
        connect_timeout=GIVE_UP,
        exit_code=proc.returncode,
        process_seconds=elapsed,
        other_lines=len(lines) - len(attempts) - 1,
    )


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode().rstrip("\n"))


async def test_broker_arriving_late_is_used_at_the_next_attempt(
    backend: Backend, ledger: Ledger
) -> None:
    """The broker comes up while the worker retries: it connects and runs the waiting job."""
    async with FaultyProxy(*server_address(backend)) as proxy:
        await proxy.down()
        options = Options(connect_timeout=60.0)
        producer, tasks = build(backend.url, backend.queue, ledger, options)
        await tasks.work.submit(i=0, ms=1)
        proc = await spawn(through(backend, proxy.port), ledger, options, capture=True)
        assert proc.stderr is not None
        lines: list[str] = []
        reader = asyncio.create_task(_collect(proc.stderr, lines))
        try:
            await wait_until(lambda: any(map(ATTEMPT.match, lines)), 20.0, "a failed attempt")
            await asyncio.sleep(DOWN_FOR)
            await proxy.up()
            up_at = time.time()
            await wait_until(
                lambda: bool(ledger.done()), 10.0, "the job ran after the broker came up"
            )
            [done] = ledger.entries("D")
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await reader
            await producer.aclose()
    attempts = [m for m in map(ATTEMPT.match, lines) if m]
    waits = [float(m["wait"]) for m in attempts]
    report(
        "broker-late-at-start",
        backend.name,
        failed_attempts=len(attempts),
        down_for=DOWN_FOR,
        job_done_after_up=done.at - up_at,
        last_wait=waits[-1],
    )
    # The next attempt comes at most one (capped) wait after the broker is back.
    assert done.at - up_at <= max(waits) + 3.0
    assert proc.returncode == 0
