"""`rate_limit=`, `rate_key=`, `max_concurrency=`, `concurrency_key=`: checked at decoration."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import upnext
from upnext._flowspec import parse_rate
from upnext.broker.state import SlotGrant
from upnext.errors import BrokerUnavailable
from upnext.middleware import Decision, Job, Middleware, Skip


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


async def test_a_slot_whose_body_never_runs_is_given_back() -> None:
    """A later before_run skips the job that took the only slot: the next job still runs."""

    class SkipFirst(Middleware):
        async def before_run(self, job: Job) -> Decision | None:
            return Skip("not this one") if job.kwargs == {"i": 0} else None

    worker = upnext.Worker(
        "flow", f"memory://flow-{uuid.uuid4().hex}", load_plugins=False, middleware=[SkipFirst()]
    )

    @worker.task(name="capped", max_concurrency=1)
    async def capped(i: int) -> int:
        return i

    async with worker:
        skipped, kept = await capped.submit(0), await capped.submit(1)
        with pytest.raises(upnext.TaskExecutionError):
            await skipped.value(5.0)
        assert await kept.value(5.0) == 1
        state = (await worker.client()).state
        assert state is not None
        grant = await state.slots_acquire("upnext:concurrency:capped", "probe", limit=None, ttl=1.0)
    assert grant.count == 1, "only the probe holds a slot: the skipped job's went back"


async def test_a_store_that_fails_delays_the_job_uncharged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state store fails once while a limit is checked: the job waits, then runs once."""
    worker = _worker()

    @worker.task(name="rated", rate_limit="5/s")
    async def rated() -> int:
        return upnext.get_current_context().attempt

    state = (await worker.client()).state
    assert state is not None
    real = state.slots_acquire
    failures = [BrokerUnavailable("store down")]

    async def flaky(*args: Any, **kwargs: Any) -> SlotGrant:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(state, "slots_acquire", flaky)
    async with worker:
        result = await rated.wait(wait_timeout=10.0)
    assert (result.value, result.attempts) == (1, 1), "the wait charged no attempt"
    assert not failures
