"""The live terminal view of a running engine (demo, replay runs): progress, equity, positions."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from core.engine.hooks import CycleReport
from core.service.tables import fit_table, num


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def money(v: Decimal | float, places: int = 2) -> str:
    return f"{float(v):,.{places}f}"


class _LiveLogHandler(logging.Handler):
    """Log records printed through the live display's console, above the redrawn area.

    A handler writing to stderr directly (logging.basicConfig) interleaves with the frames rich
    redraws: stacked frames and warnings glued to table rows."""

    def __init__(self, console, level: int) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            style = "red" if record.levelno >= logging.ERROR else "yellow" if record.levelno >= logging.WARNING else ""
            self.console.print(Text(text, style=style), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


class Dashboard:
    """Progress bar plus a small table of equity and open positions, refreshed per cycle.

    While it is up, the root logger's console handlers are swapped for one that prints through
    the display (and restored afterwards), so log lines never corrupt the frames."""

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
        self._swapped: list[logging.Handler] = []
        self._handler: logging.Handler | None = None

    def __enter__(self) -> "Dashboard":
        self.live.__enter__()
        self._route_logging()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.live.update(self._render())
        finally:
            self._restore_logging()
            self.live.__exit__(*exc)

    def _route_logging(self) -> None:
        root = logging.getLogger()
        stream_handlers = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                           and not isinstance(h, logging.FileHandler)]
        level = min((h.level for h in stream_handlers), default=logging.WARNING)
        self._handler = _LiveLogHandler(self.live.console, level)
        fmt = stream_handlers[0].formatter if stream_handlers else None
        self._handler.setFormatter(fmt or logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for h in stream_handlers:
            for f in h.filters:  # keep the secret redaction and any other filter
                self._handler.addFilter(f)
            root.removeHandler(h)
        self._swapped = stream_handlers
        root.addHandler(self._handler)

    def _restore_logging(self) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            self._handler = None
        for h in self._swapped:
            root.addHandler(h)
        self._swapped = []

    def update(self, report: CycleReport, positions: list) -> None:
        self.last, self.positions = report, positions
        self.trades += len(report.exits)
        self.progress.update(self.task, advance=1, when=_utc(report.ts_ms) + " UTC")
        self.live.update(self._render())

    def _table(self):
        prices = self.last.prices if self.last is not None else {}
        right = {"justify": "right"}
        cols = [("pair", {}), ("strategy", {}), ("amount", right), ("entry", right), ("last", right),
                ("unrealised", right), ("stop", right), ("target", right), ("opened", {})]
        rows = []
        for p in self.positions[:8]:
            last = prices.get(p.symbol)
            unreal = "-" if last is None else money((Decimal(str(last)) - p.entry_price) * p.amount - p.entry_fees)
            rows.append([p.symbol, p.strategy, num(p.amount), num(p.entry_price), num(last), unreal,
                         num(p.stop), num(p.target), _utc(p.opened_ms)])
        return fit_table(self.console, cols, rows, drop=("opened", "strategy", "amount", "target", "stop", "entry"),
                         show_header=True, header_style="bold", box=None, pad_edge=False)

    def _render(self):
        r = self.last
        if r is None:
            head = Text("waiting for the first scan: compiling the numba kernels (first run only, ~15 s; "
                        "`pitrader warmup` does it ahead)...")
            return Group(self.progress, head)
        change = (r.equity - self.start_equity) / self.start_equity * 100
        colour = "green" if change >= 0 else "red"
        head = (f"equity [bold]{money(r.equity)}[/] {self.quote} ([{colour}]{float(change):+.2f}%[/]) | "
                f"cash {money(r.cash)} | open {r.open_positions} | closed trades {self.trades} | "
                f"last scan {r.scan.pairs_scanned} pairs, {len(r.scan.opportunities)} signals, "
                f"{r.scan.duration_s * 1000:.0f} ms")
        if r.halts:
            head += f" | [red]halted: {r.halts[0]}[/]"
        return Group(self.progress, head, self._table()) if self.positions else Group(self.progress, head)
