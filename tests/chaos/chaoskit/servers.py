"""A private redis-server on a free loopback port, killed and restarted at will.

It persists with AOF and ``appendfsync always``, so every write Redis
acknowledged survives a SIGKILL: what scenario 3 needs to judge "every
acknowledged enqueue completes" across a broker crash.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from upnext.testing.loopback import free_port

__all__ = ["PrivateRedis", "free_port"]


class PrivateRedis:
    """``redis-server`` in `workdir` on 127.0.0.1:`port`; `kill()` and `start()` again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (needed for a private server)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server (on the same port and data every time); return once it answers."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.025)
                continue
            writer.close()
            return
        raise AssertionError(f"private redis-server on port {self.port} did not start")

    async def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final save) and reap it."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None
