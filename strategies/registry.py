"""Discovery, validation and construction of strategy plugins.

Every module in the ``strategies`` package except ``base``, ``registry`` and ``_private``
ones is a strategy, named after the module. Only strategies that config.json mentions are
imported, so a broken plugin that nobody enables cannot stop the appliance.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from collections.abc import Mapping
from typing import Any

from core.fields import ConfigError, build_section
from strategies.base import Strategy

log = logging.getLogger(__name__)

_INFRA = {"base", "registry"}


def available() -> list[str]:
    """Names of the strategy modules installed in the package."""
    import strategies

    return sorted(m.name for m in pkgutil.iter_modules(strategies.__path__)
                  if m.name not in _INFRA and not m.name.startswith("_"))


def strategy_class(name: str) -> type[Strategy]:
    """Import ``strategies.<name>`` and return its one ``Strategy`` subclass."""
    module = importlib.import_module(f"strategies.{name}")
    found = [obj for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, Strategy) and obj.__module__ == module.__name__
             and not inspect.isabstract(obj)]
    if len(found) != 1:
        raise TypeError(f"strategies/{name}.py must define exactly one Strategy subclass, found {len(found)}")
    return found[0]


def _load(name: str, file: str, key: str) -> type[Strategy]:
    try:
        return strategy_class(name)
    except Exception as exc:  # a plugin's own bug: report it as the config entry that needs it
        raise ConfigError(file, key, f"strategy module failed to load ({exc.__class__.__name__}: {exc})") from None


def _params(cls: type[Strategy], data: Any, file: str, name: str) -> Any:
    prefix = f"strategies.params.{name}"
    if data is None:
        data = {}
    elif isinstance(data, Mapping):  # config sections arrive as read-only mappings
        data = dict(data)
    params = build_section(cls.Params, data, file, prefix)
    for param, expected in cls.check_params(params):
        raise ConfigError(file, f"{prefix}.{param}", expected)
    return params


def check_config(section, file: str) -> None:
    """Validate ``strategies.*``: names installed, each enabled once, params valid per plugin."""
    names = available()
    installed = ", ".join(names) or "(none installed)"
    seen: set[str] = set()
    for i, name in enumerate(section.enabled):
        if name not in names:
            raise ConfigError(file, f"strategies.enabled[{i}]", f"expected one of {installed}, got \"{name}\"")
        if name in seen:
            raise ConfigError(file, f"strategies.enabled[{i}]", f"expected each strategy once, \"{name}\" repeats")
        seen.add(name)
    for kind in ("weights", "params"):
        for name in getattr(section, kind):
            if name not in names:
                raise ConfigError(file, f"strategies.{kind}.{name}", f"unknown strategy (installed: {installed})")
    for i, name in enumerate(section.enabled):
        cls = _load(name, file, f"strategies.enabled[{i}]")
        _params(cls, section.params.get(name), file, name)
    for name, data in section.params.items():
        if name not in seen:
            _params(_load(name, file, f"strategies.params.{name}"), data, file, name)


def params_of(section, name: str, file: str = "<config>") -> Any:
    """The validated params of one installed strategy (configured or default)."""
    return _params(_load(name, file, f"strategies.params.{name}"), section.params.get(name), file, name)


def build(section, file: str = "<config>") -> list[Strategy]:
    """Instances of the enabled strategies, in config order, with validated params."""
    out = []
    for i, name in enumerate(section.enabled):
        cls = _load(name, file, f"strategies.enabled[{i}]")
        out.append(cls(_params(cls, section.params.get(name), file, name)))
    return out


def weights(section) -> Mapping[str, float]:
    """Ranking weight per enabled strategy (1.0 unless configured)."""
    return {name: float(section.weights.get(name, 1.0)) for name in section.enabled}


def params_reference() -> list[tuple[str, str, str]]:
    """(``strategies.params.<name>.<param>``, default, description) for every installed strategy:
    the README's strategy parameter reference."""
    import json
    from dataclasses import MISSING, fields

    rows = []
    for name in available():
        cls = strategy_class(name)
        for f in fields(cls.Params):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f"strategies.params.{name}.{f.name}", json.dumps(default), f.metadata.get("help", "")))
    return rows
