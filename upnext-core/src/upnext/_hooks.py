"""Running hooks and plugins: arity adaptation, bounded calls, the pluggy manager."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
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


class _Pending:
    """The awaitable an async plugin implementation returned, and whose it is."""

    __slots__ = ("awaitable", "label")

    def __init__(self, label: str, awaitable: Awaitable[Any]) -> None:
        self.label = label
        self.awaitable = awaitable


def _isolated(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    """`fn` with its exception logged instead of raised, its awaitable tagged for `emit`.

    `functools.wraps` keeps the signature pluggy reads the argument names from,
    and the marker that makes it an implementation.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            outcome = fn(*args, **kwargs)
        except Exception:
            log.exception("plugin hook %s raised; ignored", label)
            return None
        if inspect.isawaitable(outcome):
            return _Pending(label, outcome)
        return outcome

    return call


class _IsolatedPlugin:
    """What pluggy registers for a plugin: its plain implementations isolated.

    Wrappers (``wrapper=True`` or ``hookwrapper=True``) are kept as they are:
    they must see the exceptions of what they wrap. Everything else of the
    plugin stays on the plugin; only implementations are copied here.
    """

    def __init__(self, manager: _Manager, plugin: object, name: str) -> None:
        self.plugin = plugin
        self.__name__ = name
        for attr in dir(plugin):
            opts = manager.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            method = getattr(plugin, attr)
            if opts.get("wrapper") or opts.get("hookwrapper"):
                setattr(self, attr, method)
            else:
                setattr(self, attr, _isolated(method, f"{name}.{attr}"))

    def __repr__(self) -> str:
        return repr(self.plugin)


class _Manager(pluggy.PluginManager):
    """pluggy's manager, registering each plugin through an `_IsolatedPlugin`.

    Registration is where pluggy lets a manager choose what it registers
    (entry-point plugins come through `register` too), so the hook caller
    itself stays pluggy's: ``tryfirst``, ``trylast`` and wrappers apply.
    """

    def __init__(self) -> None:
        super().__init__("upnext")
        self.stand_ins: dict[int, _IsolatedPlugin] = {}

    def register(self, plugin: object, name: str | None = None) -> str | None:
        if isinstance(plugin, _IsolatedPlugin):
            return super().register(plugin, name)
        canonical = name or self.get_canonical_name(plugin)
        stand_in = _IsolatedPlugin(self, plugin, canonical)
        registered = super().register(stand_in, canonical)
        self.stand_ins[id(plugin)] = stand_in
        return registered

    def is_registered(self, plugin: object) -> bool:
        stand_in = self.stand_ins.get(id(plugin))
        return super().is_registered(plugin if stand_in is None else stand_in)


class Plugins:
    """A worker's pluggy manager, with the set of events someone implements.

    Events go through pluggy's own hook caller, in its order (``tryfirst``
    first, then the latest registered, ``trylast`` last) and inside its
    wrappers. A sync implementation runs within that call; an async one's
    awaitable is awaited after it, in the same order, each bounded by the
    hook timeout. What any implementation raises is logged and ignored: the
    others still get the event.
    """

    def __init__(self, plugins: Iterable[object], *, load_entry_points: bool) -> None:
        self.manager: pluggy.PluginManager = _Manager()
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
        """Call event `name` through pluggy's hook caller, then await the async outcomes."""
        caller = getattr(self.manager.hook, name)
        try:
            outcomes = caller(event=event)
        except Exception:  # a wrapper raised (plain implementations cannot)
            log.exception("plugin hook %s raised in a wrapper; ignored", name)
            return
        for outcome in outcomes:
            if isinstance(outcome, _Pending):
                await _bounded(outcome, event, timeout)


async def _bounded(pending: _Pending, event: HookEvent, timeout: float) -> None:
    """Await an async implementation's awaitable, bounded; log what it raises."""
    try:
        async with asyncio.timeout(timeout):
            await pending.awaitable
    except TimeoutError:
        log.warning(
            "hook %s for job %s timed out after %.1fs", pending.label, event.job_id, timeout
        )
    except Exception:
        log.exception("hook %s for job %s raised; ignored", pending.label, event.job_id)
