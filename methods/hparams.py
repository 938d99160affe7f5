"""Hyper-parameter values checked where their names are: when a grid is resolved, before any job runs.

A method's `Hparams` dataclass is the one description of its hyper-parameters: each field's annotation gives
its type and `choice()` its allowed values, so `check_values` can reject `projected: current` or `lr: "0.1"`
with one line at parse time instead of failing inside every job of the grid.
"""
from __future__ import annotations

import dataclasses
import types
import typing

from data_prep.errors import ClreproError

_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def choice(default: str, options: tuple[str, ...]):
    """A string hyper-parameter that must be one of `options`."""
    assert default in options, (default, options)
    return dataclasses.field(default=default, metadata={"choices": tuple(options)})


def _accepts(kind: type, value) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _kinds(annotation) -> tuple[type, ...]:
    """The plain types an annotation allows (`int | None` -> (int, NoneType)); () = not checked (e.g. dict)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        parts = typing.get_args(annotation)
    else:
        parts = (annotation,)
    return tuple(parts) if all(p in _KINDS for p in parts) else ()


def check_values(method: str, cls: type, values: dict) -> None:
    """Raise one line naming the first value of `values` its field's type or choices do not allow."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        kinds = _kinds(hints[f.name])
        if kinds and not any(_accepts(k, value) for k in kinds):
            wanted = " or ".join(_KINDS[k] for k in kinds)
            raise ClreproError(f"hyper-parameter {method}.{f.name} must be {wanted}, not {value!r}; "
                               f"fix it in the protocol file or the --config hparams override")
        options = f.metadata.get("choices")
        if options is not None and value not in options:
            raise ClreproError(f"hyper-parameter {method}.{f.name} must be one of {list(options)}, not {value!r}; "
                               f"fix it in the protocol file or the --config hparams override")
