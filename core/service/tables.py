"""Terminal tables that never cut a number or a symbol, at any width (SSH at 80 columns, pipes).

rich shrinks a table that is wider than the console by cutting cells: "WAVES/USDT" became
"WAVES/USD", 0.045147 "0.04514", rank 10 "1", with nothing on screen saying so. Here a table is
rendered off-screen first; when a cell's text does not come out whole, the least important
column is dropped and it is tried again, and when even the essential columns do not fit, each
row becomes a small vertical block (``key  value`` lines), which fits any width.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

Cell = str | Text


def num(x: float | None, digits: int = 12) -> str:
    """A price or amount in full (``digits`` significant digits drop only float noise such as
    0.060916000000000004), never in exponent form ("0.00001234")."""
    if x is None:
        return "-"
    return np.format_float_positional(float(x), precision=digits, unique=True, fractional=False, trim="-")


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(cell).plain if "[" in cell else cell


def render_text(console: Console, renderable: RenderableType) -> str:
    """What ``renderable`` prints at ``console.width`` (no colours)."""
    probe = Console(width=console.width, file=io.StringIO(), color_system=None, legacy_windows=False,
                    force_terminal=False, highlight=False, soft_wrap=False)
    probe.print(renderable)
    return probe.file.getvalue()  # type: ignore[attr-defined]


def whole(console: Console, renderable: RenderableType, cells: Sequence[str]) -> bool:
    """True when every one of ``cells`` appears unbroken in the rendered output."""
    out = render_text(console, renderable)
    return all(c in out for c in cells if c)


def fit_table(console: Console, columns: Sequence[tuple[str, dict]], rows: Sequence[Sequence[Cell]],
              drop: Sequence[str] = (), title: str | None = None, wrap: Sequence[str] = (),
              **table_kw) -> RenderableType:
    """The widest table of ``columns`` (name, add_column kwargs) whose cells print whole.

    Columns named in ``drop`` go first to last until it fits; columns in ``wrap`` hold prose and may
    wrap between words. If nothing fits, the rows are printed vertically (every value kept)."""
    names = [n for n, _ in columns]
    keep = list(names)

    def build(shown: list[str]) -> tuple[Table, list[str]]:
        t = Table(title=title, title_justify="left", **table_kw)
        idx = [names.index(n) for n in shown]
        for i in idx:
            name, kw = columns[i]
            kw = dict(kw)
            kw.setdefault("no_wrap", name not in wrap)
            kw.setdefault("overflow", "fold")
            t.add_column(name, **kw)
        must = []
        for row in rows:
            cells = [row[i] for i in idx]
            t.add_row(*cells)
            must += [_plain(c) for c, i in zip(cells, idx) if names[i] not in wrap]
        return t, must

    plain = [[_plain(c) for c in row] for row in rows]
    widths = [max([cell_len(n)] + [max((cell_len(x) for x in r[i].split("\n")), default=0) for r in plain])
              for i, n in enumerate(names)]
    for name in [None, *drop]:
        if name is not None:
            keep.remove(name)
        idx = [names.index(n) for n in keep]
        if not any(names[i] in wrap for i in idx):
            # widths + padding + rules, an upper bound for every box style: when it fits, rich
            # shrinks nothing (no off-screen render needed: the live view redraws this per cycle)
            if sum(widths[i] for i in idx) + 3 * len(idx) + 1 <= console.width:
                return build(keep)[0]
            continue
        table, must = build(keep)
        if whole(console, table, must + [n for n in keep if n not in wrap]):
            return table
    return vertical(console, names, rows, title)


def vertical(console: Console, names: Sequence[str], rows: Sequence[Sequence[Cell]],
             title: str | None = None) -> RenderableType:
    """One block per row: ``name  value`` lines; values wrap (whole words) but are never cut."""
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="italic"))
    pad = max((len(n) for n in names), default=0)
    for k, row in enumerate(rows):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, min_width=pad)
        grid.add_column(overflow="fold")
        for name, cell in zip(names, row):
            grid.add_row(name, cell)
        if k:
            parts.append(Text(""))
        parts.append(grid)
    return Group(*parts)


def fit_first(console: Console, options: Sequence[Callable[[], tuple[RenderableType, Sequence[str]]]]) \
        -> RenderableType:
    """The first of several layouts (each returns the renderable and the texts that must stay whole)
    that prints them whole; else the last one."""
    last = None
    for make in options:
        last, must = make()
        if whole(console, last, must):
            return last
    return last
