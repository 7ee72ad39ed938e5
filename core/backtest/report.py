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
from core.service.tables import fit_first, fit_table, num
from core.timeframes import DAY_MS, HOUR_MS, TIMEFRAME_MS
from core.trading.risk import utc_day
from core.trading.stats import TradeStats, group_stats, per_trade, trade_stats, worst_day

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


NO_MARKETS = ("no markets file: exchange order rules (minimum amount and cost, amount step, price tick) are not "
              "applied, so small or odd-sized orders fill that the exchange would refuse; pass --markets FILE "
              "(markets.json as `pitrader download` writes it)")


def markets_source(result: BacktestResult) -> str | None:
    """The markets file whose order rules the run applied (None: none, a warning in the report)."""
    gw = result.loaded.gateway if result.loaded is not None else None
    return getattr(gw, "markets_source", None)


def halted(result: BacktestResult) -> dict[str, Any] | None:
    """The drawdown halts as a headline: when first, how often, how much of the run could trade,
    whether the last one still stood at the end, equity at the first halt and at the end."""
    times = [ts for ts, text in result.halts if text.startswith("drawdown")]
    if not times:
        return None
    ts = times[0]
    at_halt = next((float(e) for t, e in result.curve if t >= ts), None)
    end = float(result.curve[-1][1]) if result.curve else None
    days = (result.end_ms - result.start_ms) / DAY_MS
    tf_ms = TIMEFRAME_MS.get(result.timeframe, 0)
    paused = result.halt_cycles.get("drawdown")
    if paused is None or not tf_ms:  # a result made without the counts: up to the first halt
        traded = (ts - result.start_ms) / DAY_MS
    else:
        traded = max(0.0, days - paused * tf_ms / DAY_MS)
    return {"at": iso(ts), "times": len(times), "days_traded": traded, "days": days,
            "to_the_end": "drawdown" in result.halted_at_end,
            "equity_at_halt": at_halt, "end_equity": end}


def _worst_day(result: BacktestResult) -> dict[str, Any]:
    """The UTC day whose marked equity fell most below its start: the daily-loss cap's figure."""
    loss, day = worst_day(result.curve)
    return {"loss": loss, "day": None if day is None else utc_day(day)}


def to_json(result: BacktestResult, stats: TradeStats | None = None,
            baselines: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as JSON; ``baselines`` (``core.backtest.baseline``'s block) under its own key."""
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
        "max_drawdown_duration_s": s.max_drawdown_duration_ms / 1000, "worst_day": _worst_day(result),
        "exposure": s.exposure,
        "avg_hold_s": None if s.avg_hold_ms is None else s.avg_hold_ms / 1000,
        "signals": result.signals, "closed_at_end": result.closed_at_end,
        "exit_reasons": exit_reasons(result.closed), "rejections": result.rejections,
        "halts": [{"at": iso(ts), "halt": text} for ts, text in result.halts],
        "by_pair": group_stats(result.closed, lambda p: p.symbol),
        "best_trades": ranked[:SHOWN_TRADES], "worst_trades": ranked[::-1][:SHOWN_TRADES],
        "verified_cycles": [iso(t) for t in result.verified],
        "halted": halted(result),
        "markets": markets_source(result),
    })
    if baselines is not None:
        doc["baselines"] = baselines
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
    h = ms / HOUR_MS
    return f"{h:.0f} h" if h < 48 else f"{h / 24:.1f} d"


def _coloured(x: float | None) -> Text:
    if x is None:
        return Text("n/a", style="dim")
    return Text(_money(x, signed=True), style="green" if x > 0 else "red" if x < 0 else "")


def _table_kw() -> dict[str, Any]:
    return {"title_style": "bold", "header_style": "bold", "box": box.SIMPLE_HEAD, "pad_edge": False}


def _group_table(console: Console, title: str, rows: dict[str, dict[str, Any]], key_name: str):
    """Per strategy / pair; at narrow widths best, worst, profit factor and fees go first (never a cut number)."""
    cols = [(key_name, {})] + [(c, {"justify": "right"}) for c in
                               ("trades", "win rate", "PnL", "fees", "profit f.", "best", "worst")]
    body = [[name, str(g["trades"]), _pct(g["win_rate"]) if g["trades"] else "-", _coloured(g["pnl"]),
             _money(g["fees"]), _ratio(g["profit_factor"]), _money(g["best"], True), _money(g["worst"], True)]
            for name, g in rows.items()]
    return fit_table(console, cols, body, drop=("worst", "best", "profit f.", "fees"), title=title, **_table_kw())


