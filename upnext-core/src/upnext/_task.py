"""`@worker.task`: a task's definition and the handle used to submit it."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from upnext._calloptions import CallOptions, check_priority, merge_options
from upnext._context import current_scope
from upnext._durations import check_duration
from upnext._flowspec import KeyOf, TaskLimits, task_limits
from upnext._future import Future
from upnext._hooks import HookFn, adapt_hook
from upnext._modname import importable_name
from upnext._result import TaskResult
from upnext._retry import ExceptionFilter, RetryPolicy, exception_filter
from upnext._serializer import JobBody
from upnext._signature import Signature
from upnext._unique import check_unique_template, format_unique_key, task_key
from upnext.errors import ConfigurationError

if TYPE_CHECKING:
    from upnext._worker import Worker

__all__ = [
    "DEFAULT_TIMEOUT",
    "CallOptions",
    "Task",
    "TaskCall",
    "TaskDecorator",
    "TaskHooks",
    "check_priority",
    "define_task",
]

DEFAULT_TIMEOUT = 1800.0  # seconds a task may run (30 min, RabbitMQ's default consumer_timeout too)

_SUCCESS_EVENTS = frozenset({"upnext_job_succeeded", "upnext_job_completed"})

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TaskHooks:
    """A task's lifecycle hooks, each already adapted to take one HookEvent."""

    on_start: HookFn | None = None
    on_success: HookFn | None = None
    on_failure: HookFn | None = None
    on_retry: HookFn | None = None
    on_complete: HookFn | None = None


class _Submitter(Generic[P, R]):
    """The submit/wait API shared by a task and a task with options."""

    task: Task[P, R]
    call_options: CallOptions

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Enqueue one job; returns its Future once the broker holds it durably."""
        return await self._submit_one(args, kwargs)

    async def _submit_one(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[R]:
        [future] = await self.task.worker.submit_calls(
            self.task, [(args, kwargs)], self.call_options
        )
        return future

    async def submit_many(
        self, calls: Iterable[Mapping[str, Any] | tuple[tuple[Any, ...], Mapping[str, Any]]]
    ) -> list[Future[R]]:
        """Enqueue many jobs in one round trip; each call is kwargs or (args, kwargs)."""
        normalized = [
            (tuple(c[0]), dict(c[1])) if isinstance(c, tuple) else ((), dict(c)) for c in calls
        ]
        return await self.task.worker.submit_calls(self.task, normalized, self.call_options)

    async def submit_idempotent(self, key: str, /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """`submit` with job id ``<task name>:<key>``: a repeat returns that job's Future.

        See docs/scheduling.md#unique-jobs for how long the key is held.
        """
        return await self._keyed(key)._submit_one(args, kwargs)

    async def wait_idempotent(
        self, key: str, /, *args: Any, wait_timeout: float | None = None, **kwargs: Any
    ) -> TaskResult[R]:
        """`wait` with job id ``<task name>:<key>``: repeats wait on the same job."""
        return await self._keyed(key).wait(*args, wait_timeout=wait_timeout, **kwargs)

    def _keyed(self, key: str) -> _Submitter[P, R]:
        job_id = task_key(self.task.name, key)
        self.task.worker.factories.require_state("submit_idempotent")
        return TaskCall(self.task, merge_options(self.call_options, None, None, job_id))

    async def wait(
        self, *args: Any, wait_timeout: float | None = None, **kwargs: Any
    ) -> TaskResult[R]:
        """Submit and wait for the result; raises TaskExecutionError if the job failed.

        `wait_timeout` bounds the wait (None: as long as it takes); running out
        raises WaitTimeout and leaves the job running.
        """
        if wait_timeout is not None:
            check_duration("wait_timeout", wait_timeout)
        if self.task.result_ttl <= 0:
            raise ConfigurationError(
                f"task {self.task.name} has result_ttl=0, so there is no result to wait for"
            )
        future = await self._submit_one(args, kwargs)
        return await future.result(wait_timeout)

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Blocking twin of `submit` (not on a thread running an event loop)."""
        return self.task.worker.portal.call(self.submit(*args, **kwargs))

    def wait_sync(
        self, *args: Any, wait_timeout: float | None = None, **kwargs: Any
    ) -> TaskResult[R]:
        """Blocking twin of `wait` (not on a thread running an event loop)."""
        return self.task.worker.portal.call(self.wait(*args, wait_timeout=wait_timeout, **kwargs))


