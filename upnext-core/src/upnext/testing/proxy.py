"""A TCP proxy on 127.0.0.1 that can cut, refuse, blackhole (half-open) and delay connections.

For a backend's reliability tests: put it between the backend and its
server and break the link on purpose, never the shared server itself. It
only forwards to loopback addresses.

`cut()` closes every proxied connection at once. `down()` cuts and stops
listening (connects are refused, as with a stopped broker) until `up()`;
`outage(s)` is both, `s` seconds apart.
`blackhole()` keeps sockets open but forwards nothing (new connections are
accepted and left silent), as a dead peer behind a stateful firewall looks;
`blackhole(existing_only=True)` silences only the connections open now, as
when a NAT drops their flows: new ones get through. `delay` adds latency per
chunk. Every connection's accept and client-side close times are recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

__all__ = ["FaultyProxy", "Link"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(eq=False, slots=True)
class Link:
    """One proxied connection: when it opened and when its client closed it."""

    opened: float
    closed_by_client: float | None = None
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to a loopback target, with faults on demand."""

    def __init__(self, host: str, port: int, *, delay: float = 0.0) -> None:
        if host not in _LOOPBACK:
            raise ValueError(f"the proxy only forwards to loopback hosts, not {host!r}")
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.delay = delay
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.links: list[Link] = []
        self.port = 0

    async def __aenter__(self) -> FaultyProxy:
        await self.up()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> int:
        """Close every proxied connection now (both directions); how many were open."""
        open_links = 0
        for link in self.links:
            open_links += any(not w.transport.is_closing() for w in link.writers)
            for writer in link.writers:
                writer.transport.abort()
            link.writers.clear()
        return open_links

    def freeze(self, number: int) -> None:
        """Silence the `number`-th connection ever accepted (1-based), both ways, for good."""
        self.links[number - 1].flowing.clear()

    async def down(self) -> None:
        """Cut every connection and stop listening: connects are refused until `up()`."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()

    async def outage(self, seconds: float) -> None:
        """Be `down()` for `seconds`, then `up()` again on the same port."""
        await self.down()
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.up()

    async def up(self) -> None:
        """Listen (again, on the same port): connects are forwarded."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = int(self._server.sockets[0].getsockname()[1])

    def blackhole(self, on: bool = True, *, existing_only: bool = False) -> None:
        """Stop (or resume) forwarding bytes; connections stay open and silent.

        With `existing_only`, only the connections open now go silent.
        """
        if not on:
            self._flowing.set()
            for link in self.links:
                link.flowing.set()
        elif existing_only:
            for link in self.links:
                link.flowing.clear()
        else:
            self._flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(time.time(), writers=[writer])
        link.flowing.set()
        self.links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        link.writers.append(up_writer)
        for src, dst, client in ((reader, up_writer, True), (up_reader, writer, False)):
            chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
            for coro in (self._read(link, src, chunks, client), self._write(link, chunks, dst)):
                task = asyncio.create_task(coro)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read(
        self,
        link: Link,
        src: asyncio.StreamReader,
        chunks: asyncio.Queue[bytes | None],
        client: bool,
    ) -> None:
        """Read one direction for ever, even while blackholed (to see the client hang up)."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await src.read(65536):
                chunks.put_nowait(chunk)
        if client and link.closed_by_client is None:
            link.closed_by_client = time.time()
        chunks.put_nowait(None)

    async def _write(
        self, link: Link, chunks: asyncio.Queue[bytes | None], dst: asyncio.StreamWriter
    ) -> None:
        """Forward what was read, holding it while blackholed (the peer sees silence)."""
        with contextlib.suppress(OSError):
            while True:
                chunk = await chunks.get()
                await self._flowing.wait()
                await link.flowing.wait()
                if chunk is None:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(chunk)
                await dst.drain()
        dst.transport.abort()