def _trades_table(console: Console, title: str, rows: list[dict[str, Any]]):
    cols = [("pair", {}), ("strategy", {}), ("opened", {}), ("held", {"justify": "right"}),
            ("entry", {"justify": "right"}), ("exit price", {"justify": "right"}), ("PnL", {"justify": "right"}),
            ("return", {"justify": "right"}), ("exit", {})]
    body = []
    for r in rows:
        body.append([r["symbol"], r["strategy"], iso(r["opened_ms"])[:16].replace("T", " "),
                     _span(r["closed_ms"] - r["opened_ms"]), num(r["entry_price"]),
                     "-" if r["exit_price"] is None else num(r["exit_price"]), _coloured(r["pnl"]),
                     _pct(r["return_pct"], 2), (r["exit_reason"] or "").split(":", 1)[0]])
    return fit_table(console, cols, body, drop=("entry", "exit price", "held", "strategy", "opened", "exit"),
                     title=title, **_table_kw())


def _totals(console: Console, cells: list[tuple[str, Any]]):
    """Two label/value pairs per row when they fit whole, else one pair per row."""
    def grid(pairs_per_row: int, wrap: bool = False):
        def make():
            t = Table.grid(padding=(0, 3 if not wrap else 1))
            for _ in range(pairs_per_row):
                t.add_column(no_wrap=True)  # the label
                t.add_column(no_wrap=not wrap)  # the value: at the narrowest, wraps between words
            for i in range(0, len(cells), pairs_per_row):
                chunk = cells[i:i + pairs_per_row]
                chunk += [("", "")] * (pairs_per_row - len(chunk))
                t.add_row(*[x for a, b in chunk for x in (Text(a, style="bold"), b)])
            panel = Panel(t, title="totals", title_align="left", expand=False)
            return panel, [b.plain if isinstance(b, Text) else b for _, b in cells]
        return make

    return fit_first(console, [grid(2), grid(1), grid(1, wrap=True)])


def halt_text(doc: dict[str, Any]) -> str | None:
    """"halted on 2020-12-22, 9 of 216 days traded: ..." (None: no drawdown halt)."""
    h = doc.get("halted")
    if not h:
        return None
    first = h["at"][:10]
    if h["times"] == 1:
        text = f"halted on {first}, {h['days_traded']:.0f} of {h['days']:.0f} days traded: "
    else:
        text = (f"halted {h['times']} times (first on {first}), {h['days_traded']:.0f} of {h['days']:.0f} days "
                f"traded: ")
    text += ("new entries stopped for good" if h["to_the_end"] else "new entries paused") + \
        f" by the drawdown limit (max drawdown {_pct(doc['max_drawdown'])})"
    if h["equity_at_halt"] is not None:
        text += f"; equity {_money(h['equity_at_halt'])} at the {'first ' if h['times'] > 1 else ''}halt, " \
                f"{_money(h['end_equity'])} at the end"
    hold = (doc.get("baselines") or {}).get("buy_and_hold", {})
    after = [f"{label} {_signed_pct(hold[k]['after_halt'])}" for k, label in
             (("btc", "BTC"), ("equal_weight", "the equal-weight universe")) if hold.get(k, {}).get("after_halt")
             is not None]
    if after:
        text += "; meanwhile " + " and ".join(after)
    return text


def _signed_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _ordinal(x: float | None) -> str:
    if x is None:
        return "n/a"
    n = int(round(x))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


MODE_LABELS = {"random": "random pairs", "random_timing": "random timing"}


def baseline_rows(doc: dict[str, Any]) -> list[tuple[str, float | None, float | None, str, str]]:
    """(label, return, profit factor, p5..p95 range, strategy's percentile) for the strategy and each baseline."""
    b = doc.get("baselines") or {}
    rows = [("strategy", doc["return"], doc["profit_factor"], "", "")]
    hold = b.get("buy_and_hold", {})
    if "btc" in hold:
        rows.append(("buy & hold BTC", hold["btc"]["return"], None, "", ""))
    if "equal_weight" in hold:
        rows.append((f"buy & hold, equal weight ({hold['equal_weight']['pairs']} pairs)",
                     hold["equal_weight"]["return"], None, "", ""))
    for mode, label in MODE_LABELS.items():
        blk = b.get(mode)
        if not blk or not blk["seeds"]:
            continue
        pct = blk["percentile"]
        seeds = f"{blk['seeds']} seed" + "s" * (blk["seeds"] != 1)
        rows.append((f"{label}, median of {seeds}", blk["median"], blk["profit_factor"]["median"],
                     f"{_signed_pct(blk['p5'])} .. {_signed_pct(blk['p95'])}",
                     f"{_ordinal(pct)} (p = {blk['p_value']:.2f})" if pct is not None else "n/a"))
    return rows


def _baseline_table(console: Console, doc: dict[str, Any]):
    cols = [("vs", {"ratio": 1, "min_width": 14}), ("return", {"justify": "right"}), ("PF", {"justify": "right"}),
            ("random p5 .. p95", {"justify": "right"}), ("percentile", {"justify": "right"})]
    body = [[label, Text(_signed_pct(r), style="green" if (r or 0) > 0 else "red" if (r or 0) < 0 else ""),
             _ratio(pf) if label == "strategy" or pf is not None else "-", rng, pct]
            for label, r, pf, rng, pct in baseline_rows(doc)]
    return fit_table(console, cols, body, drop=("random p5 .. p95", "PF"), wrap=("vs",),
                     title="strategy vs baselines (same engine, costs and exits)", **_table_kw())


