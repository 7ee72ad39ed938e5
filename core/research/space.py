"""The search space file of `pitrader sweep` / `validate`, and dotted config keys.

A space file is JSON (see research/spaces/example.json)::

    {"fixed":  {"risk.max_drawdown_pct": 1.0},
     "params": {"strategies.params.momentum.roc_period": {"type": "int", "low": 5, "high": 40},
                "risk.risk_per_trade_pct": {"type": "float", "low": 0.002, "high": 0.03, "log": true},
                "strategies.enabled": {"type": "choice", "choices": [["momentum"], ["momentum", "mean_reversion"]]}}}

Keys are dotted config.json keys. ``fixed`` values apply to every trial (e.g. lift the halts
while searching), ``params`` are searched: ``int`` and ``float`` ranges (inclusive, optional
``step`` or ``log``) and ``choice`` among any JSON values. Every problem is one line naming the
file and the key (``SpaceError``; the commands exit 78, a missing file 66). Each bound and
choice must pass its config key's own checks; the checks that relate several keys (a stop
wider than the target, a strategy's fast period above its slow one) depend on what a trial
draws, so a trial that breaks one fails with the config's reason instead.

No Optuna here: worker processes and the plain config checks do not need it.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_SPACE_BYTES = 1 << 20


class SpaceError(Exception):
    """A bad space file; ``str()`` is the one line for the user (file, key, what was expected)."""

    def __init__(self, file: str | Path, key: str, expected: str, missing: bool = False) -> None:
        self.file, self.key, self.expected, self.missing = str(file), key, expected, missing
        super().__init__(f"{self.file}: {key}: {expected}")


@dataclass(frozen=True)
class Param:
    key: str  # dotted config key
    kind: str  # int | float | choice
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()  # JSON values (any), for kind == "choice"


@dataclass(frozen=True)
class Space:
    file: str
    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Stable text of what is searched (part of a study's identity)."""
        return json.dumps({"fixed": self.fixed, "params": [vars(p) | {"choices": list(p.choices)}
                                                           for p in self.params]}, sort_keys=True)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _param(file: str, key: str, spec: Any) -> Param:
    where = f"params.{key}"
    if not isinstance(spec, dict):
        raise SpaceError(file, where, 'expected an object such as {"type": "int", "low": 5, "high": 40}')
    kind = spec.get("type")
    allowed = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
               "choice": {"type", "choices"}}
    if kind not in allowed:
        raise SpaceError(file, f"{where}.type", f'expected "int", "float" or "choice", got {json.dumps(kind)}')
    extra = sorted(set(spec) - allowed[kind])
    if extra:
        raise SpaceError(file, f"{where}.{extra[0]}", f"unknown for type {kind} (known: {', '.join(sorted(allowed[kind]))})")
    if kind == "choice":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(file, f"{where}.choices", "expected a non-empty list of values")
        texts = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(texts)) != len(texts):
            raise SpaceError(file, f"{where}.choices", "expected each value once")
        return Param(key, "choice", choices=tuple(choices))
    for b in ("low", "high"):
        if b not in spec:
            raise SpaceError(file, f"{where}.{b}", "missing (a range needs low and high)")
        v = spec[b]
        if not _num(v) or (kind == "int" and not isinstance(v, int)):
            raise SpaceError(file, f"{where}.{b}", f"expected {'an integer' if kind == 'int' else 'a number'}, got {json.dumps(v)}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(file, f"{where}.log", f"expected true or false, got {json.dumps(log)}")
    if high < low:
        raise SpaceError(file, f"{where}.high", f"expected at least low ({low}), got {high}")
    if step is not None:
        if not _num(step) or step <= 0 or (kind == "int" and not isinstance(step, int)):
            raise SpaceError(file, f"{where}.step", f"expected a {'whole ' if kind == 'int' else ''}number > 0, got {json.dumps(step)}")
        if log:
            raise SpaceError(file, f"{where}.step", "expected either step or log, not both")
    if log and low <= 0:
        raise SpaceError(file, f"{where}.low", f"expected a value > 0 on a log scale, got {low}")
    return Param(key, kind, low=low, high=high, step=step, log=log)


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPACE_BYTES + 1)
    except FileNotFoundError:
        raise SpaceError(path, "(file)", "not found", missing=True) from None
    except OSError as exc:
        raise SpaceError(path, "(file)", f"cannot be read ({exc.strerror or exc.__class__.__name__})", missing=True) from None
    if len(raw) > MAX_SPACE_BYTES:
        raise SpaceError(path, "(file)", f"expected at most {MAX_SPACE_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpaceError(path, "(file)", "expected UTF-8 text") from None


def parse_space(text: str, file: str = "<space>") -> Space:
    """The space file's structure (no config checks: see ``check_space``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpaceError(file, f"line {exc.lineno} column {exc.colno}", f"expected valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SpaceError(file, "(top level)", 'expected an object with "params" (and optionally "fixed")')
    for k in data:
        if k not in ("params", "fixed", "description"):
            raise SpaceError(file, k, "unknown key (known: description, fixed, params)")
    params, fixed = data.get("params"), data.get("fixed", {})
    if not isinstance(params, dict) or not params:
        raise SpaceError(file, "params", "expected an object of at least one dotted config key to search")
    if not isinstance(fixed, dict):
        raise SpaceError(file, "fixed", "expected an object of dotted config keys and values")
    for k in fixed:
        if k in params:
            raise SpaceError(file, f"fixed.{k}", "also in params: a key is either fixed or searched")
    return Space(file=file, params=tuple(_param(file, k, v) for k, v in params.items()), fixed=dict(fixed))


def load_space(path: str | Path, base: dict[str, Any] | None = None) -> Space:
    """Read, parse and (when ``base`` is given, a config dict) check a space file."""
    space = parse_space(read_text(path), str(path))
    if base is not None:
        check_space(space, base)
    return space


# --- dotted keys ---------------------------------------------------------------------------------

def _open_maps(parts: list[str]) -> bool:
    """``strategies.params.<name>`` and ``strategies.weights.<name>`` may be absent from the base."""
    return len(parts) >= 2 and parts[0] == "strategies" and parts[1] in ("params", "weights")


def set_dotted(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a config dict, creating the open maps' entries (strategy params, weights)."""
    parts = key.split(".")
    node = doc
    for i, part in enumerate(parts[:-1]):
        if part not in node and _open_maps(parts[:i + 1]):
            node[part] = {}
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            raise KeyError(".".join(parts[:i + 1]))
        node = nxt
    if parts[-1] not in node and not _open_maps(parts[:-1]):
        raise KeyError(key)
    node[parts[-1]] = copy.deepcopy(value)


def apply(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config dict ``base`` with dotted ``values`` set."""
    doc = copy.deepcopy(base)
    for k, v in values.items():
        set_dotted(doc, k, v)
    return doc


def _known_key(base: dict[str, Any], key: str) -> str | None:
    """None when ``key`` names a config value, else what is wrong."""
    parts = key.split(".")
    if not all(parts):
        return "expected a dotted config key such as risk.risk_per_trade_pct"
    if _open_maps(parts):
        from strategies import registry
        from dataclasses import fields

        names = registry.available()
        if len(parts) < 3 or parts[2] not in names:
            return f"expected strategies.{parts[1]}.<strategy>{'.<param>' if parts[1] == 'params' else ''} " \
                   f"with a strategy from {', '.join(names)}"
        if parts[1] == "weights":
            return None if len(parts) == 3 else "expected strategies.weights.<strategy>"
        known = [f.name for f in fields(registry.strategy_class(parts[2]).Params)]
        if len(parts) != 4 or parts[3] not in known:
            return f"unknown parameter (known for {parts[2]}: {', '.join(known)})"
        return None
    node: Any = base
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "the top level"
            keys = ", ".join(sorted(node)) if isinstance(node, dict) else "(not an object)"
            return f"unknown config key (known under {where}: {keys})"
        node = node[part]
    if isinstance(node, dict) and key not in ("strategies.params", "strategies.weights"):
        return "names a config section; expected a single setting such as " + f"{key}.{next(iter(node), 'x')}"
    return None


def _field_checks(doc: dict[str, Any], file: str) -> None:
    """The per-key checks of config.json and of the strategies' parameters, without the checks that
    relate several keys (those depend on the combination a trial draws)."""
    from core.config import Config
    from core.fields import build_section
    from strategies import registry

    build_section(Config, doc, file, "")
    for name, params in doc.get("strategies", {}).get("params", {}).items():
        if name in registry.available():
            build_section(registry.strategy_class(name).Params, dict(params or {}), file, f"strategies.params.{name}")


def check_space(space: Space, base: dict[str, Any]) -> None:
    """Every key is a config setting and every bound and choice passes that setting's own checks."""
    from core.config import ConfigError

    def check(where: str, key: str, value: Any, what: str) -> None:
        try:
            _field_checks(apply(base, {**space.fixed, key: value}), space.file)
        except ConfigError as exc:
            if exc.key == key or exc.key.startswith(key + "[") or exc.key.startswith(key + "."):
                raise SpaceError(space.file, where, f"{what} {json.dumps(value)}: {exc.expected}") from None
            raise SpaceError(space.file, where, f"{what} {json.dumps(value)}: {exc.key}: {exc.expected}") from None

    for k in space.fixed:
        problem = _known_key(base, k)
        if problem:
            raise SpaceError(space.file, f"fixed.{k}", problem)
    try:
        _field_checks(apply(base, space.fixed), space.file)
    except ConfigError as exc:
        raise SpaceError(space.file, f"fixed.{exc.key}" if exc.key in space.fixed else exc.key, exc.expected) from None
    for p in space.params:
        where = f"params.{p.key}"
        problem = _known_key(base, p.key)
        if problem:
            raise SpaceError(space.file, where, problem)
        if p.kind == "choice":
            for c in p.choices:
                check(where, p.key, c, "choice")
        else:
            check(where, p.key, p.low, "low")
            check(where, p.key, p.high, "high")
