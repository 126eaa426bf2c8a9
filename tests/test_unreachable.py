"""An unreachable broker fails the first submit fast, with the password hidden.

Issue 2's error table: "unreachable broker | first submit, within its
connect timeout | BrokerUnavailable, password redacted". Each backend is
pointed at a loopback port where nothing listens, and at a silent server
that accepts connections and never answers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import upnext
from upnext.testing.loopback import free_port

SECRET = "s3cr3t-canary"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback server that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


URLS = {
    "redis": "redis://:{secret}@127.0.0.1:{port}/0?socket_connect_timeout=1&socket_timeout=1",
    "amqp": "amqp://guest:{secret}@127.0.0.1:{port}/",
    "postgresql": "postgresql://postgres:{secret}@127.0.0.1:{port}/test?connect_timeout=1",
}


async def _first_submit(url: str) -> upnext.BrokerUnavailable:
    worker = upnext.Worker("unreachable", broker=url)

    @worker.task
    async def noop() -> None: ...

    with pytest.raises(upnext.BrokerUnavailable) as caught:
        await noop.submit()
    await worker.aclose()
    return caught.value


@pytest.mark.parametrize("scheme", sorted(URLS))
async def test_nothing_listening_raises_broker_unavailable_without_password(scheme: str) -> None:
    """A refused connection is BrokerUnavailable on the first submit, one line, no password."""
    url = URLS[scheme].format(secret=SECRET, port=free_port())
    started = time.monotonic()
    error = await _first_submit(url)
    assert time.monotonic() - started < 15.0
    message = str(error)
    assert SECRET not in message
    assert SECRET not in repr(error)
    assert "\n" not in message
    assert "127.0.0.1" in message


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
async def test_silent_server_fails_within_connect_timeout(scheme: str, silent_port: int) -> None:
    """A server that never answers fails within the URL's connect timeout (1 s here)."""
    url = URLS[scheme].format(secret=SECRET, port=silent_port)
    started = time.monotonic()
    error = await _first_submit(url)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"took {elapsed:.1f}s against a 1 s connect timeout"
    assert SECRET not in str(error)
