"""Backend discovery: URL scheme -> factory, by entry point or `register`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib.metadata import EntryPoint, EntryPoints, entry_points

import pytest
import upnext
from upnext import _discovery
from upnext._discovery import (
    BROKER_GROUP,
    RESULT_STORE_GROUP,
    installed_schemes,
    load_factory,
    register,
)
from upnext.broker.memory import MemoryBroker
from upnext.errors import ConfigurationError


def custom_factory(url: str) -> MemoryBroker:
    """A factory registered in code by these tests."""
    return MemoryBroker(url)


class Nested:
    """Holds a factory one attribute deep, as ``module:Class.method`` targets do."""

    @staticmethod
    def build(url: str) -> MemoryBroker:
        """Build a broker."""
        return MemoryBroker(url)


@pytest.fixture(autouse=True)
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep schemes registered here out of other tests."""
    monkeypatch.setattr(_discovery, "_REGISTERED", dict(_discovery._REGISTERED))


def _only(*names: str) -> Callable[..., EntryPoints]:
    """An `entry_points` that pretends only the named schemes are installed."""

    def fake(*, group: str) -> EntryPoints:
        return EntryPoints(ep for ep in entry_points(group=group) if ep.name in names)

    return fake


def _message(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_scheme_lists_installed_schemes() -> None:
    with pytest.raises(ConfigurationError) as info:
        upnext.Worker("disc", broker="nosuch://h")
    message = _message(info)
    assert "'nosuch'" in message
    assert "memory" in message.partition("installed: ")[2]
    assert "pip install 'upnext[redis]'" in message


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("amqp://guest:s3cret@localhost/", "rabbitmq"),
        ("amqps://h/", "rabbitmq"),
        ("redis://localhost:6379/0", "redis"),
        ("rediss://h", "redis"),
        ("postgresql://h/test", "postgres"),
        ("postgres://h/test", "postgres"),
    ],
)
def test_known_scheme_not_installed_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, extra: str
) -> None:
    monkeypatch.setattr(_discovery, "entry_points", _only("memory"))
    with pytest.raises(ConfigurationError) as info:
        upnext.Worker("disc", broker=url)
    message = _message(info)
    assert f"pip install 'upnext[{extra}]'" in message
    assert "(installed: memory)" in message
    assert "s3cret" not in message


def test_no_backend_installed_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_discovery, "entry_points", _only())
    with pytest.raises(ConfigurationError) as info:
        load_factory("memory://")
    assert "(installed: none)" in _message(info)


def test_url_without_scheme_is_redacted() -> None:
    with pytest.raises(ConfigurationError) as info:
        upnext.Worker("disc", broker="//user:s3cret@host:6379")
    message = _message(info)
    assert "no scheme" in message
    assert "s3cret" not in message


def test_unknown_result_store_scheme() -> None:
    with pytest.raises(ConfigurationError) as info:
        upnext.Worker("disc", broker="memory://disc", results="nosuch://h")
    assert "'nosuch'" in _message(info)


def test_scheme_match_is_case_insensitive() -> None:
    factory = load_factory("MEMORY://x")
    assert factory == MemoryBroker.from_url


def test_entry_point_factory_is_loaded() -> None:
    assert load_factory("memory://") == MemoryBroker.from_url
    assert load_factory("memory://", RESULT_STORE_GROUP) == MemoryBroker.from_url


def test_register_serves_a_new_scheme() -> None:
    register("Custom", f"{__name__}:custom_factory")
    assert "custom" in installed_schemes()
    assert "custom" not in installed_schemes(RESULT_STORE_GROUP)
    assert load_factory("custom://a") is custom_factory


def test_register_resolves_dotted_attributes() -> None:
    register("nested", f"{__name__}:Nested.build", group=RESULT_STORE_GROUP)
    assert load_factory("nested://a", RESULT_STORE_GROUP) is Nested.build
    with pytest.raises(ConfigurationError):
        load_factory("nested://a", BROKER_GROUP)


def test_register_overrides_entry_points() -> None:
    register("memory", f"{__name__}:custom_factory")
    assert load_factory("memory://x") is custom_factory


def test_register_needs_module_colon_attr() -> None:
    with pytest.raises(ConfigurationError) as info:
        register("bad", "no_colon_here")
    assert "module:attr" in _message(info)


def test_broken_registered_target_raises_on_use() -> None:
    register("broken", "upnext_no_such_module_anywhere:factory")
    with pytest.raises(ModuleNotFoundError):
        load_factory("broken://x")


def test_only_the_scheme_in_use_is_imported() -> None:
    code = textwrap.dedent(
        """
        import sys, upnext
        upnext.Worker("w", broker="memory://only")
        print(sorted(m for m in sys.modules if m.startswith(("upnext_", "redis", "aio_pika",
              "asyncpg"))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"


def test_entry_points_of_this_distribution() -> None:
    memory = [ep for ep in entry_points(group=BROKER_GROUP) if ep.name == "memory"]
    assert memory == [
        EntryPoint("memory", "upnext.broker.memory:MemoryBroker.from_url", BROKER_GROUP)
    ]
