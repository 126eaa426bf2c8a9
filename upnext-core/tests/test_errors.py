"""The error tree: every error is an UpNextError, with the stdlib bases users catch."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import pytest
import upnext
from upnext import errors
from upnext._result import ErrorInfo, TaskResult, raise_for_failure


def _failed_result(*, timed_out: bool = False) -> TaskResult[Any]:
    info = ErrorInfo(type="ValueError", message="boom", traceback="tb", timed_out=timed_out)
    return TaskResult(
        job_id="j1",
        function="m.f",
        function_name="f",
        status="failed",
        ok=False,
        attempts=3,
        error=str(info),
        error_info=info,
    )


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_an_upnext_error(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.UpNextError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (errors.WaitTimeout, TimeoutError),
        (errors.NoJobContext, RuntimeError),
        (errors.TaskTimeoutError, errors.TaskExecutionError),
        (errors.PayloadTooLarge, errors.SerializationError),
        (errors.BrokerUnavailable, errors.BrokerError),
        (errors.LeaseLost, errors.BrokerError),
        (errors.DeadLetterNotFound, LookupError),
    ],
)
def test_error_bases(child: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(child, parent)


def test_control_flow_exceptions_are_not_errors() -> None:
    assert not issubclass(upnext.Retry, errors.UpNextError)
    assert not issubclass(upnext.Reject, errors.UpNextError)


def test_get_current_context_outside_a_job_raises_no_job_context() -> None:
    with pytest.raises(errors.NoJobContext) as info:
        upnext.get_current_context()
    assert isinstance(info.value, RuntimeError)
    assert "outside" in str(info.value)
    assert "\n" not in str(info.value)


def test_task_execution_error_carries_the_result() -> None:
    result = _failed_result()
    exc = errors.TaskExecutionError("j1", "failed", result.error, result)
    assert (exc.job_id, exc.status, exc.error) == ("j1", "failed", "ValueError: boom")
    assert exc.task_result is result
    assert str(exc) == "job j1 failed: ValueError: boom"


@pytest.mark.parametrize("cls", [errors.TaskExecutionError, errors.TaskTimeoutError])
def test_task_execution_error_pickles_round_trip(cls: type[errors.TaskExecutionError]) -> None:
    result = _failed_result(timed_out=cls is errors.TaskTimeoutError)
    exc = cls("j1", "failed", result.error, result)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert (back.job_id, back.status, back.error) == (exc.job_id, exc.status, exc.error)
    assert back.task_result == result
    assert str(back) == str(exc)


async def test_task_execution_error_raised_by_a_wait_pickles_round_trip() -> None:
    worker = upnext.Worker("errors", broker=f"memory://errors-{uuid.uuid4().hex}")

    @worker.task(name="errors.fails")
    async def fails() -> None:
        raise ValueError("boom")

    async with worker:
        with pytest.raises(errors.TaskExecutionError) as info:
            await fails.wait(wait_timeout=5.0)
    back = pickle.loads(pickle.dumps(info.value))
    assert back.task_result == info.value.task_result


def test_raise_for_failure_picks_the_timeout_error_when_timed_out() -> None:
    with pytest.raises(errors.TaskTimeoutError):
        raise_for_failure(_failed_result(timed_out=True))
    with pytest.raises(errors.TaskExecutionError) as info:
        raise_for_failure(_failed_result())
    assert type(info.value) is errors.TaskExecutionError


def test_raise_for_failure_passes_a_completed_result() -> None:
    ok = TaskResult[int](
        value=1, job_id="j", function="m.f", function_name="f", status="complete", ok=True
    )
    raise_for_failure(ok)


def test_error_info_str() -> None:
    assert str(ErrorInfo(type="KeyError", message="'x'")) == "KeyError: 'x'"
    assert str(ErrorInfo(type="Cancelled", message="")) == "Cancelled"


def test_retry_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        upnext.Retry(delay=-1)
    retry = upnext.Retry(delay=2.0, reason="later")
    assert (retry.delay, retry.reason, str(retry)) == (2.0, "later", "later")
    assert upnext.Reject("bad input").reason == "bad input"
