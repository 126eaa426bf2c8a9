"""Opt-in pytest plugin for the upnext conformance suite.

Load it from a conftest (it is not registered as an entry point, so it never
loads by surprise)::

    pytest_plugins = ["upnext.testing.plugin"]

Fixtures:

- `upnext_queue`: a queue name unique to the test (``t-<12 hex>``).
- `upnext_queues`: ``upnext_queues(n)`` returns `n` more unique names.
- `broker`: a placeholder that fails, telling you to override it in your
  conformance class (an async fixture yielding a connected broker).
- `results`: the `ResultStore` under test; by default the broker itself.
  Override it in your class when results live in a separate store.
- `timing`: a `Timing` whose methods scale delays and tolerances by
  ``--upnext-timing-scale`` (or env ``UPNEXT_TIMING_SCALE``; default 1.0).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from upnext.broker.protocol import Broker, ResultStore
from upnext.broker.state import StateStore
from upnext.testing._support import Timing

__all__ = [
    "broker",
    "pytest_addoption",
    "pytest_configure",
    "results",
    "timing",
    "upnext_queue",
    "upnext_queues",
]

_OPTION = "--upnext-timing-scale"
_ENV = "UPNEXT_TIMING_SCALE"
_SCALE = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--upnext-timing-scale``."""
    parser.getgroup("upnext").addoption(
        _OPTION,
        type=float,
        default=None,
        help=f"multiply the conformance suite's delays and tolerances (env {_ENV}; default 1.0)",
    )


def _scale(config: pytest.Config) -> float:
    value = config.getoption(_OPTION)
    if value is None:
        raw = os.environ.get(_ENV, "").strip()
        try:
            value = float(raw) if raw else 1.0
        except ValueError:
            raise pytest.UsageError(f"{_ENV} must be a number, got {raw!r}") from None
    scale = float(value)
    if scale <= 0:
        raise pytest.UsageError(f"the upnext timing scale must be positive, got {scale}")
    return scale


def pytest_configure(config: pytest.Config) -> None:
    """Read and check the timing scale once, so a bad value stops the run at startup."""
    config.stash[_SCALE] = _scale(config)


def _queue_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def timing(request: pytest.FixtureRequest) -> Timing:
    """Delays and tolerances scaled for this machine."""
    return Timing(request.config.stash[_SCALE])


@pytest.fixture
def upnext_queue() -> str:
    """A queue name no other test uses."""
    return _queue_name()


@pytest.fixture
def upnext_queues() -> Callable[[int], list[str]]:
    """A factory of unique queue names: ``upnext_queues(3)``."""

    def make(count: int) -> list[str]:
        return [_queue_name() for _ in range(count)]

    return make


@pytest.fixture
def broker() -> Broker:
    """Placeholder: a backend's conformance class overrides this fixture."""
    pytest.fail(
        "override the `broker` fixture in your conformance test class: "
        "@pytest_asyncio.fixture async def broker(self): yield <a connected broker>"
    )


@pytest.fixture
def state(broker: Broker) -> StateStore:
    """The state store under test: by default the broker itself."""
    if isinstance(broker, StateStore):
        return broker
    pytest.fail(
        f"{type(broker).__name__} is not a StateStore: "
        "override the `state` fixture to return the store under test"
    )


@pytest.fixture
def results(broker: Broker) -> ResultStore:
    """The result store under test: by default the broker itself."""
    if isinstance(broker, ResultStore):
        return broker
    pytest.fail(
        f"{type(broker).__name__} is not a ResultStore: "
        "override the `results` fixture to return the store under test"
    )
