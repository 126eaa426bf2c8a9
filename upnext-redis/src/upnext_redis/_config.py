"""Parse a ``redis://`` / ``rediss://`` / ``redis+sentinel://`` URL into typed options.

upnext's own query options are taken out here; the rest (db, TLS files,
username/password) goes to redis-py. Unknown options are an error, so a typo
never passes silently.

A Sentinel URL names the sentinels, then the service (the master's name) and
an optional database::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]

The port defaults to 26379. Credentials and TLS (``rediss+sentinel://``) are
the master's; the sentinels are asked without credentials.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
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
    - `sentinels` / `service_name`: set for a Sentinel URL; the master is
      whatever the sentinels name for the service, asked again on reconnect.
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
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str = ""


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


_SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
_SENTINEL_PORT = 26379


def _sentinel_parts(url: str, safe: str) -> tuple[str, tuple[tuple[str, int], ...], str]:
    """A Sentinel URL as (the master's redis:// URL, the sentinels, the service name)."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
        if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
            raise ConfigurationError(f"bad sentinel address {entry!r} in {safe!r}: write host:port")
        sentinels.append((host, int(port) if port else _SENTINEL_PORT))
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ConfigurationError(f"no service name in {safe!r}: write .../service_name[/db]")
    netloc = f"{userinfo}@{sentinels[0][0]}" if userinfo else sentinels[0][0]
    scheme = _SENTINEL_SCHEMES[parts.scheme]
    master = urlunsplit((scheme, netloc, f"/{db}" if db else "", parts.query, ""))
    return master, tuple(sentinels), service


def parse_url(url: str) -> RedisOptions:
    """Split `url` into upnext options and what redis-py should see."""
    safe = redact_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme in _SENTINEL_SCHEMES:
        # Several hosts in one netloc: core's check_url reads one port only.
        if not url[len(scheme) + 1 :].startswith("//"):
            raise ConfigurationError(f"malformed URL {safe!r}: write {scheme}://host/service")
        master, sentinels, service = _sentinel_parts(url, safe)
        options = _parse_plain(master, safe)
        if options.cluster:
            raise ConfigurationError(f"a Sentinel URL cannot be a cluster seed: {safe!r}")
        return replace(options, url=url, sentinels=sentinels, service_name=service)
    if scheme not in {"redis", "rediss"}:
        raise ConfigurationError(f"not a redis://, rediss:// or redis+sentinel:// URL: {safe!r}")
    check_url(url)
    return _parse_plain(url, safe)


def _parse_plain(url: str, safe: str) -> RedisOptions:
    parts = urlsplit(url)
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
