"""amqps:// end to end: every connection of the broker speaks TLS and verifies the server.

A TLS terminator on 127.0.0.1 (a throwaway CA from trustme) forwards to the
plain test server, so the handshake, certificate check and the URL's TLS
settings are exercised for aio-pika's connection and the lean consumer,
publisher and dead-letter scan alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import trustme
from upnext.broker.protocol import Ack, Envelope
from upnext.errors import BrokerUnavailable
from upnext_rabbitmq import RabbitBroker
from upnext_rabbitmq._wire import WireConnection


@contextlib.asynccontextmanager
async def _tls_terminator(target: tuple[str, int], context: ssl.SSLContext) -> AsyncIterator[int]:
    """Accept TLS on a free loopback port and pipe plaintext to `target`; yields the port."""
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*target)
        both = [
            asyncio.create_task(pipe(client_r, server_w)),
            asyncio.create_task(pipe(server_r, client_w)),
        ]
        tasks.update(both)
        await asyncio.gather(*both, return_exceptions=True)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest_asyncio.fixture
async def tls_port(amqp_url: str, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A TLS terminator in front of the test server: its port, and the CA file trusting it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    target = urlsplit(amqp_url)
    async with _tls_terminator(
        (target.hostname or "127.0.0.1", target.port or 5672), context
    ) as port:
        yield port, cafile


async def test_every_connection_speaks_tls(
    upnext_queue: str,
    tls_port: tuple[int, Path],
    queue_deleter: Callable[[set[str]], Awaitable[None]],
) -> None:
    """Enqueue, receive, settle and a dead-letter scan all work through amqps://."""
    port, cafile = tls_port
    broker = RabbitBroker(f"amqps://guest:guest@127.0.0.1:{port}/?cafile={cafile}")
    await broker.connect()
    try:
        await broker.enqueue_many([Envelope("tls", upnext_queue, b"x")])
        [got] = await broker.receive([upnext_queue], limit=1, lease=30, wait=5.0)
        assert got.envelope.id == "tls"
        assert await broker.settle([Ack(got)]) == [None]
        assert await broker.dlq_count(queue=upnext_queue) == 0
    finally:
        await broker.aclose()
        await queue_deleter({upnext_queue})


async def test_an_untrusted_server_is_refused(tls_port: tuple[int, Path]) -> None:
    """Without the CA the certificate check fails: BrokerUnavailable, nothing sent in clear."""
    port, _ = tls_port
    url = f"amqps://guest:guest@127.0.0.1:{port}/"
    with pytest.raises(BrokerUnavailable):
        await RabbitBroker(url).connect()
    # The lean connections check the certificate too (they open after aio-pika's).
    with pytest.raises(ssl.SSLCertVerificationError):
        await WireConnection.open(url)
