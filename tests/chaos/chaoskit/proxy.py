"""A TCP proxy on 127.0.0.1 that can cut, blackhole (half-open) and delay connections.

`cut()` closes every proxied connection at once. `blackhole()` keeps sockets
open but forwards nothing (new connections are accepted and left silent), as a
dead peer behind a stateful firewall looks. `delay` adds latency per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib

from chaoskit.backends import require_loopback

__all__ = ["FaultyProxy"]


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to a loopback target, with faults on demand."""

    def __init__(self, host: str, port: int, *, delay: float = 0.0) -> None:
        require_loopback(f"tcp://{host}:{port}")
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.delay = delay
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def __aenter__(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Close every proxied connection now (both directions)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def blackhole(self, on: bool = True) -> None:
        """Stop (or resume) forwarding bytes; connections stay open and silent."""
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await src.read(65536):
                await self._flowing.wait()  # blackholed: hold the bytes, the peer sees silence
                if self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(chunk)
                await dst.drain()
        dst.transport.abort()
