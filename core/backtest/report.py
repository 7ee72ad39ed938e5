"""The backtest report: numbers for machines (``--json``) and a page for people (terminal, HTML, SVG).

Figures come from ``core.trading.stats`` (trade_stats, group_stats, per_trade) over the closed positions
and the equity snapshots the engine stored, one per cycle. JSON keys: exactly those of DESIGN.md
first (``pairs, candles, duration_s, trades, win_rate, profit_factor, pnl, fees, sharpe, sortino,
max_drawdown, by_strategy``), then extras. Numbers are JSON numbers; a ratio that does not exist
is ``null`` (profit factor without a losing trade, Sharpe with fewer than two returns). Money is
in the quote currency, ratios are fractions (0.283 = 28.3 %). Only ``duration_s`` depends on the
machine: two runs over the same data and config print the same JSON otherwise.
"""
from __future__ import annotations

import io
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from core.backtest.runner import BacktestResult, exit_reasons, iso
from core.trading.stats import TradeStats, group_stats, per_trade, trade_stats

EIGHTHS = " ▁▂▃▄▅▆▇█"
SHOWN_PAIRS = 8  # best and worst pairs in the terminal table (all of them in --json)
SHOWN_TRADES = 5


def stats_of(result: BacktestResult) -> TradeStats:
    return trade_stats(result.closed, result.curve, result.cfg.paper.starting_balance)


def _num(x: Decimal | float | None) -> float | None:
    return None if x is None else float(x)


def by_strategy(result: BacktestResult) -> dict[str, dict[str, Any]]:
    """Every enabled strategy, traded or not, then any other that owns a trade (same keys each)."""
    groups = group_stats(result.closed, lambda p: p.strategy)
    empty = {"trades": 0, "wins": 0, "win_rate": 0.0, "pnl": 0.0, "fees": 0.0, "profit_factor": None,
             "best": None, "worst": None}
    out = {name: groups.get(name, dict(empty)) for name in result.cfg.strategies.enabled}
    out.update({k: v for k, v in groups.items() if k not in out})
    return out


def to_json(result: BacktestResult, stats: TradeStats | None = None) -> dict[str, Any]:
    s = stats or stats_of(result)
    trades = per_trade(result.closed)
    ranked = sorted(trades, key=lambda t: (-t["pnl"], t["id"]))
    doc: dict[str, Any] = {
        "pairs": result.pairs, "candles": result.candles, "duration_s": round(result.duration_s, 3),
        "trades": s.trades, "win_rate": s.win_rate, "profit_factor": s.profit_factor, "pnl": float(s.pnl),
        "fees": float(s.fees), "sharpe": s.sharpe, "sortino": s.sortino, "max_drawdown": s.max_drawdown,
        "by_strategy": by_strategy(result),
    }
    doc.update({
        "timeframe": result.timeframe, "from": iso(result.start_ms), "to": iso(result.end_ms),
        "cycles": result.cycles, "interrupted": result.interrupted,
        "strategies": list(result.cfg.strategies.enabled), "quote": result.cfg.universe.quote,
        "start_equity": float(s.start_equity), "end_equity": float(s.end_equity), "return": s.return_pct,
        "wins": s.wins, "losses": s.losses, "avg_pnl": _num(s.avg_pnl),
        "max_drawdown_duration_s": s.max_drawdown_duration_ms / 1000, "exposure": s.exposure,
        "avg_hold_s": None if s.avg_hold_ms is None else s.avg_hold_ms / 1000,
        "signals": result.signals, "closed_at_end": result.closed_at_end,
        "exit_reasons": exit_reasons(result.closed), "rejections": result.rejections,
        "halts": [{"at": iso(ts), "halt": text} for ts, text in result.halts],
        "by_pair": group_stats(result.closed, lambda p: p.symbol),
        "best_trades": ranked[:SHOWN_TRADES], "worst_trades": ranked[::-1][:SHOWN_TRADES],
        "verified_cycles": [iso(t) for t in result.verified],
    })
    return doc


# --- charts --------------------------------------------------------------------------------------

