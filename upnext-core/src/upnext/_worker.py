"""`Worker`: where tasks are registered, submitted from, and run."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from upnext._client import Client, Factories
from upnext._consumer import Consumer
from upnext._cron import CronDecorator, CronOptions, Crons
from upnext._dlq import DeadLetterQueue
from upnext._durations import check_duration
from upnext._enqueue import submit_calls
from upnext._flowspec import KeyOf
from upnext._future import Future
from upnext._hooks import Plugins
from upnext._idle import queues_empty
from upnext._pipeline import collect_middleware
from upnext._portal import Portal
from upnext._retry import ExceptionFilter
from upnext._task import DEFAULT_TIMEOUT, CallOptions, Task, TaskDecorator, define_task
from upnext._tick import HeldSlots
from upnext._unconsumed import report_leftovers
from upnext._worker_lines import check_delivery_limit, log_banner, log_draining, log_stopped
from upnext.broker.memory import MemoryBroker
from upnext.broker.protocol import QueueAdmin
from upnext.errors import ConfigurationError
from upnext.middleware import Middleware
from upnext.middleware._base import overrides

if TYPE_CHECKING:
    from upnext.metrics import JobMetrics, MetricsSnapshot
    from upnext.metrics.prometheus import MetricsExporter

__all__ = ["Worker"]

P = ParamSpec("P")
R = TypeVar("R")

ENV_BROKER = "UPNEXT_BROKER_URL"
ENV_RESULTS = "UPNEXT_RESULTS_URL"
MIB = 1024 * 1024


class Worker:
    """A named set of tasks, the client that submits them, and the consumer that runs them.

    `name` is also the default queue of its tasks. `broker` is a URL
    (default: ``$UPNEXT_BROKER_URL``, else ``memory://``); `results` a
    separate result-store URL when the broker keeps none. `metrics=True`
    counts jobs (`enable_metrics`); `metrics_port` also serves them over HTTP.
    `job_history=False` keeps no recent-jobs history (`upnext jobs list`).
    """

    def __init__(
        self,
        name: str = "default",
        broker: str | None = None,
        *,
        results: str | None = None,
        concurrency: int = 10,
        prefetch: int | None = None,
        queues: Sequence[str] | None = None,
        lease: float = 30.0,
        shutdown_grace: float = 25.0,
        hook_timeout: float = 10.0,
        max_payload: int = MIB,
        max_lost_runs: int = 3,
        receive_wait: float = 5.0,
        connect_timeout: float = 60.0,
        plugins: Sequence[object] = (),
        load_plugins: bool = True,
        middleware: Sequence[Middleware] = (),
        metrics: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        job_history: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        if max_payload <= 0:
            raise ConfigurationError(f"max_payload must be > 0, got {max_payload}")
        lease = check_duration("lease", lease, positive=True)
        shutdown_grace = check_duration("shutdown_grace", shutdown_grace)
        hook_timeout = check_duration("hook_timeout", hook_timeout, positive=True)
        receive_wait = check_duration("receive_wait", receive_wait)
        if connect_timeout != math.inf:  # inf: retry for ever (it is never stored)
            connect_timeout = check_duration("connect_timeout", connect_timeout, positive=True)
        self.name = name
        self.broker_url = broker or os.environ.get(ENV_BROKER) or "memory://"
        self.results_url = results or os.environ.get(ENV_RESULTS)
        self.factories = Factories(self.broker_url, self.results_url)
        self.concurrency = concurrency
        # Deliveries held beyond the running ones, so receives come in batches.
        self.prefetch = concurrency if prefetch is None else prefetch
        if self.prefetch < 0:
            raise ConfigurationError(f"prefetch must be >= 0, got {prefetch}")
        self.queues = list(queues) if queues else None
        self.lease = lease
        self.shutdown_grace = shutdown_grace
        self.hook_timeout = hook_timeout
        self.max_payload = max_payload
        self.max_lost_runs = max_lost_runs
        self.receive_wait = receive_wait
        # How long `upnext.run` keeps retrying an unreachable broker at start (inf: for ever).
        self.connect_timeout = connect_timeout
        self.job_history = job_history
        self.plugins = Plugins(plugins, load_entry_points=load_plugins)
        # After the built-ins: the plugins' middleware, then this worker's own.
        self.middleware = collect_middleware(self.plugins, self, middleware)
        self.enqueue_stage = [m for m in self.middleware if overrides(m, "before_enqueue")]
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.crons = Crons(self)
        # Slots middleware holds for running jobs; the worker tick keeps them alive.
        self.held_slots = HeldSlots()
        self.portal = Portal(self)
        self.dlq = DeadLetterQueue(self)
        self.consumer: Consumer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[asyncio.AbstractEventLoop, Client] = {}
        self._stop_requested: asyncio.Event | None = None
        self.metrics: JobMetrics | None = None
        self.metrics_exporter: MetricsExporter | None = None
        if metrics or metrics_port is not None:
            self.enable_metrics(port=metrics_port, host=metrics_host)

    def __repr__(self) -> str:
        return f"<Worker {self.name} broker={self.factories.broker_url and self.safe_broker_url}>"

    @property
    def safe_broker_url(self) -> str:
        """The broker URL with its password hidden, for logs and errors."""
        from upnext.broker.redact import redact_url

        return redact_url(self.broker_url)

    def enable_metrics(self, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        """Count jobs per (queue, task) (`upnext.metrics.JobMetrics`); with `port`, serve them.

        The counts go to the state store on each worker tick (the server's
        ``GET /metrics`` reads them); `port` also serves them in the Prometheus
        text format on `host`:`port` while the worker runs, which needs
        ``prometheus-client`` (``upnext[metrics]``). Call it before `start`.
        """
        if self.consumer is not None:
            raise ConfigurationError("enable_metrics() must be called before the worker starts")
        from upnext.metrics._attach import attach_metrics

        attach_metrics(self, port, host)

    def metrics_now(self) -> MetricsSnapshot:
        """This worker's counts now (its exporter serves them)."""
        assert self.metrics is not None
        worker_id = self.consumer.worker_id if self.consumer is not None else self.name
        return self.metrics.snapshot(worker_id)

    # -- registration --------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_jitter: float = 0.0,
        retry_delay_max: float = 3600.0,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
        queue: str | None = None,
        result_ttl: float = 3600.0,
        max_lost_runs: int | None = None,
        on_start: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        on_failure: Callable[..., Any] | None = None,
        on_retry: Callable[..., Any] | None = None,
        on_complete: Callable[..., Any] | None = None,
        expires: float | None = None,
        retry_on: ExceptionFilter | None = None,
        dont_retry_on: ExceptionFilter = (),
        unique_key: str | None = None,
        rate_limit: str | None = None,
        rate_key: KeyOf | None = None,
        max_concurrency: int | None = None,
        concurrency_key: KeyOf | None = None,
    ) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a function as a task (``@worker.task`` or ``@worker.task(...)``)."""
        if fn is not None:
            return self._register(fn, **options)
        return lambda f: self._register(f, **options)

    def _register(self, fn: Callable[..., Any], **options: Any) -> Task[Any, Any]:
        task = define_task(self, fn, **options)
        if task.name in self.tasks:
            raise ConfigurationError(f"worker {self.name!r} already has a task named {task.name!r}")
        self.tasks[task.name] = task
        return task

    def cron(
        self, expression: str | None = None, /, **options: Unpack[CronOptions]
    ) -> CronDecorator:
        """Register a function of no arguments as a cron (docs/scheduling.md#cron).

        `expression` has 5 fields, or 6 with seconds first; or pass `every=`
        seconds. Options: `name`, `timeout`, `missed_run_policy`
        (`MissedRunPolicy.LATEST_ONLY`), `max_catch_up_seconds`, `timezone`,
        `allow_overlap` (False: a tick is skipped while the last run runs).
        """
        return self.crons.decorator(expression, options)

    def consumed_queues(self) -> list[str]:
        """The queues this worker receives from: given ones, else its own and its tasks'."""
        if self.queues:
            return list(self.queues)
        return list(dict.fromkeys([self.name, *(t.queue for t in self.tasks.values())]))

    # -- producing -----------------------------------------------------------

    async def client(self) -> Client:
        """This event loop's connected client (created and connected on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self.factories.build()
        return await client.connect()

    def connected_client(self) -> Client | None:
        """This event loop's client if it is connected already, else None (no I/O)."""
        client = self._clients.get(asyncio.get_running_loop())
        return client if client is not None and client.connected else None

    async def submit_calls(
        self,
        task: Task[Any, R],
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        options: CallOptions,
    ) -> list[Future[R]]:
        """Validate, encode and enqueue calls of `task` in one round trip (`upnext._enqueue`)."""
        return await submit_calls(self, task, calls, options)

    # -- running -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while this worker consumes jobs."""
        return self.consumer is not None and not self.consumer.stopping

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect and begin consuming in this event loop."""
        if self.consumer is not None:
            raise ConfigurationError(f"worker {self.name!r} is already running")
        client = await self.client()
        check_delivery_limit(self.tasks.values(), client.broker.capabilities)
        if self.metrics_exporter is not None:  # first: a port in use stops nothing running
            try:
                self.metrics_exporter.start()
            except OSError as exc:
                where = f"{self.metrics_exporter.host}:{self.metrics_exporter.requested_port}"
                raise ConfigurationError(f"cannot serve metrics on {where}: {exc}") from None
        if isinstance(client.broker, MemoryBroker):
            client.broker.workers_attached += 1
        self.loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self.consumer = Consumer(self, client)
        self.consumer.start()
        self.crons.start(client)
        log_banner(self, self.consumer)

    def request_stop(self) -> None:
        """Ask a running worker to stop (what SIGTERM does under `upnext.run`)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Block until `request_stop` is called."""
        assert self._stop_requested is not None
        await self._stop_requested.wait()

    def lend_slot(self) -> None:
        """A running job waits on another job: its slot may run something else."""
        if self.consumer is not None:
            self.consumer.lend_slot()

    def return_slot(self) -> None:
        """The waiting job resumes."""
        if self.consumer is not None:
            self.consumer.return_slot()

    @property
    def fatal(self) -> str | None:
        """Why the worker must be restarted, if it must."""
        return self.consumer.fatal if self.consumer is not None else None

    async def join(self, timeout: float | None = None) -> None:
        """Wait until its queues are empty and nothing is in flight or pending."""
        consumer = self.consumer
        if consumer is None:
            raise ConfigurationError("join() needs a running worker: use `async with worker:`")
        deadline = None if timeout is None else time.monotonic() + timeout
        admin = consumer.broker if isinstance(consumer.broker, QueueAdmin) else None
        while True:
            if consumer.idle() and await queues_empty(admin, consumer.queues) and consumer.idle():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.name!r} still busy after {timeout}s")
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        """Stop consuming (if running); close this loop's and the sync twins' connections."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.stopping = True
            self.consumer = consumer
            began = time.monotonic()
            log_draining(self, consumer)
            try:
                await self.crons.stop()
                await consumer.stop(self.shutdown_grace)
            finally:
                self.consumer = None
                report_leftovers(consumer.broker)
                if self.metrics_exporter is not None:
                    await asyncio.to_thread(self.metrics_exporter.close)
            log_stopped(self, time.monotonic() - began)
        await self._aclose_client()
        if self.portal.started and not self.portal.owns(asyncio.get_running_loop()):
            await asyncio.to_thread(self.portal.close)

    async def _aclose_client(self) -> None:
        """Close the connections of this event loop (the portal's, on its background loop)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
