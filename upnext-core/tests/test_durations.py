"""Durations are checked once, at the edge: finite, non-negative, at most MAX_DURATION."""

from __future__ import annotations

import math

import pytest
from upnext import ConfigurationError, Retry, Worker
from upnext._durations import MAX_DURATION, check_duration
from upnext._serializer import UndecodableBody, decode_body

BAD = [math.nan, math.inf, -math.inf, -1.0, MAX_DURATION * 1.01, 1e300]


@pytest.mark.parametrize("value", BAD)
def test_a_bad_duration_names_its_option(value: float) -> None:
    with pytest.raises(ConfigurationError, match=r"^invalid lease: "):
        check_duration("lease", value)


def test_the_edges_are_accepted() -> None:
    assert check_duration("ttl", 0) == 0.0
    assert check_duration("ttl", MAX_DURATION) == MAX_DURATION
    with pytest.raises(ConfigurationError, match="> 0"):
        check_duration("timeout", 0, positive=True)
    with pytest.raises(ConfigurationError, match="number of seconds"):
        check_duration("timeout", True)


@pytest.mark.parametrize(
    "option", ["lease", "shutdown_grace", "hook_timeout", "receive_wait", "connect_timeout"]
)
def test_worker_durations_are_checked(option: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        Worker("w", "memory://", **{option: math.nan})  # type: ignore[arg-type]  # each is a float


def test_connect_timeout_may_be_infinite() -> None:
    """inf means retry for ever at start; it is never stored anywhere."""
    assert Worker("w", "memory://", connect_timeout=math.inf).connect_timeout == math.inf


def test_retry_delay_from_a_task_is_checked() -> None:
    with pytest.raises(ValueError, match="finite"):
        Retry(delay=math.inf)


@pytest.mark.parametrize("number", ["1e300", "Infinity", "NaN", "-1"])
def test_a_body_with_an_out_of_range_ttl_is_undecodable(number: str) -> None:
    data = f'{{"v": 1, "id": "j", "fn": "f", "queue": "q", "result_ttl": {number}}}'.encode()
    with pytest.raises(UndecodableBody, match="result_ttl") as caught:
        decode_body(data, 1 << 20)
    assert caught.value.reason == "undecodable"
