"""A task's signature, read once at decoration: argument validation and result encoding."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    PydanticUserError,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticSerializationError

from upnext._serializer import one_line
from upnext.errors import ConfigurationError, SerializationError

__all__ = ["RESERVED", "Signature"]

RESERVED = frozenset({"wait_timeout"})

# NaN and Infinity stay floats when dumped, so the encoder can refuse them
# (pydantic's default turns them into null: a silent change of value).
_KEEP_INF_NAN = ConfigDict(ser_json_inf_nan="constants")


def _adapter(hint: Any) -> TypeAdapter[Any]:
    """A TypeAdapter keeping NaN/Infinity, unless the type has a config of its own."""
    try:
        return TypeAdapter(hint, config=_KEEP_INF_NAN)
    except PydanticUserError:  # a model, dataclass or TypedDict: its own config rules
        return TypeAdapter(hint)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations; one that cannot be resolved becomes Any, alone."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            hints[name] = Any
    return hints


class Signature:
    """Binds, validates and encodes a task's arguments; encodes and decodes its result."""

    def __init__(self, fn: Callable[..., Any], task_name: str) -> None:
        self.task_name = task_name
        hints = _type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())
        clash = RESERVED & {p.name for p in params}
        if clash:
            raise ConfigurationError(
                f"task {task_name}: parameter name(s) {sorted(clash)} are reserved by upnext"
            )
        self.positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        self.positional_only = {p.name for p in params if p.kind is p.POSITIONAL_ONLY}
        self.var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
        self.var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
        fields: dict[str, Any] = {
            p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
            for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        extra: Literal["allow", "forbid"] = "allow" if self.var_keyword else "forbid"
        self.model: type[BaseModel] = create_model(
            f"{getattr(fn, '__name__', 'task')}_arguments",
            __config__=ConfigDict(
                extra=extra, arbitrary_types_allowed=True, ser_json_inf_nan="constants"
            ),
            **fields,
        )
        star = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
        item = hints.get(star.name, Any) if star is not None else Any
        self.rest: TypeAdapter[list[Any]] = _adapter(list[item])  # type: ignore[valid-type]  # hint known at run time
        self.rest_name = star.name if star is not None else "args"
        self.empty = not params
        self.result = _adapter(hints.get("return", Any))

    def encode(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Validate a call and return its JSON-able (args, kwargs); errors name the field."""
        if self.empty:
            if args or kwargs:
                raise SerializationError(f"{self.task_name}() takes no arguments")
            return [], {}
        named = dict(zip(self.positional, args, strict=False))
        rest = list(args[len(self.positional) :])
        if rest and not self.var_positional:
            raise SerializationError(
                f"{self.task_name}() takes {len(self.positional)} positional arguments,"
                f" {len(args)} given"
            )
        for key in kwargs:
            if key in named:
                raise SerializationError(f"{self.task_name}() got multiple values for {key!r}")
        named.update(kwargs)
        try:
            validated = self.model.model_validate(named)
            data = validated.model_dump(mode="json", exclude_unset=True)
        except ValidationError as exc:
            raise SerializationError(f"{self.task_name}: invalid argument {one_line(exc)}") from exc
        except PydanticSerializationError as exc:
            raise SerializationError(f"{self.task_name}: argument not serializable: {exc}") from exc
        if not rest:
            return [], data
        try:
            extras = self.rest.dump_python(self.rest.validate_python(rest), mode="json")
        except ValidationError as exc:
            detail = "; ".join(
                f"{self.rest_name}[{'.'.join(map(str, e['loc']))}]: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise SerializationError(f"{self.task_name}: invalid argument {detail}") from exc
        except PydanticSerializationError as exc:
            raise SerializationError(f"{self.task_name}: argument not serializable: {exc}") from exc
        return extras, data

    def bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """A valid call's arguments by parameter name, validated, defaults included."""
        named = dict(zip(self.positional, args, strict=False))
        named.update(kwargs)
        validated = self.model.model_validate(named)
        values = {name: getattr(validated, name) for name in type(validated).model_fields}
        values.update(validated.model_extra or {})
        return values

    def decode(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Validate arguments from the wire into the values to call the function with."""
        if self.empty:
            return [], {}
        validated = self.model.model_validate(kwargs)
        values = {name: getattr(validated, name) for name in validated.model_fields_set}
        if validated.model_extra:
            values.update(validated.model_extra)
        rest = self.rest.validate_python(args) if args else []
        # Positional-only parameters go by position; with *args, so must every
        # parameter before it, or the extras would collide with them.
        by_position = (
            self.positional if rest else sorted(self.positional_only, key=self.positional.index)
        )
        call_args = []
        for name in by_position:
            if name not in values:
                break
            call_args.append(values.pop(name))
        return call_args + rest, values

    def dump_result(self, value: Any) -> Any:
        """The return value as JSON-able data; SerializationError naming its type."""
        try:
            return self.result.dump_python(value, mode="json", warnings=False)
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise SerializationError(
                f"result of {self.task_name} is not serializable: {type(value).__name__}"
            ) from exc

    def load_result(self, data: Any) -> Any:
        """A stored result back as the declared return type."""
        try:
            return self.result.validate_python(data)
        except ValidationError:
            return data
