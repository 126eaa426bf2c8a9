"""A task's signature, read once at decoration: argument validation and result encoding."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticSerializationError

from upnext._serializer import one_line
from upnext.errors import ConfigurationError, SerializationError

__all__ = ["RESERVED", "Signature"]

RESERVED = frozenset({"wait_timeout"})


class Signature:
    """Binds, validates and encodes a task's arguments; encodes and decodes its result."""

    def __init__(self, fn: Callable[..., Any], task_name: str) -> None:
        self.task_name = task_name
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
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
        self.model: type[BaseModel] | None = None
        if fields or not self.var_keyword:
            self.model = create_model(
                f"{fn.__name__}_arguments",
                __config__=ConfigDict(extra=extra, arbitrary_types_allowed=True),
                **fields,
            )
        self.empty = not params
        self.result = TypeAdapter(hints.get("return", Any))

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
            assert self.model is not None
            validated = self.model.model_validate(named)
            data = validated.model_dump(mode="json", exclude_unset=True)
            extras = [TypeAdapter(Any).dump_python(v, mode="json") for v in rest]
        except ValidationError as exc:
            raise SerializationError(f"{self.task_name}: invalid argument {one_line(exc)}") from exc
        except PydanticSerializationError as exc:
            raise SerializationError(f"{self.task_name}: argument not serializable: {exc}") from exc
        return extras, data

    def decode(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Validate arguments from the wire into the values to call the function with."""
        if self.empty:
            return [], {}
        if self.model is None:
            return list(args), dict(kwargs)
        validated = self.model.model_validate(kwargs)
        values = {name: getattr(validated, name) for name in validated.model_fields_set}
        if validated.model_extra:
            values.update(validated.model_extra)
        call_args = []
        for name in self.positional:
            if name not in self.positional_only or name not in values:
                break
            call_args.append(values.pop(name))
        return call_args + list(args), values

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
