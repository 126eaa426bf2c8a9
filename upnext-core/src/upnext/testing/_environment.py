"""Skip a test for want of something it needs, loudly, and never in CI.

A user without Redis or a browser gets a one-line skip; under ``CI`` or
``UPNEXT_REQUIRE_SERVICES`` the same want fails the run, so a missing server
or package can never turn a red suite green by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from urllib.parse import urlsplit

import pytest

from upnext.broker.redact import redact_url

__all__ = ["needs_modules", "needs_server", "unavailable"]

_PORTS = {"redis": 6379, "rediss": 6380, "amqp": 5672, "amqps": 5671, "postgresql": 5432}


def unavailable(message: str) -> None:
    """Fail with `message` under CI / UPNEXT_REQUIRE_SERVICES, else skip with it."""
    if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def needs_modules(*modules: str) -> None:
    """`unavailable` unless every module (or package of a dotted name) can be imported."""
    for name in modules:
        if importlib.util.find_spec(name.partition(".")[0]) is None:
            unavailable(
                f"{name} is not installed: pip install 'upnext-core[server]' and the test tools"
            )


def needs_server(url: str, port: int | None = None) -> None:
    """`unavailable` unless something accepts a TCP connection at `url`'s host and port.

    The port is the URL's, else `port`, else the scheme's usual one (Redis,
    AMQP, PostgreSQL). The message shows the URL with its password hidden.
    """
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or port or _PORTS.get(parts.scheme, 0))
    try:
        socket.create_connection(address, 2).close()
    except OSError:
        unavailable(f"no server at {redact_url(url)}: start it (docker compose up -d)")
