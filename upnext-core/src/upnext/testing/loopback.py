"""Loopback helpers for tests: free ports, and an ASGI app served in a thread.

Test traffic stays on 127.0.0.1. A port found free can be taken by someone
else before it is used; tests bind it at once, and a clash fails loudly.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["free_port", "free_ports", "serve_in_thread"]

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """One loopback port that was free a moment ago."""
    return free_ports(1)[0]


@contextmanager
def serve_in_thread(app: Any, *, start_timeout: float = 20.0) -> Iterator[str]:
    """Serve the ASGI `app` with uvicorn on a free loopback port; yields its base URL.

    A thread starts faster than a process and shares the process's memory://
    brokers. Needs the ``server`` extra (uvicorn).
    """
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {LOOPBACK}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