def _buckets(curve: list[tuple[int, Decimal]], width: int) -> list[list[float]]:
    values = [float(e) for _, e in curve]
    if not values:
        return []
    width = max(1, min(width, len(values)))
    return [values[i * len(values) // width:(i + 1) * len(values) // width] for i in range(width)]


def column_chart(levels: list[float], height: int, style: str, hanging: bool = False) -> list[Text]:
    """Rows of a block chart: ``levels`` in 0..1 per column, eighth-block resolution (halves hanging)."""
    rows = []
    for row in range(height):
        line = Text()
        for lv in levels:
            units = lv * height
            filled = units - (row if hanging else height - 1 - row)
            if filled >= 1:
                ch = "█"
            elif filled <= 0:
                ch = " "
            elif hanging:
                ch = "▀" if filled >= 0.5 else ("▔" if filled >= 0.125 else " ")
            else:
                ch = EIGHTHS[min(8, max(0, round(filled * 8)))]
            line.append(ch, style=style)
        rows.append(line)
    return rows


def _axis(rows: list[Text], labels: dict[int, str], pad: int) -> list[Text]:
    out = []
    for i, r in enumerate(rows):
        t = Text(labels.get(i, "").rjust(pad) + " │", style="dim")
        t.append_text(r)
        out.append(t)
    return out


def _dates(start_ms: int, end_ms: int, width: int, pad: int) -> Text:
    a = datetime.fromtimestamp(start_ms / 1000, timezone.utc).strftime("%Y-%m-%d")
    b = datetime.fromtimestamp(end_ms / 1000, timezone.utc).strftime("%Y-%m-%d")
    gap = max(1, width - len(a) - len(b))
    return Text(" " * (pad + 2) + a + " " * gap + b, style="dim")


def equity_chart(curve: list[tuple[int, Decimal]], width: int, height: int = 10) -> list[Text]:
    buckets = _buckets(curve, width)
    if not buckets:
        return [Text("(no equity snapshots)", style="dim")]
    last = [b[-1] for b in buckets]
    lo, hi = min(min(b) for b in buckets), max(max(b) for b in buckets)
    span = hi - lo or 1.0
    start = float(curve[0][1])
    style = "green" if last[-1] >= start else "red"
    levels = [max(1 / (height * 8), (v - lo) / span) for v in last]
    pad = max(len(f"{hi:,.0f}"), len(f"{lo:,.0f}"))
    rows = _axis(column_chart(levels, height, style), {0: f"{hi:,.0f}", height - 1: f"{lo:,.0f}"}, pad)
    return rows + [_dates(curve[0][0], curve[-1][0], len(buckets), pad)]


def drawdown_chart(curve: list[tuple[int, Decimal]], width: int, height: int = 5) -> list[Text]:
    values = [float(e) for _, e in curve]
    if not values:
        return []
    peak, dd = values[0], []
    for v in values:
        peak = max(peak, v)
        dd.append((peak - v) / peak if peak > 0 else 0.0)
    series = list(zip([t for t, _ in curve], [Decimal(str(x)) for x in dd]))
    buckets = _buckets(series, width)
    worst = max(dd) or 1.0
    levels = [max(b) / worst for b in buckets]
    label = f"-{worst * 100:.1f}%"
    rows = _axis(column_chart(levels, height, "red", hanging=True), {0: "0%", height - 1: label}, len(label))
    return rows


# --- the page ------------------------------------------------------------------------------------

def _pct(x: float | None, places: int = 1) -> str:
    return "n/a" if x is None else f"{x * 100:.{places}f}%"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _money(x: float | Decimal | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{float(x):+,.2f}" if signed else f"{float(x):,.2f}")


def _span(ms: int) -> str:
    h = ms / 3_600_000
    return f"{h:.0f} h" if h < 48 else f"{h / 24:.1f} d"


def _coloured(x: float | None) -> Text:
    if x is None:
        return Text("n/a", style="dim")
    return Text(_money(x, signed=True), style="green" if x > 0 else "red" if x < 0 else "")


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=box.SIMPLE_HEAD,
                 pad_edge=False)


def _group_table(title: str, rows: dict[str, dict[str, Any]], key_name: str) -> Table:
    t = _table(title)
    t.add_column(key_name, no_wrap=True)
    for col in ("trades", "win rate", "PnL", "fees", "profit f.", "best", "worst"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, g in rows.items():
        t.add_row(name, str(g["trades"]), _pct(g["win_rate"]) if g["trades"] else "-", _coloured(g["pnl"]),
                  _money(g["fees"]), _ratio(g["profit_factor"]), _money(g["best"], True), _money(g["worst"], True))
    return t


def _trades_table(title: str, rows: list[dict[str, Any]], wide: bool) -> Table:
    t = _table(title)
    cols = [("pair", False), ("strategy", False), ("opened", False), ("held", True)]
    cols += [("entry", True), ("exit", True)] if wide else []
    cols += [("PnL", True), ("return", True), ("exit", False)]
    for col, right in cols:
        t.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        cells = [r["symbol"], r["strategy"], iso(r["opened_ms"])[:16].replace("T", " "),
                 _span(r["closed_ms"] - r["opened_ms"])]
        if wide:
            cells += [f"{r['entry_price']:.6g}", "-" if r["exit_price"] is None else f"{r['exit_price']:.6g}"]
        cells += [_coloured(r["pnl"]), _pct(r["return_pct"], 2), (r["exit_reason"] or "").split(":", 1)[0]]
        t.add_row(*cells)
    return t


def render(console: Console, result: BacktestResult, stats: TradeStats | None = None,
           timing: bool = True) -> None:
    """Print the report. ``timing=False`` leaves out wall-clock figures (files that must not vary)."""
    s = stats or stats_of(result)
    doc = to_json(result, s)
    quote = result.cfg.universe.quote
    chart_w = max(20, min(console.width, 140) - 14)

    head = Text()
    head.append("Backtest ", style="bold")
    head.append(f"{result.data} ({result.timeframe})  {doc['from']} -> {doc['to']}\n")
    head.append(f"{result.cycles:,} cycles over {result.pairs} pairs, {result.candles:,} candles | strategies: "
                f"{', '.join(doc['strategies'])} | paper, starting balance {_money(s.start_equity)} {quote}")
    if timing and result.duration_s > 0:
        head.append(f"\nran in {result.duration_s:.1f} s ({result.candles / result.duration_s:,.0f} candles/s)",
                    style="dim")
    if result.interrupted:
        head.append("\ninterrupted: the figures cover the cycles that ran", style="yellow")
    console.print(Panel(head, expand=False))

    totals = Table.grid(padding=(0, 3))
    for _ in range(4):
        totals.add_column()
    pnl_style = "green" if s.pnl > 0 else "red" if s.pnl < 0 else ""
    cells = [
        ("trades", f"{s.trades} ({s.wins} won, {s.losses} lost)"), ("win rate", _pct(s.win_rate)),
        ("profit factor", _ratio(s.profit_factor)),
        ("PnL", Text(f"{_money(s.pnl, True)} {quote} ({_pct(s.return_pct, 2)})", style=pnl_style)),
        ("fees", f"{_money(s.fees)} {quote}"), ("Sharpe", _ratio(s.sharpe)), ("Sortino", _ratio(s.sortino)),
        ("max drawdown", f"{_pct(s.max_drawdown, 2)} over {_span(s.max_drawdown_duration_ms)}"),
        ("exposure", _pct(s.exposure)), ("end equity", f"{_money(s.end_equity)} {quote}"),
        ("signals", f"{result.signals:,}"),
        ("avg hold", "n/a" if s.avg_hold_ms is None else _span(s.avg_hold_ms)),
    ]
    for i in range(0, len(cells), 2):
        a, b = cells[i], cells[i + 1] if i + 1 < len(cells) else ("", "")
        totals.add_row(Text(a[0], style="bold"), a[1], Text(b[0], style="bold"), b[1])
    console.print(Panel(totals, title="totals", title_align="left", expand=False))

    console.print(Text("equity", style="bold"))
    for line in equity_chart(result.curve, chart_w):
        console.print(line, no_wrap=True, overflow="crop")
    console.print(Text("drawdown", style="bold"))
    for line in drawdown_chart(result.curve, chart_w):
        console.print(line, no_wrap=True, overflow="crop")

    console.print(_group_table("by strategy", doc["by_strategy"], "strategy"))
    pairs = doc["by_pair"]
    if pairs:
        order = sorted(pairs, key=lambda k: (-pairs[k]["pnl"], k))
        shown = order if len(order) <= 2 * SHOWN_PAIRS else order[:SHOWN_PAIRS] + order[-SHOWN_PAIRS:]
        title = (f"by pair ({len(pairs)} traded" + (f"; best and worst {SHOWN_PAIRS} shown, all in --json)"
                                                   if len(shown) < len(order) else ")"))
        console.print(_group_table(title, {k: pairs[k] for k in shown}, "pair"))
        wide = console.width >= 110
        console.print(_trades_table("best trades", doc["best_trades"], wide))
        console.print(_trades_table("worst trades", doc["worst_trades"], wide))

    notes = Text()
    if doc["exit_reasons"]:
        notes.append("exits: ", style="bold")
        notes.append(", ".join(f"{k} {v}" for k, v in doc["exit_reasons"].items()))
        if result.closed_at_end:
            notes.append(f" ({result.closed_at_end} still open at the end, sold at the last close)", style="dim")
        notes.append("\n")
    if result.rejections:
        notes.append("risk gate refused: ", style="bold")
        notes.append(", ".join(f"{k} {v:,}" for k, v in sorted(result.rejections.items(), key=lambda kv: -kv[1])))
        notes.append("\n")
    kinds: dict[str, list[int]] = {}
    for ts, text in result.halts:
        kinds.setdefault(text.split(":", 1)[0], []).append(ts)
    for kind, times in kinds.items():
        notes.append(f"halt {kind}: ", style="bold yellow")
        notes.append(f"{len(times)}x, first {iso(times[0])}" if len(times) > 1 else f"at {iso(times[0])}")
        notes.append("\n")
    if "drawdown" in kinds:
        notes.append("the drawdown halt stops new entries for good, as in live trading (until `pitrader status "
                     "--resume`); raise risk.max_drawdown_pct to see the strategies beyond it\n", style="dim")
    if result.verified:
        notes.append(f"signals checked against the real scanner at {len(result.verified)} cycles: identical\n",
                     style="dim")
    if notes:
        console.print(notes, end="")


def export(path: Path, result: BacktestResult, stats: TradeStats | None = None) -> None:
    """Write the report as ``.html`` or ``.svg`` (rich's recorded console), atomically."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".svg"):
        raise ValueError(f"--export {path}: expected a file name ending in .html or .svg")
    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    render(console, result, stats, timing=False)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".svg":
        console.save_svg(str(tmp), title="pitrader backtest")
    else:
        console.save_html(str(tmp))
    tmp.replace(path)
