"""Load one ccxt exchange class without importing the other ~100 exchanges.

`import ccxt.async_support` imports every exchange ccxt ships, sync and async: ~90 MB of RSS,
a third of the memory budget on a Pi. Here ccxt's own package ``__init__`` files run with
their per-exchange import lines left out, and any other exchange is still importable on first
attribute access (PEP 562 ``__getattr__``). If ccxt's layout ever differs from what this
expects, the plain full import is used instead: slower to load, never broken.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys
from types import ModuleType

log = logging.getLogger(__name__)


def _lean_package(name: str) -> ModuleType:
    """Execute package ``name``'s __init__ minus its `from name.<x> import <x>` exchange lines."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(name)
    exchange_line = re.compile(rf"^from {re.escape(name)}\.(\w+) import (\w+)\b.*$", re.M)
    with open(spec.origin, encoding="utf-8") as fh:
        source = exchange_line.sub(lambda m: "" if m.group(1) == m.group(2) else m.group(0), fh.read())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(source, spec.origin, "exec"), module.__dict__)  # noqa: S102 - ccxt's own file
    except BaseException:
        del sys.modules[name]
        raise

    def __getattr__(attr: str):  # other exchanges: import on first use, as the full package would have
        try:
            sub = importlib.import_module(f"{name}.{attr}")
        except ImportError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None
        value = getattr(sub, attr, sub)
        setattr(module, attr, value)
        return value

    module.__getattr__ = __getattr__
    return module


def async_support() -> ModuleType:
    """``ccxt.async_support`` with only the exchanges actually used imported. Call it before any
    other ccxt import (importing any ccxt submodule runs the full package ``__init__`` first)."""
    try:
        _lean_package("ccxt")
        return _lean_package("ccxt.async_support")
    except Exception as exc:  # noqa: BLE001 - any surprise: fall back to the full import
        log.debug("lean ccxt import failed (%s); importing all of ccxt", exc)
        for mod in [m for m in sys.modules if m == "ccxt" or m.startswith("ccxt.")]:
            del sys.modules[mod]
        import ccxt.async_support as package

        return package
