"""RetryPolicy: exponential backoff, capped, with jitter that never shortens a delay."""

from __future__ import annotations

import pytest
from upnext._retry import RetryPolicy
from upnext.errors import ConfigurationError


def test_defaults_match_the_design() -> None:
    policy = RetryPolicy()
    assert (policy.retries, policy.delay, policy.backoff) == (0, 1.0, 2.0)
    assert (policy.delay_max, policy.jitter, policy.max_attempts) == (3600.0, 0.0, 1)


def test_seed_sequence_two_four_eight_sixteen_thirty_two() -> None:
    policy = RetryPolicy(retries=5, delay=2.0, backoff=2.0)
    assert policy.max_attempts == 6
    assert [policy.next_delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_constant_delay_with_backoff_one() -> None:
    policy = RetryPolicy(retries=3, delay=0.5, backoff=1.0)
    assert [policy.next_delay(n) for n in range(1, 4)] == [0.5, 0.5, 0.5]


def test_delay_is_capped_at_delay_max() -> None:
    policy = RetryPolicy(retries=20, delay=1.0, backoff=3.0, delay_max=10.0)
    assert [policy.next_delay(n) for n in range(1, 5)] == [1.0, 3.0, 9.0, 10.0]
    assert policy.next_delay(20) == 10.0


def test_delay_stays_capped_for_very_many_retries() -> None:
    policy = RetryPolicy(retries=5000, delay=1.0, backoff=2.0, delay_max=60.0)
    assert policy.next_delay(2000) == 60.0


def test_jitter_stays_within_nominal_and_nominal_times_one_plus_jitter() -> None:
    policy = RetryPolicy(retries=5, delay=2.0, backoff=2.0, jitter=0.5)
    for n, nominal in [(1, 2.0), (3, 8.0)]:
        samples = [policy.next_delay(n) for _ in range(2000)]
        assert all(nominal <= s <= nominal * 1.5 for s in samples)
        # The jitter is really random and spreads over the range.
        assert len(set(samples)) > 1900
        assert min(samples) < nominal * 1.05
        assert max(samples) > nominal * 1.45


def test_jitter_applies_on_top_of_the_cap() -> None:
    policy = RetryPolicy(retries=5, delay=100.0, delay_max=10.0, jitter=1.0)
    assert all(10.0 <= policy.next_delay(4) <= 20.0 for _ in range(500))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"retries": -1}, "retries"),
        ({"delay": -0.1}, "retry_delay"),
        ({"backoff": 0.5}, "retry_backoff"),
        ({"delay_max": -1.0}, "retry_delay_max"),
        ({"jitter": -0.1}, "retry_jitter"),
        ({"jitter": 11.0}, "retry_jitter"),
    ],
)
def test_invalid_values_raise_configuration_error(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]  # float into an int field is the point
    message = str(info.value)
    assert message.startswith(f"invalid {field}: ")
    assert repr(next(iter(kwargs.values()))) in message
    assert "\n" not in message


def test_invalid_value_at_decoration_raises_configuration_error() -> None:
    import upnext

    worker = upnext.Worker("retry-config", broker="memory://retry-config")
    with pytest.raises(ConfigurationError, match="retry_backoff"):

        @worker.task(retries=2, retry_backoff=0.0)
        async def job() -> None: ...


def test_no_filters_retry_everything() -> None:
    policy = RetryPolicy(retries=1)
    assert all(policy.retryable(exc) for exc in (ValueError(), TimeoutError(), KeyError()))


def test_retry_on_keeps_only_its_classes_and_their_subclasses() -> None:
    policy = RetryPolicy(retries=1, retry_on=(ConnectionError, TimeoutError))
    assert policy.retryable(ConnectionRefusedError())
    assert policy.retryable(TimeoutError())
    assert not policy.retryable(ValueError())


def test_dont_retry_on_wins_over_retry_on() -> None:
    policy = RetryPolicy(retries=1, retry_on=(OSError,), dont_retry_on=(PermissionError,))
    assert policy.retryable(ConnectionError())
    assert not policy.retryable(PermissionError())
    assert not policy.retryable(ValueError())


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"retry_on": ValueError()}, "retry_on"),
        ({"retry_on": "ValueError"}, "retry_on"),
        ({"dont_retry_on": (ValueError, int)}, "dont_retry_on"),
        ({"dont_retry_on": [ValueError]}, "dont_retry_on"),
    ],
)
def test_a_filter_that_is_not_exception_classes_is_refused_at_decoration(
    options: dict[str, object], name: str
) -> None:
    import upnext

    worker = upnext.Worker("retry-filters", broker="memory://retry-filters")
    with pytest.raises(ConfigurationError) as info:
        worker.task(retries=2, **options)(lambda: None)  # type: ignore[call-overload]  # the point
    message = str(info.value)
    assert f"invalid {name}: " in message
    assert "must be an exception class or a tuple of them" in message
    assert "\n" not in message
