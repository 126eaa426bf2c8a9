"""Hooks: arity decided at decoration, each call bounded and isolated; plugins by event."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any, cast

import pluggy
import pytest
import upnext
from upnext._hooks import Plugins, adapt_hook, call_hook
from upnext.errors import ConfigurationError
from upnext.hooks import HookEvent, PluginSpec, hookimpl

EVENT = HookEvent(
    job_id="j1", function="mod.f", queue="q", attempt=1, max_attempts=3, status="active"
)


def test_hook_event_defaults() -> None:
    assert (EVENT.result, EVENT.error, EVENT.exception, EVENT.next_delay, EVENT.reason) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_none_is_no_hook() -> None:
    assert adapt_hook(None, "on_start") is None


def test_non_callable_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        adapt_hook("alert", "on_failure")
    assert str(info.value) == "on_failure must be callable, got 'alert'"


def test_non_callable_rejected_at_decoration() -> None:
    worker = upnext.Worker("hooks", broker=f"memory://hooks-{uuid.uuid4().hex}")
    with pytest.raises(ConfigurationError, match="on_retry"):

        @worker.task(on_retry=cast(Any, 42))
        async def f() -> None: ...

    assert worker.tasks == {}


def test_no_argument_hook_is_wrapped() -> None:
    calls: list[str] = []

    def hook() -> None:
        calls.append("called")

    adapted = adapt_hook(hook, "on_start")
    assert adapted is not None
    assert cast(object, adapted) is not hook
    adapted(EVENT)
    assert calls == ["called"]


def test_no_argument_hook_with_keyword_defaults_is_wrapped() -> None:
    def hook(*, label: str = "x") -> str:
        return label

    adapted = adapt_hook(hook, "on_start")
    assert adapted is not None
    assert adapted(EVENT) == "x"


@pytest.mark.parametrize("kind", ["positional", "positional_only", "var_positional"])
def test_hook_taking_a_positional_argument_gets_the_event(kind: str) -> None:
    seen: list[Any] = []

    def positional(event: HookEvent) -> None:
        seen.append(event)

    def positional_only(event: HookEvent, /) -> None:
        seen.append(event)

    def var_positional(*args: Any) -> None:
        seen.append(args[0])

    hook = {"positional": positional, "positional_only": positional_only}.get(kind, var_positional)
    adapted = adapt_hook(hook, "on_success")
    assert adapted is hook
    adapted(EVENT)
    assert seen == [EVENT]


def test_hook_needing_two_arguments_is_rejected_at_decoration() -> None:
    def hook(event: HookEvent, extra: str) -> None: ...

    with pytest.raises(ConfigurationError, match="on_success"):
        adapt_hook(hook, "on_success")


def test_builtins_and_partials() -> None:
    seen: list[Any] = []
    assert adapt_hook(seen.append, "on_start") == seen.append  # a builtin method, one arg
    assert (
        cast(object, adapt_hook(max, "on_start")) is max
    )  # no signature at all: assume it takes the event

    def two(label: str, event: HookEvent) -> None:
        seen.append((label, event.job_id))

    takes_event = functools.partial(two, "a")
    assert adapt_hook(takes_event, "on_start") is takes_event
    no_arg = adapt_hook(functools.partial(two, "b", EVENT), "on_start")
    assert no_arg is not None
    no_arg(EVENT)
    assert seen == [("b", "j1")]


def test_callable_object() -> None:
    class Alert:
        def __init__(self) -> None:
            self.events: list[HookEvent] = []

        def __call__(self, event: HookEvent) -> None:
            self.events.append(event)

    alert = Alert()
    adapted = adapt_hook(alert, "on_failure")
    assert adapted is alert


async def test_call_hook_runs_sync_and_async_hooks() -> None:
    seen: list[str] = []

    def sync_hook(event: HookEvent) -> None:
        seen.append(f"sync {event.job_id}")

    async def async_hook(event: HookEvent) -> None:
        await asyncio.sleep(0)
        seen.append(f"async {event.job_id}")

    await call_hook(sync_hook, EVENT, 1.0, "sync")
    await call_hook(async_hook, EVENT, 1.0, "async")
    wrapped = adapt_hook(lambda: seen.append("no-arg"), "on_start")
    assert wrapped is not None
    await call_hook(wrapped, EVENT, 1.0, "no-arg")
    assert seen == ["sync j1", "async j1", "no-arg"]


async def test_call_hook_is_bounded_by_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def slow(event: HookEvent) -> None:
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="upnext.hooks"):
        await call_hook(slow, EVENT, 0.05, "on_complete")
    assert loop.time() - started < 1.0
    assert "hook on_complete for job j1 timed out after 0.1s" in caplog.text


async def test_call_hook_swallows_and_logs_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    def boom(event: HookEvent) -> None:
        raise KeyError("nope")

    async def async_boom(event: HookEvent) -> None:
        raise ValueError("async nope")

    with caplog.at_level(logging.ERROR, logger="upnext.hooks"):
        await call_hook(boom, EVENT, 1.0, "on_failure")
        await call_hook(async_boom, EVENT, 1.0, "on_success")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "hook on_failure for job j1 raised; ignored",
        "hook on_success for job j1 raised; ignored",
    ]
    assert caplog.records[0].exc_info is not None
    assert isinstance(caplog.records[1].exc_info[1], ValueError)  # type: ignore[index]


class StartedOnly:
    """A plugin implementing a single event."""

    def __init__(self) -> None:
        self.events: list[HookEvent] = []

    @hookimpl
    def upnext_job_started(self, event: HookEvent) -> None:
        self.events.append(event)


class AsyncFailing:
    """A plugin whose async implementation raises."""

    @hookimpl
    async def upnext_job_started(self, event: HookEvent) -> None:
        raise RuntimeError("plugin broke")

    @hookimpl
    async def upnext_job_dead_lettered(self, event: HookEvent) -> None:
        await asyncio.sleep(0)


def test_plugins_active_lists_only_implemented_events() -> None:
    plugins = Plugins([], load_entry_points=True)
    assert plugins.active == frozenset()
    plugins.register(StartedOnly())
    assert plugins.active == {"upnext_job_started"}
    plugins.register(AsyncFailing())
    assert plugins.active == {"upnext_job_started", "upnext_job_dead_lettered"}


class Typo:
    """A plugin whose only hook name is misspelt."""

    @hookimpl
    def upnext_job_strated(self, event: HookEvent) -> None: ...


def test_misspelt_plugin_hook_is_refused() -> None:
    with pytest.raises((ConfigurationError, pluggy.PluginValidationError)):
        Plugins([Typo()], load_entry_points=False)


def test_every_event_is_a_documented_hookspec() -> None:
    events = [n for n in dir(PluginSpec) if n.startswith("upnext_job_")]
    assert len(events) == 7
    for name in [*events, "upnext_middleware"]:
        assert getattr(PluginSpec, name).__doc__


async def test_emit_isolates_each_plugin(caplog: pytest.LogCaptureFixture) -> None:
    good = StartedOnly()
    plugins = Plugins([AsyncFailing(), good], load_entry_points=False)
    with caplog.at_level(logging.ERROR, logger="upnext.hooks"):
        await plugins.emit("upnext_job_started", EVENT, 1.0)
        await plugins.emit("upnext_job_succeeded", EVENT, 1.0)  # nobody implements it
    assert good.events == [EVENT]
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().endswith(".upnext_job_started for job j1 raised; ignored")


def test_worker_registers_plugins() -> None:
    plugin = StartedOnly()
    worker = upnext.Worker(
        "hooks", broker=f"memory://hooks-{uuid.uuid4().hex}", plugins=[plugin], load_plugins=False
    )
    assert worker.plugins.active == {"upnext_job_started"}
    assert worker.plugins.manager.is_registered(plugin)
