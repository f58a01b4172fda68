"""TOML values to typed config fields: conversion with one problem line per bad value, and sections built
from tables (with "did you mean" for misspelt keys). Apart from ``loader`` so that ``checks`` can use it
without an import cycle."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

MISSING = object()
_INT_LIMIT = 2 ** 63  # integers are stored and computed as int64


def describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def convert(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """Convert a TOML value to ``hint``; append a problem and return MISSING when impossible."""
    origin = get_origin(hint)
    ok = True
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            ok = False
        else:
            return build(hint, value, _section_name(where), problems)
    elif origin is Literal:
        ok = value in get_args(hint)
    elif origin is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)):
            ok = False
        else:
            if len(args) == 2 and args[1] is Ellipsis:
                item_hints = [args[0]] * len(value)
            elif len(args) != len(value):
                problems.append(f"{where} must be {describe(hint)}, got {len(value)} values: {value!r}")
                return MISSING
            else:
                item_hints = list(args)
            items = [convert(v, h, f"{where}[{i}]", problems) for i, (v, h) in enumerate(zip(value, item_hints))]
            return MISSING if any(i is MISSING for i in items) else tuple(items)
    elif origin is dict:
        if not isinstance(value, dict):
            ok = False
        else:
            return {str(k): _frozen(v) if isinstance(v, list) else (v,) for k, v in value.items()}
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -_INT_LIMIT <= value < _INT_LIMIT:
            problems.append(f"{where} must be an integer below 2^63 in size, got {value}")
            return MISSING
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not (isinstance(value, int) or math.isfinite(value)):
            problems.append(f"{where} must be a finite number, got {value!r}")
            return MISSING
        if ok:
            return float(value)
    elif hint is str:
        ok = isinstance(value, str)
    elif origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        for option in args:  # the first type that takes the value without a problem
            attempt: list[str] = []
            converted = convert(value, option, where, attempt)
            if not attempt:
                return converted
        problems.append(f"{where} must be {' or '.join(describe(a) for a in args)}, got {value!r}")
        return MISSING
    if not ok:
        problems.append(f"{where} must be {describe(hint)}, got {value!r}")
        return MISSING
    return value


def _frozen(value: Any) -> Any:
    """Lists (nested too) as tuples, so grid values compare equal to the typed fields they set."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _section_name(where: str) -> str:
    """``[training] sampling`` -> ``training.sampling``; ``[vote]`` -> ``vote``."""
    head, _, key = where.partition("] ")
    head = head.lstrip("[").rstrip("]")
    return f"{head}.{key}" if key else head


def build(cls: type, table: dict[str, Any], section: str, problems: list[str]) -> Any:
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        where = f"[{section}] {key}" if section else f"[{key}]"
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"
            kind = "section" if not section else "key"
            problems.append(f"unknown {kind} [{section}] {key!r}{hint}" if section
                            else f"unknown {kind} [{key}]{hint}")
            continue
        converted = convert(value, hints[key], where, problems)
        if converted is not MISSING:
            kwargs[key] = converted
    try:
        return cls(**kwargs)
    except TypeError as err:  # a field left out because its value was wrong: defaults fill in
        problems.append(f"[{section}] {err}")
        return cls()