def _baseline_strategy_table(console: Console, doc: dict[str, Any]):
    per = (doc.get("baselines") or {}).get("by_strategy") or {}
    modes = [m for m in MODE_LABELS if (doc["baselines"].get(m) or {}).get("seeds")]
    cols = [("strategy", {}), ("PnL", {"justify": "right"})]
    for m in modes:
        cols += [(f"{MODE_LABELS[m]} median", {"justify": "right"}), (f"pct ({m.replace('_', ' ')})",
                                                                     {"justify": "right"})]
    body = []
    for name, g in per.items():
        row = [name, _coloured(g["pnl"])]
        for m in modes:
            d = g[m]["pnl"]
            row += [_money(d["median"], True), _ordinal(d["percentile"])]
        body.append(row)
    return fit_table(console, cols, body, title="by strategy: its PnL vs random entries in its slots",
                     **_table_kw())


def render(console: Console, result: BacktestResult, stats: TradeStats | None = None,
           timing: bool = True, baselines: dict[str, Any] | None = None) -> None:
    """Print the report. ``timing=False`` leaves out wall-clock figures (files that must not vary)."""
    s = stats or stats_of(result)
    doc = to_json(result, s, baselines)
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
    halt = halt_text(doc)
    if halt:
        console.print(Panel(Text(halt, style="bold yellow"), title="halted", title_align="left", expand=False,
                            border_style="yellow"))
    if result.loaded is not None and doc["markets"] is None:
        console.print(Text("warning: " + NO_MARKETS, style="yellow"))

    pnl_style = "green" if s.pnl > 0 else "red" if s.pnl < 0 else ""
    cells = [
        ("trades", f"{s.trades} ({s.wins} won, {s.losses} lost)"), ("win rate", _pct(s.win_rate)),
        ("profit factor", _ratio(s.profit_factor)),
        ("PnL", Text(f"{_money(s.pnl, True)} {quote} ({_pct(s.return_pct, 2)})", style=pnl_style)),
        ("fees", f"{_money(s.fees)} {quote}"), ("Sharpe", _ratio(s.sharpe)), ("Sortino", _ratio(s.sortino)),
        ("max drawdown", f"{_pct(s.max_drawdown, 2)} over {_span(s.max_drawdown_duration_ms)}"),
        ("worst UTC day", f"{_pct(doc['worst_day']['loss'], 2)}" + (f" ({doc['worst_day']['day']})"
                                                                     if doc["worst_day"]["day"] else "")),
        ("exposure", _pct(s.exposure)), ("end equity", f"{_money(s.end_equity)} {quote}"),
        ("signals", f"{result.signals:,}"),
        ("avg hold", "n/a" if s.avg_hold_ms is None else _span(s.avg_hold_ms)),
    ]
    console.print(_totals(console, cells))
    if baselines is not None:
        console.print(_baseline_table(console, doc))
        if baselines.get("by_strategy") and len(baselines["by_strategy"]) > 1:
            console.print(_baseline_strategy_table(console, doc))

    console.print(Text("equity", style="bold"))
    for line in equity_chart(result.curve, chart_w):
        console.print(line, no_wrap=True, overflow="crop")
    console.print(Text("drawdown", style="bold"))
    for line in drawdown_chart(result.curve, chart_w):
        console.print(line, no_wrap=True, overflow="crop")

    console.print(_group_table(console, "by strategy", doc["by_strategy"], "strategy"))
    pairs = doc["by_pair"]
    if pairs:
        order = sorted(pairs, key=lambda k: (-pairs[k]["pnl"], k))
        shown = order if len(order) <= 2 * SHOWN_PAIRS else order[:SHOWN_PAIRS] + order[-SHOWN_PAIRS:]
        title = (f"by pair ({len(pairs)} traded" + (f"; best and worst {SHOWN_PAIRS} shown, all in --json)"
                                                   if len(shown) < len(order) else ")"))
        console.print(_group_table(console, title, {k: pairs[k] for k in shown}, "pair"))
        console.print(_trades_table(console, "best trades", doc["best_trades"]))
        console.print(_trades_table(console, "worst trades", doc["worst_trades"]))

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


def export(path: Path, result: BacktestResult, stats: TradeStats | None = None,
           baselines: dict[str, Any] | None = None) -> None:
    """Write the report as ``.html`` or ``.svg`` (rich's recorded console), atomically."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".svg"):
        raise ValueError(f"--export {path}: expected a file name ending in .html or .svg")
    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    render(console, result, stats, timing=False, baselines=baselines)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".svg":
        console.save_svg(str(tmp), title="pitrader backtest")
    else:
        console.save_html(str(tmp))
    tmp.replace(path)
