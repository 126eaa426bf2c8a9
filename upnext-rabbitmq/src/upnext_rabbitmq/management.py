"""RabbitMQ's queues and depths from its management HTTP API (``--management-url``).

AMQP cannot list queues, and upnext's own catalog of them is best effort; the
management plugin knows every queue. `upnext server` asks it (through
`RabbitBroker.management_stats`, core's `ManagementStats` protocol) for
upnext's work and dead-letter queues in the broker URL's vhost, 500 queues a
request. Its counts are the plugin's samples (taken every
``collect_statistics_interval``, 5 s by default), so they lag by that much,
but they include the jobs in flight (delivered, not yet acknowledged), which
AMQP cannot count. Scheduled jobs wait in the queue's own delay levels; their
sum is the scheduled count. A queue not sampled yet has None counts.

Credentials come from the management URL (``http://user:pass@host:15672``),
else from the broker URL. The password goes in a Basic auth header only: the
URL httpx sees and logs has none, and errors name the URL redacted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
from upnext.broker.protocol import QueueStats
from upnext.broker.redact import redact_url
from upnext.errors import BrokerError, BrokerUnavailable, ConfigurationError

from upnext_rabbitmq.topology import DEAD_PREFIX, LEVEL_PREFIX, PREFIX, WORK_PREFIX

__all__ = ["ManagementAPI"]

PAGE_SIZE = 500  # the management API's largest page
TIMEOUT = 10.0
_COLUMNS = "name,messages,messages_ready,messages_unacknowledged"
_NAMES = rf"^{PREFIX}\.(q|dlq|ladder\.[0-9]+)\."  # work queues, DLQs, delay levels


def _scheduled(amqp: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Jobs in each upnext queue's delay levels (``upnext.ladder.<k>.<name>``)."""
    totals: dict[str, int] = {}
    for amqp_name, item in amqp.items():
        level, dot, name = amqp_name.removeprefix(LEVEL_PREFIX).partition(".")
        if amqp_name.startswith(LEVEL_PREFIX) and dot and level.isdigit() and name:
            totals[name] = totals.get(name, 0) + (_count(item, "messages") or 0)
    return totals


def _count(queue: dict[str, Any] | None, key: str) -> int | None:
    value = None if queue is None else queue.get(key)
    return value if isinstance(value, int) else None


class ManagementAPI:
    """A client of one RabbitMQ management API, for one broker URL's vhost."""

    def __init__(self, url: str, broker_url: str) -> None:
        self.shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
            broker = urlsplit(broker_url)
        except ValueError:
            raise ConfigurationError(f"malformed management URL {self.shown}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"management URL must be http(s)://[user:password@]host:port, got {self.shown}"
            )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{port}" if port else host
        self._base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        source = parts if parts.username else broker
        user, password = unquote(source.username or "guest"), unquote(source.password or "guest")
        self._auth = httpx.BasicAuth(user, password)
        self._vhost = unquote(broker.path[1:]) if broker.path not in ("", "/") else "/"
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(auth=self._auth, timeout=TIMEOUT)
        return self._client

    async def _page(self, number: int) -> dict[str, Any]:
        url = f"{self._base}/api/queues/{quote(self._vhost, safe='')}"
        params = {
            "page": str(number),
            "page_size": str(PAGE_SIZE),
            "name": _NAMES,
            "use_regex": "true",
            "columns": _COLUMNS,
        }
        try:
            response = await self._http().get(url, params=params)
        except httpx.HTTPError as exc:
            # The exception's text may quote the URL: name only its kind.
            raise BrokerUnavailable(
                f"management API at {self.shown} unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code in (401, 403):
            raise BrokerError(
                f"management API at {self.shown} refused the credentials ({response.status_code})"
            )
        if response.status_code == 404:
            raise BrokerError(f"management API at {self.shown} has no vhost {self._vhost!r}")
        if response.status_code != 200:
            raise BrokerError(
                f"management API at {self.shown} answered HTTP {response.status_code}"
            )
        try:
            body = response.json()
        except ValueError:
            raise BrokerError(f"management API at {self.shown} answered no JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise BrokerError(f"management API at {self.shown} answered an unknown shape")
        return body

    async def _amqp_queues(self) -> dict[str, dict[str, Any]]:
        """Every upnext work queue and DLQ of the vhost, by AMQP name."""
        found: dict[str, dict[str, Any]] = {}
        number = 1
        while True:
            body = await self._page(number)
            for item in body["items"]:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    found[item["name"]] = item
            if number >= int(body.get("page_count") or 1):
                return found
            number += 1

    async def all_stats(self) -> dict[str, QueueStats]:
        """Every upnext queue of the vhost with its depths, by upnext queue name."""
        amqp = await self._amqp_queues()
        names = sorted(
            {
                name.removeprefix(prefix)
                for name in amqp
                for prefix in (WORK_PREFIX, DEAD_PREFIX)
                if name.startswith(prefix) and len(name) > len(prefix)
            }
        )
        scheduled = _scheduled(amqp)
        counts: dict[str, QueueStats] = {}
        for name in names:
            work, dead = amqp.get(WORK_PREFIX + name), amqp.get(DEAD_PREFIX + name)
            counts[name] = QueueStats(
                ready=_count(work, "messages_ready"),
                scheduled=scheduled.get(name, 0) if work is not None else None,
                in_flight=_count(work, "messages_unacknowledged"),
                # A DLQ under an admin's scan holds its entries unacknowledged.
                dead=_count(dead, "messages"),
            )
        return counts

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
