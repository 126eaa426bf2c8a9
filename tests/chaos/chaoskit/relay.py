"""A frozen host, modelled honestly: a TCP relay in its own process, stopped with SIGSTOP.

``python -m chaoskit.relay HOST PORT`` forwards 127.0.0.1:<free port> to
HOST:PORT (loopback only) and prints its port. `Relay` runs it as a
subprocess: `freeze()` sends SIGSTOP, `thaw()` SIGCONT. While it is stopped
its sockets stay open and the kernel still accepts new connections into the
listen backlog, but nothing is read, written or answered: what a paused
container or a frozen VM looks like from outside.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from upnext.testing.proxy import FaultyProxy

__all__ = ["Relay"]

_HERE = str(Path(__file__).resolve().parent.parent)


class Relay:
    """The relay subprocess in front of `host`:`port`; use as an async context manager."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def __aenter__(self) -> Relay:
        path = os.pathsep.join([_HERE, os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        host, port = self._target
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chaoskit.relay",
            host,
            str(port),
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30.0)
        self.port = int(line)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()  # SIGKILL ends a stopped process too
            await self._proc.wait()

    def freeze(self) -> None:
        """Stop the relay process: connections stay open, nothing moves."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let the relay run again: held bytes flow, held connects are accepted."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)


async def _serve(host: str, port: int) -> None:
    async with FaultyProxy(host, port) as proxy:
        print(proxy.port, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
