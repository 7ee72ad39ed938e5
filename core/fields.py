"""Config field declarations and their validation: the leaf that config and strategy plugins share.

A field's type and metadata (``min``, ``max``, ``gt``, ``choices``, ``pattern``, ``item_choices``)
drive validation, so adding a key is one declaration. Every problem is one line naming the
file, the dotted key and what is expected; the CLI turns it into exit 78.
"""
from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from decimal import Decimal
from typing import Any

MAX_ITEMS = 1000  # list and object lengths: a Pi config never needs more; 800k patterns took minutes
MAX_DIGITS = 30  # digits of an integer in config.json: beyond any real setting, before big-int costs


class BigNumber(str):
    """A JSON number too long to be a setting (the loader's parse hook keeps it as text, so the
    error can name its key instead of Python's int/float conversion failing without one)."""


class ConfigError(Exception):
    """A bad configuration or secrets value; ``str()`` is the one-line message for the user."""

    def __init__(self, file: str | os.PathLike, key: str, expected: str) -> None:
        self.file, self.key, self.expected = str(file), key, expected
        super().__init__(f"{self.file}: {key}: {expected}")


def opt(default: Any, help: str, **checks: Any) -> Any:
    """A config field: default, a one-line description (for the README/reference) and checks."""
    meta = {"help": help, **checks}
    if isinstance(default, list):  # immutable, as the loader makes them: a frozen config stays frozen
        return field(default_factory=lambda d=default: tuple(d), metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda d=default: types.MappingProxyType(dict(d)), metadata=meta)
    return field(default=default, metadata=meta)


# --- generic validation -------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", Decimal: "a number", str: "a string",
             list: "a list", dict: "an object"}
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return names.get(tp, "an object")


def _coerce(value: Any, tp: Any, file: str, key: str) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], file, key)
    bad = ConfigError(file, key, f"expected {_type_name(tp)}, got {show(value)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, BigNumber):
        raise ConfigError(file, key, f"expected a number of at most {MAX_DIGITS} digits, got one of "
                                     f"{len(value):,} characters")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp in (float, Decimal):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value) if tp is float else Decimal(str(value))
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(value, (list, dict)) and len(value) > MAX_ITEMS:
        raise ConfigError(file, key, f"expected at most {MAX_ITEMS} entries, got {len(value):,}")
    if tp is list:
        if not isinstance(value, list):
            raise bad
        return tuple(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return types.MappingProxyType(dict(value))
    if is_dataclass(tp):
        return _build(tp, value, file, key)
    raise bad


def show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, Decimal) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(value: Any, meta: dict, file: str, key: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(file, key, f"expected one of {', '.join(map(json.dumps, meta['choices']))}, got {show(value)}")
    if "min_items" in meta and len(value) < meta["min_items"]:
        raise ConfigError(file, key, meta.get("min_items_why", f"expected at least {meta['min_items']} entries"))
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        raise ConfigError(file, key, f"expected {meta['help']} (format {meta['pattern']}), got {show(value)}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(file, key, f"expected a value >= {meta['min']}, got {show(value)}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(file, key, f"expected a value > {meta['gt']}, got {show(value)}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(file, key, f"expected a value <= {meta['max']}, got {show(value)}")
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(file, f"{key}[{i}]", f"expected a string, got {show(item)}")
            if "item_choices" in meta and item not in meta["item_choices"]:
                raise ConfigError(file, f"{key}[{i}]",
                                  f"expected one of {', '.join(meta['item_choices'])}, got {show(item)}")


def _build(cls: type, data: Any, file: str, prefix: str) -> Any:
    where = prefix or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(file, where, f"expected an object, got {show(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for k in data:
        if k not in known:
            raise ConfigError(file, f"{prefix}.{k}" if prefix else k,
                              f"unknown key (known keys here: {', '.join(sorted(known))})")
    values = {}
    for name, f in known.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _coerce(data[name], hints[name], file, key)
        else:
            values[name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        _check(values[name], f.metadata, file, key)
    return cls(**values)


def build_section(cls: type, data: Any, file: str, prefix: str) -> Any:
    """Validate ``data`` into the frozen dataclass ``cls`` by its field metadata, exactly like a
    config.json section; errors name ``prefix.<field>``. Plugins (strategy params) use this."""
    return _build(cls, data, file, prefix)
