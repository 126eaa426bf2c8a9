"""`rate_limit=`, `rate_key=`, `max_concurrency=`, `concurrency_key=`: checked at decoration."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import upnext
from upnext._flowspec import parse_rate


def _worker() -> upnext.Worker:
    return upnext.Worker("flow", f"memory://flow-{uuid.uuid4().hex}", load_plugins=False)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("10/minute", (10, 60.0)),
        ("10/second", (10, 1.0)),
        ("10/hour", (10, 3600.0)),
        ("10/s", (10, 1.0)),
        ("10/m", (10, 60.0)),
        ("10/h", (10, 3600.0)),
        ("2/day", (2, 86400.0)),
        (" 5 / Minutes ", (5, 60.0)),
    ],
)
def test_rate_specs_as_the_original_upnext_writes_them(
    spec: str, expected: tuple[int, float]
) -> None:
    assert parse_rate(spec, "task t") == expected


@pytest.mark.parametrize("spec", ["10", "10/fortnight", "0/s", "-1/s", "1.5/s", "ten/s", "", 10])
def test_a_bad_rate_spec_is_one_line_naming_the_task(spec: object) -> None:
    with pytest.raises(upnext.ConfigurationError) as caught:
        _worker().task(name="t", rate_limit=spec)(_noop)  # type: ignore[call-overload]
    message = str(caught.value)
    assert message.startswith("task t: invalid rate_limit")
    assert "\n" not in message


async def _noop(tenant: str = "a") -> None: ...


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1, got 0"),
        ({"max_concurrency": True}, "max_concurrency must be an int >= 1, got True"),
        ({"max_concurrency": 2.0}, "max_concurrency must be an int >= 1, got 2.0"),
        ({"concurrency_key": "{tenant}"}, "concurrency_key needs max_concurrency="),
        ({"rate_key": "{tenant}"}, "rate_key needs rate_limit="),
        (
            {"max_concurrency": 1, "concurrency_key": "{user}"},
            "concurrency_key '{user}' names 'user', which is not a parameter",
        ),
        ({"rate_limit": "1/s", "rate_key": ""}, "rate_key must be a non-empty str"),
    ],
)
def test_bad_limit_options_are_one_line_errors(options: dict[str, Any], error: str) -> None:
    with pytest.raises(upnext.ConfigurationError, match=error) as caught:
        _worker().task(name="t", **options)(_noop)
    assert "\n" not in str(caught.value)


def test_an_async_key_function_is_refused() -> None:
    async def key(tenant: str) -> str:
        return tenant

    with pytest.raises(upnext.ConfigurationError, match="rate_key must be a plain function"):
        _worker().task(name="t", rate_limit="1/s", rate_key=key)(_noop)


def test_a_task_without_limits_has_none() -> None:
    assert _worker().task(name="t")(_noop).limits is None
    limited = _worker().task(name="t", rate_limit="3/m", max_concurrency=2)(_noop)
    assert limited.limits is not None
    assert (limited.limits.rate, limited.limits.max_concurrency) == ((3, 60.0), 2)


async def test_a_key_that_fails_fails_the_attempt_with_a_clear_error() -> None:
    """A key function that raises at the worker: that attempt fails, saying which option."""
    worker = _worker()

    def tenant_of(tenant: str) -> str:
        raise KeyError(tenant)

    @worker.task(name="keyed", max_concurrency=1, concurrency_key=tenant_of)
    async def keyed(tenant: str) -> None: ...

    async with worker:
        with pytest.raises(upnext.TaskExecutionError) as caught:
            await keyed.wait("acme", wait_timeout=5.0)
    assert "task keyed: concurrency_key failed: KeyError('acme')" in str(caught.value)
