"""Skip a test for want of something it needs, loudly, and never in CI.

A user without Redis or a browser gets a one-line skip; under ``CI`` or
``UPNEXT_REQUIRE_SERVICES`` the same want fails the run, so a missing server
or package can never turn a red suite green by skipping.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

__all__ = ["needs_modules", "unavailable"]


def unavailable(message: str) -> None:
    """Fail with `message` under CI / UPNEXT_REQUIRE_SERVICES, else skip with it."""
    if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def needs_modules(*modules: str) -> None:
    """`unavailable` unless every module (or package of a dotted name) can be imported."""
    for name in modules:
        if importlib.util.find_spec(name.partition(".")[0]) is None:
            unavailable(
                f"{name} is not installed: pip install 'upnext-core[server]' and the test tools"
            )
