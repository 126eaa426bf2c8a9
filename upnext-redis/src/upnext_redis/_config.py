"""Parse a ``redis://`` / ``rediss://`` URL into typed options.

upnext's own query options are taken out here; the rest (db, TLS files,
username/password) goes to redis-py. Unknown options are an error, so a typo
never passes silently.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from upnext._urls import check_url, did_you_mean
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError

__all__ = ["RedisOptions", "parse_url"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Passed through to redis-py's URL parser unchanged.
_DRIVER_OPTIONS = {
    "db",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
    "client_name",
}


_KNOWN = _DRIVER_OPTIONS | {
    "prefix",
    "strict",
    "cluster",
    "socket_timeout",
    "socket_connect_timeout",
    "health_check_interval",
    "recovery_interval",
    "lease_recovery_interval",
    "max_connections",
    "retries",
}


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Everything a RedisBroker needs to connect, from its URL.

    - `prefix`: the first part of every key (``upnext``).
    - `strict`: refuse a server whose ``maxmemory-policy`` may evict keys.
    - `socket_timeout` / `socket_connect_timeout`: seconds per read / connect.
    - `health_check_interval`: idle seconds before a connection is pinged;
      also how often the result listener proves its connection alive.
    - `recovery_interval`: the longest a receiver blocks before it looks for
      expired leases again, even without a wake-up (a safety net; due times
      and lease deadlines already cap each block exactly).
    - `max_connections`: size of the command pool (callers queue when all are busy).
    - `retries`: reconnect attempts (exponential backoff) per command.
    - `cluster`: the URL names a seed node of a Redis Cluster.
    """

    url: str
    driver_url: str
    safe_url: str
    prefix: str = "upnext"
    strict: bool = False
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 5.0
    health_check_interval: float = 10.0
    recovery_interval: float = 5.0
    max_connections: int = 64
    retries: int = 3
    cluster: bool = False
    driver_kwargs: dict[str, Any] = field(default_factory=dict)


def _bool(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"URL option {name} must be true or false, got {value!r}")


def _positive(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigurationError(f"URL option {name} must be a positive number, got {value!r}")
    return number


def _keepalive_options() -> dict[int, int]:
    # Probe an idle connection after 10 s, every 5 s, give up after 3 misses:
    # a half-open connection is found in about 25 s, not the kernel's 2 hours.
    wanted = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, k): v for k, v in wanted.items() if hasattr(socket, k)}


def parse_url(url: str) -> RedisOptions:
    """Split `url` into upnext options and what redis-py should see."""
    safe = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        raise ConfigurationError(f"not a redis:// or rediss:// URL: {safe!r}")
    check_url(url)
    ours: dict[str, Any] = {}
    passthrough: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _DRIVER_OPTIONS:
            passthrough.append((name, value))
        elif name == "prefix":
            ours["prefix"] = value
        elif name in {"strict", "cluster"}:
            ours[name] = _bool(name, value)
        elif name in {"socket_timeout", "socket_connect_timeout", "health_check_interval"}:
            ours[name] = _positive(name, value)
        elif name in {"recovery_interval", "lease_recovery_interval"}:
            ours["recovery_interval"] = _positive(name, value)
        elif name == "max_connections":
            ours[name] = max(4, int(_positive(name, value)))
        elif name == "retries":
            ours[name] = int(value) if value.isdigit() else -1
            if ours[name] < 0:
                raise ConfigurationError(f"URL option retries must be >= 0, got {value!r}")
        else:
            raise ConfigurationError(
                f"unknown Redis URL option {name!r}{did_you_mean(name, _KNOWN)} in {safe!r}"
            )
    driver_url = urlunsplit(parts._replace(query=urlencode(passthrough)))
    driver_kwargs: dict[str, Any] = {
        "socket_keepalive": True,
        "socket_keepalive_options": _keepalive_options(),
    }
    if parts.scheme == "rediss":
        # Verify certificates and host names unless the URL says otherwise.
        driver_kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=True)
    return RedisOptions(
        url=url,
        driver_url=driver_url,
        safe_url=safe,
        driver_kwargs=driver_kwargs,
        **ours,
    )