class TaskCall(_Submitter[P, R]):
    """A task bound to per-call options; made by `Task.options`."""

    def __init__(self, task: Task[P, R], call_options: CallOptions) -> None:
        self.task = task
        self.call_options = call_options

    def options(
        self,
        *,
        delay: float | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        connection: object | None = None,
        priority: int | None = None,
        expires: float | None = None,
        unique_for: float | None = None,
        debounce: float | None = None,
    ) -> TaskCall[P, R]:
        """These options with some replaced."""
        merged = merge_options(
            self.call_options,
            delay,
            queue,
            job_id,
            connection,
            priority,
            expires,
            unique_for,
            debounce,
        )
        return TaskCall(self.task, _checked_unique(self.task, merged))


def _checked_unique(task: Task[Any, Any], options: CallOptions) -> CallOptions:
    """`options`, once a unique mode is known to have a key and shared state to keep it in."""
    if options.unique_for is not None or options.debounce is not None:
        mode = "unique_for" if options.unique_for is not None else "debounce"
        if options.job_id is None and task.unique_key is None:
            raise ConfigurationError(
                f"{mode} needs a key: options(job_id=...) or @worker.task(unique_key=...)"
            )
        task.worker.factories.require_state(mode)
    elif options.job_id is not None:
        task.worker.factories.require_state("job_id")
    return options


