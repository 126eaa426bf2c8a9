"""Signature: arguments bound, validated and encoded at submit; results encoded once.

This module uses ``from __future__ import annotations`` on purpose: every hint
below is a string that Signature must resolve to validate anything.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import upnext
from pydantic import BaseModel
from upnext._signature import Signature
from upnext.broker.memory import MemoryBroker
from upnext.errors import ConfigurationError, SerializationError


class Point(BaseModel):
    """A model argument and result."""

    x: int
    y: int


def _roundtrip(fn: Any, *args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """Encode a call as the producer does, then decode it as the worker does."""
    sig = Signature(fn, fn.__name__)
    wire_args, wire_kwargs = sig.encode(args, kwargs)
    return sig.decode(wire_args, wire_kwargs)


def _message(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_positional_and_keyword_arguments_bind_by_name() -> None:
    def f(a: int, b: str, c: float = 1.5) -> None: ...

    sig = Signature(f, "f")
    assert sig.encode((1,), {"b": "x"}) == ([], {"a": 1, "b": "x"})
    assert sig.encode((), {"b": "x", "a": 1, "c": 2}) == ([], {"a": 1, "b": "x", "c": 2.0})
    assert sig.decode([], {"a": 1, "b": "x"}) == ([], {"a": 1, "b": "x"})


def test_defaults_are_left_to_the_function() -> None:
    def f(a: int, b: int = 5) -> int:
        return a + b

    args, kwargs = _roundtrip(f, 1)
    assert kwargs == {"a": 1}
    assert f(*args, **kwargs) == 6


def test_validation_coerces_to_the_declared_type() -> None:
    def f(a: int, when: dt.date) -> None: ...

    _, kwargs = _roundtrip(f, "7", when="2024-05-01")
    assert kwargs == {"a": 7, "when": dt.date(2024, 5, 1)}


def test_positional_only_parameters_are_passed_positionally() -> None:
    def f(a: int, /, b: int) -> tuple[int, int]:
        return a, b

    args, kwargs = _roundtrip(f, 1, 2)
    assert (args, kwargs) == ([1], {"b": 2})
    assert f(*args, **kwargs) == (1, 2)


def test_omitted_positional_only_default_is_left_to_the_function() -> None:
    def f(a: int, b: int = 5, /, c: int = 7) -> tuple[int, int, int]:
        return a, b, c

    args, kwargs = _roundtrip(f, 1, c=8)
    assert (args, kwargs) == ([1], {"c": 8})
    assert f(*args, **kwargs) == (1, 5, 8)


def test_var_positional_extras_travel_as_args() -> None:
    def f(*items: int) -> int:
        return sum(items)

    args, kwargs = _roundtrip(f, 1, 2, 3)
    assert f(*args, **kwargs) == 6


def test_named_parameter_before_var_positional() -> None:
    def f(a: int, b: int = 10, *rest: int) -> int:
        return a + b + sum(rest)

    args, kwargs = _roundtrip(f, 1, 2, 3)
    assert f(*args, **kwargs) == 6
    args, kwargs = _roundtrip(f, 1)
    assert f(*args, **kwargs) == 11


def test_var_positional_values_are_validated() -> None:
    def f(*items: int) -> None: ...

    sig = Signature(f, "f")
    assert sig.encode((1, "2"), {}) == ([1, 2], {})
    with pytest.raises(SerializationError) as info:
        sig.encode((1, "not a number"), {})
    assert "valid integer" in _message(info)


def test_bad_var_positional_value_names_the_parameter() -> None:
    def f(a: int, *rest: int) -> None: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "f").encode((1, 2, "x"), {})
    assert "rest" in _message(info)


def test_var_keyword_accepts_extra_names() -> None:
    def f(a: int, **extra: Any) -> dict[str, Any]:
        return {"a": a, **extra}

    args, kwargs = _roundtrip(f, 1, colour="red")
    assert f(*args, **kwargs) == {"a": 1, "colour": "red"}


def test_only_var_keyword() -> None:
    def f(**extra: Any) -> dict[str, Any]:
        return extra

    args, kwargs = _roundtrip(f, colour="red")
    assert f(*args, **kwargs) == {"colour": "red"}


def test_pydantic_models_round_trip() -> None:
    def f(p: Point, points: list[Point]) -> Point:
        return p

    sig = Signature(f, "f")
    wire_args, wire_kwargs = sig.encode((Point(x=1, y=2),), {"points": [{"x": 3, "y": 4}]})
    assert wire_kwargs == {"p": {"x": 1, "y": 2}, "points": [{"x": 3, "y": 4}]}
    _, kwargs = sig.decode(wire_args, wire_kwargs)
    assert kwargs == {"p": Point(x=1, y=2), "points": [Point(x=3, y=4)]}
    assert sig.dump_result(Point(x=5, y=6)) == {"x": 5, "y": 6}
    assert sig.load_result({"x": 5, "y": 6}) == Point(x=5, y=6)


def test_future_annotations_are_resolved() -> None:
    def f(p: Point, n: int) -> Point:
        return p

    assert isinstance(f.__annotations__["n"], str)  # the hint really is a string here
    sig = Signature(f, "f")
    with pytest.raises(SerializationError) as info:
        sig.encode(({"x": 1, "y": 2}, "abc"), {})
    assert "n: " in _message(info)
    assert sig.load_result({"x": 1, "y": 2}) == Point(x=1, y=2)


def test_one_unresolvable_hint_keeps_the_others_validated() -> None:
    class Local(BaseModel):
        a: int

    def f(p: Local, n: int) -> int:
        return n

    sig = Signature(f, "f")
    with pytest.raises(SerializationError, match="n: "):
        sig.encode(({"a": 1}, "abc"), {})
    # The unresolvable hint alone falls back to Any: its value travels as given.
    assert sig.encode(({"a": "x"}, "3"), {}) == ([], {"p": {"a": "x"}, "n": 3})
    assert sig.load_result("7") == 7  # the return hint is resolved too


def test_var_keyword_only_decodes_as_given() -> None:
    def f(**extra: Any) -> None: ...

    assert Signature(f, "f").decode([], {"colour": "red"}) == ([], {"colour": "red"})


def test_unknown_keyword_is_rejected_by_name() -> None:
    def f(a: int) -> None: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "mod.f").encode((1,), {"colour": "red"})
    message = _message(info)
    assert "colour" in message
    assert message.startswith("mod.f: invalid argument")


def test_missing_argument_is_named() -> None:
    def f(a: int, b: int) -> None: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "f").encode((1,), {})
    assert "b: Field required" in _message(info)


def test_too_many_positional_arguments() -> None:
    def f(a: int, b: int = 0) -> None: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "f").encode((1, 2, 3), {})
    assert _message(info) == "f() takes 2 positional arguments, 3 given"


def test_argument_given_twice() -> None:
    def f(a: int) -> None: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "f").encode((1,), {"a": 2})
    assert _message(info) == "f() got multiple values for 'a'"


def test_task_without_parameters_takes_no_arguments() -> None:
    def f() -> None: ...

    sig = Signature(f, "f")
    assert sig.encode((), {}) == ([], {})
    with pytest.raises(SerializationError) as info:
        sig.encode((1,), {})
    assert _message(info) == "f() takes no arguments"


def test_unserializable_argument() -> None:
    def f(a: Any) -> None: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "f").encode((object(),), {})
    assert "not serializable" in _message(info)


def test_reserved_parameter_name_is_a_configuration_error() -> None:
    def f(x: int, wait_timeout: float) -> None: ...

    with pytest.raises(ConfigurationError) as info:
        Signature(f, "f")
    assert "wait_timeout" in _message(info)


def test_reserved_parameter_rejected_at_decoration() -> None:
    worker = upnext.Worker("sig", broker=f"memory://sig-{uuid.uuid4().hex}")
    with pytest.raises(ConfigurationError, match="wait_timeout"):

        @worker.task
        async def f(wait_timeout: float) -> None: ...


def test_unserializable_result_names_its_type() -> None:
    class Opaque:
        pass

    def f() -> Any: ...

    with pytest.raises(SerializationError) as info:
        Signature(f, "mod.f").dump_result(Opaque())
    message = _message(info)
    assert "Opaque" in message
    assert "mod.f" in message


def test_result_that_does_not_match_its_hint_is_returned_raw() -> None:
    def f() -> int:
        return 3

    sig = Signature(f, "f")
    assert sig.dump_result(3) == 3
    assert sig.load_result("not an int") == "not an int"


async def test_wrong_argument_type_at_submit_names_the_field_and_enqueues_nothing() -> None:
    url = f"memory://sig-{uuid.uuid4().hex}"
    worker = upnext.Worker("sig-submit", broker=url)

    @worker.task
    async def add(x: int, y: int = 0) -> int:
        return x + y

    with pytest.raises(SerializationError) as info:
        await add.submit(x="abc")  # type: ignore[arg-type]  # the wrong type is the point
    message = _message(info)
    assert "x: Input should be a valid integer" in message
    with pytest.raises(SerializationError):
        await add.submit_many([{"x": 1}, {"x": 2, "y": "nope"}])
    broker = MemoryBroker.from_url(url)
    assert broker.pending() == 0
    stats = await broker.stats("sig-submit")
    assert (stats.ready, stats.scheduled, stats.in_flight) == (0, 0, 0)
    await worker.aclose()
