"""Chaos workers as subprocesses: start, signal, restart, and watch the ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chaoskit.backends import Backend
from chaoskit.ledger import Ledger
from chaoskit.worker import Options

__all__ = ["Pool", "rss_kib", "spawn", "wait_until"]

_HERE = str(Path(__file__).resolve().parent.parent)


async def spawn(
    backend: Backend, ledger: Ledger, options: Options, *, capture: bool = False
) -> asyncio.subprocess.Process:
    """Start one chaos worker process on the backend's queue (`capture`: stderr to a pipe)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_HERE, os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTHONTRACEMALLOC", None)  # workers at full speed even when the test traces
    argv = ["--url", backend.url, "--queue", backend.queue, "--ledger", str(ledger.path)]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chaoskit.worker",
        *argv,
        *options.argv(),
        env=env,
        stderr=asyncio.subprocess.PIPE if capture else None,
    )


async def wait_until(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll `check` every 50 ms; seconds it took, or AssertionError naming `what`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)  # the work happens in other processes
    return time.monotonic() - start


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for pid {pid}")


class Pool:
    """A set of chaos workers kept alive like a supervisor would: dead ones are restarted."""

    def __init__(self, backend: Backend, ledger: Ledger, options: Options, size: int) -> None:
        self.backend, self.ledger, self.options, self.size = backend, ledger, options, size
        self.procs: list[asyncio.subprocess.Process] = []
        self.deaths = 0

    async def __aenter__(self) -> Pool:
        for _ in range(self.size):
            self.procs.append(await spawn(self.backend, self.ledger, self.options))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop(signal.SIGKILL)

    async def restart_dead(self) -> int:
        """Replace every exited worker with a new one; how many were replaced."""
        replaced = 0
        for n, proc in enumerate(self.procs):
            if proc.returncode is not None:
                self.procs[n] = await spawn(self.backend, self.ledger, self.options)
                replaced += 1
        self.deaths += replaced
        return replaced

    async def supervise(self, check: Callable[[], bool], within: float) -> None:
        """Restart dead workers until `check` holds; AssertionError after `within` s."""
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within} s ({len(self.ledger.done())} done)")
            await self.restart_dead()
            await asyncio.sleep(0.1)  # a supervisor's restart delay

    async def stop(self, sig: int = signal.SIGTERM, within: float = 30.0) -> list[int | None]:
        """Signal every live worker and wait for it; their exit codes."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(sig)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs)), within)
        except TimeoutError:
            for proc in self.procs:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in self.procs))
        return [p.returncode for p in self.procs]
