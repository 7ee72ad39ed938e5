"""The package order of ``core`` (see ``core/__init__.py``): every import, at module level, inside
functions or under TYPE_CHECKING, points down the pipeline, and no modules import each other in a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import from its own layer or a lower one, never a higher one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("core", "core.models", "core.clock", "core.log", "core.indicators", "core.fields",
                "core.timeframes", "core.events", "core.exitcodes")),
    ("strategies", ("strategies",)),
    ("config", ("core.config", "core.secrets")),
    ("store", ("core.store",)),
    ("exchange", ("core.exchange",)),
    ("scan", ("core.scan",)),
    ("trading", ("core.trading",)),
    ("tax", ("core.tax",)),
    ("engine", ("core.engine",)),
    ("service, backtest", ("core.service", "core.notify", "core.backtest")),
    ("research", ("core.research",)),
    ("commands", ("core.commands", "core.cli", "core.__main__")),
]
# Optional research extras: the appliance must run without them installed.
RESEARCH_ONLY = ("optuna", "dask", "distributed")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in ("core", "strategies") for p in sorted((ROOT / top).rglob("*.py"))}


def _imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, wherever the statement stands (functions, TYPE_CHECKING)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from core.trading import risk`
    return out


def _layer(mod: str) -> int | None:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len and not (p == "core" and mod != "core"):
                best, best_len = i, len(p)
    return best


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {i for i in _imports(p, m) if i in mods and i != m} for m, p in mods.items()}


def test_every_module_has_a_layer():
    assert [m for m in _modules() if _layer(m) is None] == []


def test_imports_point_down_the_pipeline():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            if _layer(dep) > _layer(mod):
                bad.append(f"{mod} ({LAYERS[_layer(mod)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    assert bad == []


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_appliance_never_imports_research_extras():
    bad = [f"{m} imports {i}" for m, p in _modules().items() if not m.startswith("core.research")
           for i in _imports(p, m) if i.split(".")[0] in RESEARCH_ONLY]
    assert bad == []


@pytest.mark.parametrize("source, expected", [
    ("from core.trading import risk\n", {"core.trading", "core.trading.risk"}),
    ("def f():\n    import core.engine\n", {"core.engine"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core.scan.scanner import Scanner\n",
     {"typing", "typing.TYPE_CHECKING", "core.scan.scanner", "core.scan.scanner.Scanner"}),
])
def test_the_parser_sees_every_kind_of_import(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(path, "core.x") == expected
