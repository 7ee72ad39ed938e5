"""Discovery of strategy modules and validation of their config (first version, see issue 3)."""
from __future__ import annotations

import importlib
import pkgutil

from core.config import ConfigError

_INFRA = {"base", "registry"}


def available() -> list[str]:
    import strategies

    return sorted(m.name for m in pkgutil.iter_modules(strategies.__path__) if m.name not in _INFRA
                  and not m.name.startswith("_"))


def check_config(section, file: str) -> None:
    names = available()
    for i, name in enumerate(section.enabled):
        if name not in names:
            raise ConfigError(file, f"strategies.enabled[{i}]", f"expected one of {', '.join(names) or '(none installed)'}, got \"{name}\"")
    for name in list(section.weights) + list(section.params):
        if name not in names:
            raise ConfigError(file, f"strategies.{'weights' if name in section.weights else 'params'}.{name}",
                              f"unknown strategy (installed: {', '.join(names)})")
