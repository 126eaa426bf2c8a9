"""Find user objects by ``module:attr`` and resolve the broker URL the CLI should use."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from upnext._urls import scheme_of
from upnext.errors import ConfigurationError

__all__ = ["load_object", "refuse_memory"]


def load_object(target: str) -> Any:
    """Import ``module:attr`` (the current directory importable, as for uvicorn)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected module:attr, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def refuse_memory(url: str, what: str) -> None:
    """memory:// lives in one process: a separate CLI process would see nothing."""
    if scheme_of(url) == "memory":
        raise ConfigurationError(
            f"{what} needs a broker other processes can reach; memory:// lives inside one"
            " process (set --broker or UPNEXT_BROKER_URL)"
        )
