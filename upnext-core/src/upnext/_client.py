"""A connection to a broker and its result store, one per event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from upnext._backoff import Backoff
from upnext._discovery import RESULT_STORE_GROUP, load_factory
from upnext._logsafe import protect_logs
from upnext._serializer import ResultRecord
from upnext.broker.protocol import Broker, ResultStore, ResultWrite
from upnext.broker.redact import redact_url
from upnext.broker.state import StateStore
from upnext.errors import BrokerError, ConfigurationError

__all__ = ["Batcher", "Client", "Factories", "no_state"]

log = logging.getLogger("upnext")

T = TypeVar("T")
R = TypeVar("R")


class Factories:
    """The broker and result-store factories for a pair of URLs, resolved once."""

    def __init__(self, broker_url: str, results_url: str | None) -> None:
        self.broker_url = broker_url
        self.results_url = results_url if results_url not in (None, broker_url) else None
        protect_logs(broker_url, *([results_url] if results_url else []))
        self.broker = load_factory(broker_url)
        self.store = (
            load_factory(self.results_url, RESULT_STORE_GROUP) if self.results_url else None
        )
        # Each factory parses its URL and opens nothing: a mistyped URL fails
        # here, at Worker(...), not as a hang at the first connect.
        broker = self.broker(broker_url)
        store = self.store(self.results_url) if self.store and self.results_url else None
        self.has_state = isinstance(broker, StateStore) or isinstance(store, StateStore)
        protect_logs()  # the drivers' loggers exist now that their modules are imported

    def require_state(self, feature: str) -> None:
        """Raise `ConfigurationError` unless the broker or the result store keeps shared state.

        Call it where a feature is configured (`Worker(...)`, decoration), so a
        missing store fails at once, never as a silent per-process fallback.
        """
        if not self.has_state:
            raise no_state(feature, self.broker_url, self.results_url)

    def build(self) -> Client:
        """A new, unconnected client."""
        broker: Broker = self.broker(self.broker_url)
        if self.store is not None and self.results_url is not None:
            store: ResultStore = self.store(self.results_url)
        elif isinstance(broker, ResultStore):
            store = broker
        else:
            raise ConfigurationError(
                f"{redact_url(self.broker_url)} keeps no results; pass results=<URL>"
            )
        return Client(redact_url(self.broker_url), broker, store, results_url=self.results_url)


def no_state(feature: str, broker_url: str, results_url: str | None) -> ConfigurationError:
    """The one-line error for a feature that needs shared state where none is kept."""
    kept = (
        redact_url(broker_url)
        if results_url is None
        else (f"{redact_url(broker_url)} with results={redact_url(results_url)}")
    )
    return ConfigurationError(
        f"{feature} needs shared state: {kept} keeps none; pass results='redis://...' "
        "or 'postgresql://...' (or set UPNEXT_RESULTS_URL)"
    )


class Client:
    """A broker and result store used from one event loop.

    `state` is the shared `StateStore`: the broker's if it keeps state, else
    the result store's (RabbitMQ with a Redis or PostgreSQL store), else None.
    """

    def __init__(
        self, name: str, broker: Broker, store: ResultStore, *, results_url: str | None = None
    ) -> None:
        self.name = name
        self.broker = broker
        self.store = store
        self.results_url = results_url
        self.state: StateStore | None = (
            broker
            if isinstance(broker, StateStore)
            else store
            if isinstance(store, StateStore)
            else None
        )
        # When the broker keeps results, they are written in the settle itself.
        self.same = store is broker  # type: ignore[comparison-overlap]  # one object may be both
        self._connected = False
        self._lock = asyncio.Lock()
        self.results: Batcher[ResultWrite, None] = Batcher(self.store.put_results)

    @property
    def connected(self) -> bool:
        """True once broker and store are connected (until `aclose`)."""
        return self._connected

    async def connect(self) -> Client:
        """Connect broker and store once; BrokerUnavailable if they can't be reached."""
        if self._connected:
            return self
        async with self._lock:
            if not self._connected:
                await self.broker.connect()
                if not self.same:
                    await self.store.connect()
                self._connected = True
        return self

    def require_state(self, feature: str) -> StateStore:
        """The shared state store, or `ConfigurationError` naming ``results=`` for `feature`."""
        if self.state is None:
            raise no_state(feature, self.name, self.results_url)
        return self.state

    async def write_result(self, result: ResultWrite) -> None:
        """Store a worker's result in the separate store, retrying while it is unreachable.

        About 30 s of tries (pauses from 0.05 s doubling to 2 s), then the last
        error propagates: the job is not settled and comes back after its lease.
        """
        pauses = Backoff(first=0.05, cap=2.0)
        for _ in range(20):
            try:
                await self.results.submit(result)
                return
            except BrokerError as exc:
                log.warning("writing result of job %s failed: %s; retrying", result.job_id, exc)
                await asyncio.sleep(next(pauses))
        await self.results.submit(result)

    async def put_result(self, job_id: str, queue: str, record: ResultRecord, ttl: float) -> None:
        """Store one result (batched with others written meanwhile)."""
        data = record.model_dump_json().encode()
        await self.results.submit(ResultWrite(job_id, queue, data, ttl))

    async def aclose(self) -> None:
        """Close broker and store."""
        self._connected = False
        try:
            await self.broker.aclose()
        finally:
            if not self.same:
                await self.store.aclose()


class Batcher(Generic[T, R]):
    """Group commit: at most one call in flight; items arriving meanwhile join the next.

    `flush` takes a batch and returns one outcome per item (or None for all).
    """

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Any]]) -> None:
        self._flush = flush
        self._pending: list[tuple[T, asyncio.Future[Any]]] = []
        self._running = False
        self._drainer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending) + (1 if self._running else 0)

    async def submit(self, item: T) -> Any:
        """Add `item` to the next batch and wait for its outcome."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if not self._running:
            self._running = True
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def submit_many(self, items: Sequence[T]) -> list[Any]:
        """Add several items to the next batch and wait for all their outcomes."""
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self._flush([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, fut in batch:
                        fut.cancel()
                    raise
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                if outcomes is None:
                    outcomes = [None] * len(batch)
                if len(outcomes) != len(batch):
                    error = BrokerError(
                        f"backend returned {len(outcomes)} outcomes for {len(batch)} items"
                    )
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(error)
                    continue
                for (_, fut), outcome in zip(batch, outcomes, strict=True):
                    if not fut.done():
                        fut.set_result(outcome)
        finally:
            self._running = False
