"""Running hooks and plugins: arity adaptation, bounded calls, the pluggy manager."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from upnext.errors import ConfigurationError
from upnext.hooks import HookEvent, PluginSpec

__all__ = ["PLUGIN_GROUP", "HookFn", "Plugins", "adapt_hook", "call_hook"]

log = logging.getLogger("upnext.hooks")

PLUGIN_GROUP = "upnext.plugins"

HookFn = Callable[[HookEvent], Any]


def adapt_hook(fn: object, name: str) -> HookFn | None:
    """Wrap a user hook so it always takes one HookEvent (arity decided now).

    A hook takes nothing, or one positional argument (the event); anything
    that needs more cannot be called and is refused here, at decoration.
    """
    if fn is None:
        return None
    if not callable(fn):  # a typo like on_failure="alert" should fail at decoration
        raise ConfigurationError(f"{name} must be callable, got {fn!r}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.default is p.empty and p.kind in positional]
    required_kw = [p for p in params if p.default is p.empty and p.kind is p.KEYWORD_ONLY]
    if len(required) > 1 or required_kw:
        raise ConfigurationError(
            f"{name} must take no argument or one HookEvent; {fn!r} needs"
            f" {', '.join(p.name for p in required + required_kw)}"
        )
    if any(p.kind in positional or p.kind is p.VAR_POSITIONAL for p in params):
        return fn
    return lambda _event: fn()


async def call_hook(fn: HookFn, event: HookEvent, timeout: float, label: str) -> None:
    """Run one hook, bounded by `timeout`; log and swallow whatever it raises."""
    try:
        async with asyncio.timeout(timeout):
            outcome = fn(event)
            if inspect.isawaitable(outcome):
                await outcome
    except TimeoutError:
        log.warning("hook %s for job %s timed out after %.1fs", label, event.job_id, timeout)
    except Exception:
        log.exception("hook %s for job %s raised; ignored", label, event.job_id)


class Plugins:
    """A worker's pluggy manager, with the set of events someone implements."""

    def __init__(self, plugins: Iterable[object], *, load_entry_points: bool) -> None:
        self.manager = pluggy.PluginManager("upnext")
        self.manager.add_hookspecs(PluginSpec)
        if load_entry_points:
            self.manager.load_setuptools_entrypoints(PLUGIN_GROUP)
        for plugin in plugins:
            self.manager.register(plugin)
        self._check()
        self.refresh()

    def register(self, plugin: object) -> None:
        """Add a plugin at run time."""
        self.manager.register(plugin)
        self._check()
        self.refresh()

    def _check(self) -> None:
        """Refuse a plugin hook that matches no spec (a misspelt event name)."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigurationError(f"plugin {exc.plugin!r}: {exc}") from None

    def refresh(self) -> None:
        """Recompute which events have implementations (the hot path checks this)."""
        self.active = frozenset(
            name
            for name in dir(PluginSpec)
            if name.startswith("upnext_") and getattr(self.manager.hook, name).get_hookimpls()
        )

    async def emit(self, name: str, event: HookEvent, timeout: float) -> None:
        """Call every implementation of event `name`, each bounded and isolated."""
        caller = getattr(self.manager.hook, name)
        for impl in caller.get_hookimpls():
            await call_hook(impl.function, event, timeout, f"{impl.plugin_name}.{name}")
