"""The public facade: `__all__` is complete, sorted, importable and documented.

The pattern of anyio's ``test_all_attributes.py`` and httpx's
``test_exported_members.py``: public names live in private modules and are
re-exported explicitly, so a test keeps the lists honest.
"""

from __future__ import annotations

import importlib
import inspect
import types
from typing import Any

import pytest

MODULES = [
    "upnext",
    "upnext.errors",
    "upnext.broker",
    "upnext.hooks",
    "upnext.control",
    "upnext.workers",
    "upnext.crons",
    "upnext.queues",
    "upnext.metrics",
    "upnext.metrics.prometheus",
    "upnext.testing",
]


def _public(module_name: str) -> list[tuple[str, Any]]:
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


def _documented(obj: Any) -> bool:
    doc = inspect.getdoc(obj)
    return bool(doc and doc.strip())


def _needs_doc(obj: Any) -> bool:
    """Classes and functions carry their own docstrings; aliases and markers can't."""
    return inspect.isclass(obj) or inspect.isfunction(obj)


@pytest.mark.parametrize("module_name", MODULES)
def test_all_is_sorted_and_unique(module_name: str) -> None:
    names = importlib.import_module(module_name).__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("module_name", MODULES)
def test_every_name_in_all_is_importable(module_name: str) -> None:
    for name in importlib.import_module(module_name).__all__:
        namespace: dict[str, Any] = {}
        exec(f"from {module_name} import {name}", namespace)
        assert namespace[name] is not None, name


@pytest.mark.parametrize("module_name", MODULES)
def test_public_attributes_are_listed_in_all(module_name: str) -> None:
    module = importlib.import_module(module_name)
    unlisted = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("upnext")
        and name not in module.__all__
    }
    # Helpers a module uses but does not export must be private (underscored) or listed.
    allowed = {"upnext.hooks": {"Plugins", "adapt_hook", "call_hook"}}
    assert unlisted <= allowed.get(module_name, set())


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    missing = [
        name for name, obj in _public(module_name) if _needs_doc(obj) and not _documented(obj)
    ]
    assert missing == []


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_method_has_a_docstring(module_name: str) -> None:
    missing = []
    for name, obj in _public(module_name):
        if not inspect.isclass(obj) or not obj.__module__.startswith("upnext"):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not callable(getattr(value, "__func__", value)):
                continue
            if isinstance(value, type):
                continue
            if not _documented(value):
                missing.append(f"{name}.{attr}")
    assert missing == []


def test_the_facade_module_is_documented() -> None:
    for module_name in MODULES:
        assert _documented(importlib.import_module(module_name)), module_name


def test_facade_re_exports_the_error_tree() -> None:
    import upnext
    from upnext import errors

    for name in errors.__all__:
        assert getattr(upnext, name) is getattr(errors, name)
