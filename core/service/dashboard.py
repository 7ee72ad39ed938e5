"""The live terminal view of a running engine (demo, replay runs): progress, equity, positions."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.engine import CycleReport


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def money(v: Decimal | float, places: int = 2) -> str:
    return f"{float(v):,.{places}f}"


class Dashboard:
    """Progress bar plus a small table of equity and open positions, refreshed per cycle."""

    def __init__(self, console, total_cycles: int, start_equity: Decimal, quote: str) -> None:
        self.console = console
        self.start_equity = start_equity
        self.quote = quote
        self.progress = Progress(TextColumn("[bold]replay[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[when]}"), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("cycles", total=total_cycles, when="")
        self.positions: list = []
        self.last: CycleReport | None = None
        self.trades = 0
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> "Dashboard":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.update(self._render())
        self.live.__exit__(*exc)

    def update(self, report: CycleReport, positions: list) -> None:
        self.last, self.positions = report, positions
        self.trades += len(report.exits)
        self.progress.update(self.task, advance=1, when=_utc(report.ts_ms) + " UTC")
        self.live.update(self._render())

    def _render(self):
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("pair", "strategy", "amount", "entry", "stop", "target", "opened"):
            t.add_column(col, justify="right" if col in ("amount", "entry", "stop", "target") else "left")
        for p in self.positions[:8]:
            t.add_row(p.symbol, p.strategy, f"{p.amount.normalize():f}", f"{p.entry_price.normalize():f}",
                      f"{p.stop.normalize():f}", f"{p.target.normalize():f}", _utc(p.opened_ms))
        r = self.last
        if r is None:
            head = "waiting for the first scan..."
        else:
            change = (r.equity - self.start_equity) / self.start_equity * 100
            colour = "green" if change >= 0 else "red"
            head = (f"equity [bold]{money(r.equity)}[/] {self.quote} ([{colour}]{float(change):+.2f}%[/]) | "
                    f"cash {money(r.cash)} | open {r.open_positions} | closed trades {self.trades} | "
                    f"last scan {r.scan.pairs_scanned} pairs, {len(r.scan.opportunities)} signals, "
                    f"{r.scan.duration_s * 1000:.0f} ms")
            if r.halts:
                head += f" | [red]halted: {r.halts[0]}[/]"
        return Group(self.progress, head, t)
