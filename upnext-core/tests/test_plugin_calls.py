"""Plugin events go through pluggy's own hook caller: its order, its wrappers, isolated calls."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from upnext._hooks import Plugins
from upnext.hooks import HookEvent, hookimpl

EVENT = HookEvent(
    job_id="j1", function="mod.f", queue="q", attempt=1, max_attempts=3, status="active"
)


class Recorder:
    """One plugin that appends its name to a shared list when told of a start."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.__name__ = name
        self.name = name
        self.calls = calls

    @hookimpl
    def upnext_job_started(self, event: HookEvent) -> None:
        self.calls.append(self.name)


class First(Recorder):
    @hookimpl(tryfirst=True)
    def upnext_job_started(self, event: HookEvent) -> None:
        self.calls.append(self.name)


class Last(Recorder):
    @hookimpl(trylast=True)
    def upnext_job_started(self, event: HookEvent) -> None:
        self.calls.append(self.name)


class AsyncRecorder(Recorder):
    @hookimpl
    def upnext_job_started(self, event: HookEvent) -> Any:
        return self.record_later()

    async def record_later(self) -> None:
        await asyncio.sleep(0)
        self.calls.append(self.name)


async def test_tryfirst_and_trylast_order_the_calls() -> None:
    calls: list[str] = []
    plugins = Plugins(
        [Last("last", calls), First("first", calls), Recorder("a", calls), Recorder("b", calls)],
        load_entry_points=False,
    )
    await plugins.emit("upnext_job_started", EVENT, 1.0)
    # pluggy's order: tryfirst, then the latest registered first, trylast at the end.
    assert calls == ["first", "b", "a", "last"]


async def test_async_implementations_are_awaited_in_the_call_order() -> None:
    calls: list[str] = []
    plugins = Plugins(
        [AsyncRecorder("x", calls), First("first", calls), AsyncRecorder("y", calls)],
        load_entry_points=False,
    )
    await plugins.emit("upnext_job_started", EVENT, 1.0)
    assert calls == ["first", "y", "x"]


async def test_a_new_style_wrapper_wraps_the_call() -> None:
    calls: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def upnext_job_started(self, event: HookEvent) -> Generator[None, Any, Any]:
            calls.append("before")
            result = yield
            calls.append("after")
            return result

    plugins = Plugins([Recorder("a", calls), Wrapper()], load_entry_points=False)
    await plugins.emit("upnext_job_started", EVENT, 1.0)
    assert calls == ["before", "a", "after"]


async def test_an_old_style_hookwrapper_sees_the_outcome() -> None:
    seen: list[object] = []
    calls: list[str] = []

    class Old:
        @hookimpl(hookwrapper=True)
        def upnext_job_started(self, event: HookEvent) -> Generator[None, Any, None]:
            outcome = yield
            seen.append(outcome.get_result())

    plugins = Plugins([Recorder("a", calls), Old()], load_entry_points=False)
    await plugins.emit("upnext_job_started", EVENT, 1.0)
    assert calls == ["a"]
    assert seen == [[]]  # plain implementations returned nothing


async def test_a_raising_sync_implementation_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    class Broken:
        @hookimpl
        def upnext_job_started(self, event: HookEvent) -> None:
            raise RuntimeError("boom")

    plugins = Plugins(
        [Recorder("a", calls), Broken(), Recorder("b", calls)], load_entry_points=False
    )
    with caplog.at_level(logging.ERROR, logger="upnext.hooks"):
        await plugins.emit("upnext_job_started", EVENT, 1.0)
    assert calls == ["b", "a"]
    [record] = caplog.records
    assert re.fullmatch(r"plugin hook \S+\.upnext_job_started raised; ignored", record.getMessage())


async def test_a_raising_wrapper_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class BadWrapper:
        @hookimpl(wrapper=True)
        def upnext_job_started(self, event: HookEvent) -> Generator[None, Any, Any]:
            yield
            raise RuntimeError("wrapper broke")

    plugins = Plugins([BadWrapper()], load_entry_points=False)
    with caplog.at_level(logging.ERROR, logger="upnext.hooks"):
        await plugins.emit("upnext_job_started", EVENT, 1.0)
    assert caplog.records[0].getMessage() == (
        "plugin hook upnext_job_started raised in a wrapper; ignored"
    )


async def test_a_slow_async_implementation_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Slow:
        @hookimpl
        async def upnext_job_started(self, event: HookEvent) -> None:
            await asyncio.sleep(10)

    plugins = Plugins([AsyncRecorder("after", calls), Slow()], load_entry_points=False)
    with caplog.at_level(logging.WARNING, logger="upnext.hooks"):
        await asyncio.wait_for(plugins.emit("upnext_job_started", EVENT, 0.1), 2.0)
    assert calls == ["after"]  # the slow one was cut, the next still ran
    assert "timed out after 0.1s" in caplog.records[0].getMessage()


def test_a_plugin_object_is_registered_as_itself() -> None:
    plugin = Recorder("a", [])
    plugins = Plugins([plugin], load_entry_points=False)
    assert plugins.manager.is_registered(plugin)
    assert repr(plugin) in repr(plugins.manager.get_plugins())


async def test_an_entry_point_plugin_goes_through_the_same_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution installed as pip would (a .dist-info beside its module) is loaded."""
    (tmp_path / "upnext_probe_plugin.py").write_text(
        "from upnext.hooks import hookimpl\n"
        "CALLS = []\n"
        "@hookimpl(tryfirst=True)\n"
        "def upnext_job_started(event):\n"
        "    CALLS.append(event.job_id)\n"
        "@hookimpl\n"
        "def upnext_job_failed(event):\n"
        "    raise RuntimeError('ignored')\n"
    )
    info = tmp_path / "upnext_probe_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: upnext-probe-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[upnext.plugins]\nprobe = upnext_probe_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls: list[str] = []
    plugins = Plugins([Recorder("a", calls)], load_entry_points=True)
    module = sys.modules["upnext_probe_plugin"]
    await plugins.emit("upnext_job_started", EVENT, 1.0)
    await plugins.emit("upnext_job_failed", EVENT, 1.0)
    assert module.CALLS == ["j1"]
    assert calls == ["a"]
    assert plugins.manager.get_plugin("probe") is not None
    assert {"upnext_job_started", "upnext_job_failed"} <= plugins.active
