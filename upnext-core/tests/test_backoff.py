"""`Backoff`: exponential pauses with a cap, reset and jitter."""

from __future__ import annotations

import itertools

import pytest
from upnext.broker import Backoff


def test_pauses_grow_by_factor_up_to_the_cap() -> None:
    """first, first*factor, ... then the cap for ever."""
    assert list(itertools.islice(Backoff(0.05, 0.3), 6)) == pytest.approx(
        [0.05, 0.1, 0.2, 0.3, 0.3, 0.3]
    )
    assert list(itertools.islice(Backoff(1.0, 100.0, factor=3.0), 4)) == [1.0, 3.0, 9.0, 27.0]


def test_reset_starts_over() -> None:
    """After a success the next failure waits `first` again."""
    backoff = Backoff(0.1, 1.0)
    next(backoff)
    next(backoff)
    backoff.reset()
    assert next(backoff) == 0.1


def test_jitter_only_shortens_a_pause() -> None:
    """With jitter j each pause lies in [nominal * (1 - j), nominal], and they differ."""
    pauses = [next(Backoff(1.0, 1.0, jitter=0.5)) for _ in range(200)]
    assert all(0.5 <= p <= 1.0 for p in pauses)
    assert len(set(pauses)) > 100


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0.0, 1.0), {}, "first must be a finite number > 0"),
        ((1.0, 0.5), {}, "cap must be finite and >= first"),
        ((1.0, float("inf")), {}, "cap must be finite"),
        ((1.0, 2.0), {"factor": 0.5}, "factor must be a finite number >= 1"),
        ((1.0, 2.0), {"jitter": 1.5}, "jitter must be between 0 and 1"),
    ],
)
def test_bad_settings_are_refused(
    args: tuple[float, float], kwargs: dict[str, float], message: str
) -> None:
    """Each bad argument is named in a one-line ValueError."""
    with pytest.raises(ValueError, match=message):
        Backoff(*args, **kwargs)
