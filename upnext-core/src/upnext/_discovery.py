"""Find the backend for a URL by its scheme, through entry points.

Backends register factories under the entry point groups ``upnext.brokers``
and ``upnext.result_stores``, named by URL scheme. Only the scheme in use is
imported. `register` adds a factory in code (for tests and embedding).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from upnext._urls import scheme_of
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError

__all__ = ["BROKER_GROUP", "RESULT_STORE_GROUP", "load_factory", "register"]

BROKER_GROUP = "upnext.brokers"
RESULT_STORE_GROUP = "upnext.result_stores"

# Which `pip install upnext[...]` extra brings each scheme we know of.
_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "postgresql": "postgres",
    "postgres": "postgres",
}

# Factories registered in code, by (group, scheme); checked before entry points.
_REGISTERED: dict[tuple[str, str], str] = {}

Factory = Callable[[str], Any]


def register(scheme: str, target: str, *, group: str = BROKER_GROUP) -> None:
    """Serve `scheme` with the factory at ``"module:attr"`` (overrides entry points)."""
    if ":" not in target:
        raise ConfigurationError(f"factory must be 'module:attr', got {target!r}")
    _REGISTERED[(group, scheme.lower())] = target


def _resolve(target: str) -> Factory:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    factory: Factory = obj
    return factory


def installed_schemes(group: str = BROKER_GROUP) -> list[str]:
    """Every scheme with a factory in `group`."""
    names = {ep.name.lower() for ep in entry_points(group=group)}
    names |= {scheme for grp, scheme in _REGISTERED if grp == group}
    return sorted(names)


def load_factory(url: str, group: str = BROKER_GROUP) -> Factory:
    """The factory for `url`'s scheme; ConfigurationError naming what to install."""
    scheme = scheme_of(url)
    if not scheme:
        raise ConfigurationError(f"broker URL has no scheme: {redact_url(url)!r}")
    target = _REGISTERED.get((group, scheme))
    if target is not None:
        return _resolve(target)
    for ep in entry_points(group=group):
        if ep.name.lower() == scheme:
            factory: Factory = ep.load()
            return factory
    installed = ", ".join(installed_schemes(group)) or "none"
    extra = _EXTRAS.get(scheme)
    hint = (
        f"; install it with: pip install 'upnext[{extra}]'"
        if extra
        else "; backends install as pip install 'upnext[redis]' (or rabbitmq, postgres)"
    )
    raise ConfigurationError(f"no backend for scheme {scheme!r} (installed: {installed}){hint}")