class Task(_Submitter[P, R]):
    """A function registered with a worker; call it directly or submit it as a job."""

    def __init__(
        self,
        worker: Worker,
        fn: Callable[P, Awaitable[R]] | Callable[P, R],
        *,
        name: str,
        queue: str,
        policy: RetryPolicy,
        timeout: float,
        result_ttl: float,
        max_lost_runs: int,
        hooks: TaskHooks,
        expires: float | None = None,
        unique_key: str | None = None,
        limits: TaskLimits | None = None,
    ) -> None:
        timeout = check_duration("timeout", timeout, positive=True, owner=f"task {name}")
        result_ttl = check_duration("result_ttl", result_ttl, owner=f"task {name}")
        if expires is not None:
            expires = check_duration("expires", expires, positive=True, owner=f"task {name}")
        if max_lost_runs < 0:
            raise ConfigurationError(f"task {name}: max_lost_runs must be >= 0")
        self.worker = worker
        self.fn = fn
        self.name = name
        self.function_name = getattr(fn, "__qualname__", name)
        self.queue = queue
        self.policy = policy
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.max_lost_runs = max_lost_runs
        self.hooks = hooks
        self.expires = expires
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = Signature(fn, name)
        self.unique_key = (
            None if unique_key is None else check_unique_template(unique_key, fn, f"task {name}")
        )
        if unique_key is not None:
            worker.factories.require_state("unique_key")
        self.limits = limits  # rate_limit, max_concurrency (`upnext._flow_limits`)
        if limits is not None:
            worker.factories.require_state("rate_limit" if limits.rate else "max_concurrency")
        self.task = self
        self.call_options = CallOptions()
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    @property
    def announces(self) -> bool:
        """Whether a success has listeners (hooks or plugins) to tell."""
        hooks = self.hooks
        return (
            hooks.on_success is not None
            or hooks.on_complete is not None
            or bool(self.worker.plugins.active & _SUCCESS_EVENTS)
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R] | R:
        """Run the function here and now, with no queue (for tests)."""
        return self.fn(*args, **kwargs)

    def options(
        self,
        *,
        delay: float | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        connection: object | None = None,
        priority: int | None = None,
        expires: float | None = None,
        unique_for: float | None = None,
        debounce: float | None = None,
    ) -> TaskCall[P, R]:
        """Options for one call: `delay` seconds, another `queue`, a chosen `job_id`
        (a unique job: a repeat returns its Future), the caller's `connection` for a
        transactional enqueue, a `priority` from 0 (the default) to `MAX_PRIORITY`,
        `expires` seconds after it is due by which it must start (else it is
        dead-lettered `expired`; replaces the task's); `unique_for` seconds during
        which repeats of the key are dropped (throttle), or `debounce` seconds after
        the last repeat at which the one job runs, with the last arguments.
        A bad value raises ConfigurationError here."""
        return TaskCall(self, CallOptions()).options(
            delay=delay,
            queue=queue,
            job_id=job_id,
            connection=connection,
            priority=priority,
            expires=expires,
            unique_for=unique_for,
            debounce=debounce,
        )

    def future(self, job_id: str, queue: str | None = None) -> Future[R]:
        """A Future for a job of this task submitted elsewhere (e.g. by a DLQ replay)."""
        return Future(self, job_id, queue or self.queue)

    def key_of(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], options: CallOptions
    ) -> str | None:
        """The call's unique key: the chosen `job_id`, else one made by `unique_key`, else None."""
        if options.job_id is not None:
            return options.job_id
        if self.unique_key is None:
            return None
        return task_key(self.name, format_unique_key(self, args, kwargs))

    def build_body(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: CallOptions,
        job_id: str | None = None,
    ) -> JobBody:
        """A new job's body: validated arguments, lineage from the running job, and
        its deadline: `expires` seconds after it is due (`enqueued_at` + `delay`).
        Its id is `job_id`, else the chosen one, else 128 random bits."""
        wire_args, wire_kwargs = self.signature.encode(args, kwargs)
        job_id = job_id or options.job_id or os.urandom(16).hex()  # like uuid4, 4x cheaper
        scope = current_scope.get()
        parent = scope.context if scope is not None else None
        now = time.time()
        expires = self.expires if options.expires is None else options.expires
        return JobBody(
            id=job_id,
            fn=self.name,
            queue=options.queue or self.queue,
            args=wire_args,
            kwargs=wire_kwargs,
            parent_id=parent.job_id if parent else None,
            root_id=parent.root_id if parent else job_id,
            result_ttl=self.result_ttl,
            enqueued_at=now,
            expires_at=None if expires is None else now + options.delay + expires,
        )


class TaskDecorator(Protocol):
    """What ``@worker.task(...)`` returns: a decorator keeping the function's types."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


def define_task(
    worker: Worker,
    fn: Callable[..., Any],
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
) -> Task[Any, Any]:
    """A task of `worker` from `fn` and the options of ``@worker.task`` (not registered yet)."""
    name = name or f"{importable_name(fn.__module__)}.{fn.__qualname__}"
    limits = task_limits(
        fn,
        f"task {name}",
        rate_limit=rate_limit,
        rate_key=rate_key,
        max_concurrency=max_concurrency,
        concurrency_key=concurrency_key,
    )
    policy = RetryPolicy(
        retries,
        retry_delay,
        retry_backoff,
        retry_delay_max,
        retry_jitter,
        None if retry_on is None else exception_filter("retry_on", retry_on, f"task {name}"),
        exception_filter("dont_retry_on", dont_retry_on, f"task {name}"),
    )
    hooks = TaskHooks(
        on_start=adapt_hook(on_start, "on_start"),
        on_success=adapt_hook(on_success, "on_success"),
        on_failure=adapt_hook(on_failure, "on_failure"),
        on_retry=adapt_hook(on_retry, "on_retry"),
        on_complete=adapt_hook(on_complete, "on_complete"),
    )
    return Task(
        worker,
        fn,
        name=name,
        queue=queue or worker.name,
        policy=policy,
        timeout=timeout,
        result_ttl=result_ttl,
        max_lost_runs=worker.max_lost_runs if max_lost_runs is None else max_lost_runs,
        hooks=hooks,
        expires=expires,
        unique_key=unique_key,
        limits=limits,
    )
