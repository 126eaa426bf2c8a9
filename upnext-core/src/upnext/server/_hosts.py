"""The Host check: a DNS-rebinding page must not reach the API through a browser.

Without a token the server trusts loopback callers. A page from
``rebind.evil.example`` whose name is re-pointed at 127.0.0.1 would be such
a caller, with its own name in the ``Host`` header. So only the names the
server is reached by are served: the loopback names, and those listed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ENV_ALLOWED_HOSTS", "LOOPBACK_HOSTS", "HostGuard", "served_hosts", "split_host"]

ENV_ALLOWED_HOSTS = "UPNEXT_ALLOWED_HOSTS"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def split_host(value: str) -> tuple[str, str]:
    """``host[:port]`` as (lower-cased host without a final dot, port or '')."""
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 literal: [::1]:8000
        host, _, rest = value.partition("]")
        return host + "]", rest.removeprefix(":")
    host, _, port = value.partition(":")
    return host.rstrip("."), port


def served_hosts(extra: Iterable[str] | None) -> list[str]:
    """The loopback names, then `extra`, then the comma-separated ``$UPNEXT_ALLOWED_HOSTS``."""
    env = os.environ.get(ENV_ALLOWED_HOSTS, "")
    listed = [*(extra or ()), *env.split(",")]
    return [*LOOPBACK_HOSTS, *(h.strip() for h in listed if h.strip())]


class HostGuard:
    """Serve only requests whose ``Host`` is allowed; others get a JSON 400.

    An allowed entry is ``host`` (any port) or ``host:port``; ``*`` allows
    every host.
    """

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = [split_host(h) for h in hosts]
        self.any = ("*", "") in self.hosts

    def allows(self, value: str) -> bool:
        """Whether a ``Host`` header value names this server."""
        host, port = split_host(value)
        return bool(host) and any(host == h and (not p or port == p) for h, p in self.hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        host = next((bytes(v).decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if self.allows(host):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self._refuse(host, send)

    async def _refuse(self, host: str, send: Send) -> None:
        message = (
            f"host {host!r} is not served here; list it with --allowed-host"
            f" (or ${ENV_ALLOWED_HOSTS}, or create_app(allowed_hosts=))"
        )
        body = json.dumps({"error": "bad_host", "message": message}, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})
