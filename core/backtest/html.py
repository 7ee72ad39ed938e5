"""The backtest's report page: one self-contained HTML file (inline SVG and CSS, no script, no CDN).

Why a page and not the terminal dump: an equity curve next to buy-and-hold and the random band,
the underwater chart, the monthly table and the full trade list are read at a glance in a
browser and can be kept or mailed as one file. It works offline and prints at 700 px width
(charts scale with the page; wide tables scroll sideways inside their box).

Figures come from the same places as the terminal report (``report.to_json``, the trade stats)
plus a few the page adds: CAGR, Calmar, expectancy in R (R = what the trade risked: amount x
(entry - stop), the stop as stored), monthly returns and the trade-return histogram. The SVG
charts are drawn by ``core.backtest.charts``.
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from core.backtest.report import MODE_LABELS, NO_MARKETS, baseline_rows, halt_text, stats_of, to_json
from core.backtest.charts import MONTHS, drawdown_svg, equity_svg, histogram_svg
from core.backtest.runner import BacktestResult, iso
from core.trading.stats import per_trade

YEAR_MS = 365.25 * 86_400_000


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: float | None, places: int = 1, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x * 100:+.{places}f}%" if signed else f"{x * 100:.{places}f}%"


def ratio(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"


def money(x: float | Decimal | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{float(x):+,.2f}" if signed else f"{float(x):,.2f}")


def span(ms: float) -> str:
    h = ms / 3_600_000
    return f"{h:.0f} h" if h < 48 else f"{h / 24:.1f} days"


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")


def cls(x: float | None) -> str:
    return "" if not x else ("pos" if x > 0 else "neg")


# --- figures the page adds -----------------------------------------------------------------------

def headline(result: BacktestResult, doc: dict[str, Any]) -> dict[str, Any]:
    """CAGR, Calmar and expectancy in R on top of the report's figures."""
    s0, s1 = doc["start_equity"], doc["end_equity"]
    years = (result.end_ms - result.start_ms) / YEAR_MS
    cagr = (s1 / s0) ** (1 / years) - 1 if years > 0 and s0 > 0 and s1 > 0 else None
    mdd = doc["max_drawdown"]
    calmar = cagr / mdd if cagr is not None and mdd else None
    rs = []
    for p in result.closed:
        risk = (p.entry_price - p.stop) * p.amount
        if risk > 0 and p.pnl is not None:
            rs.append(float(p.pnl / risk))
    return {"cagr": cagr, "calmar": calmar, "expectancy_r": float(np.mean(rs)) if rs else None, "r_trades": len(rs)}


def monthly_returns(curve: list[tuple[int, Decimal]]) -> dict[int, dict[int, float]]:
    """year -> month -> return over the month (from the last equity before it, or the start)."""
    out: dict[int, dict[int, float]] = {}
    if not curve:
        return out
    prev = float(curve[0][1])
    last_key, last_val = None, prev
    for t, e in curve:
        d = datetime.fromtimestamp(t / 1000, timezone.utc)
        key = (d.year, d.month)
        if last_key is not None and key != last_key:
            out.setdefault(last_key[0], {})[last_key[1]] = last_val / prev - 1 if prev else 0.0
            prev = last_val
        last_key, last_val = key, float(e)
    if last_key is not None:
        out.setdefault(last_key[0], {})[last_key[1]] = last_val / prev - 1 if prev else 0.0
    return out


# --- tables --------------------------------------------------------------------------------------

def table(head: list[str], rows: list[list[Any]], right_from: int = 1, cls_: str = "") -> str:
    """Cells are (text, css class) or text; columns from ``right_from`` on are right-aligned."""
    th = "".join(f'<th{" class=r" if j >= right_from else ""}>{esc(h)}</th>' for j, h in enumerate(head))
    body = []
    for r in rows:
        tds = []
        for j, c in enumerate(r):
            text, k = c if isinstance(c, tuple) else (c, "")
            k = " ".join(x for x in (k, "r" if j >= right_from else "") if x)
            attr = f' class="{k}"' if k else ""
            tds.append(f"<td{attr}>{esc(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<div class="scroll"><table class="{cls_}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}'
            f"</tbody></table></div>")


def group_rows(groups: dict[str, dict[str, Any]]) -> list[list[Any]]:
    return [[name, g["trades"], pct(g["win_rate"]) if g["trades"] else "-", (money(g["pnl"], True), cls(g["pnl"])),
             money(g["fees"]), ratio(g["profit_factor"]), money(g["best"], True), money(g["worst"], True)]
            for name, g in groups.items()]


def _atr(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


GROUP_HEAD = ["trades", "win rate", "PnL", "fees", "profit f.", "best", "worst"]


def monthly_table(months: dict[int, dict[int, float]]) -> str:
    rows = []
    for year in sorted(months):
        row: list[Any] = [str(year)]
        total = 1.0
        for m in range(1, 13):
            v = months[year].get(m)
            row.append((pct(v, 1, True), cls(v)) if v is not None else "")
            if v is not None:
                total *= 1 + v
        row.append((pct(total - 1, 1, True), cls(total - 1) + " b"))
        rows.append(row)
    return table(["year"] + list(MONTHS) + ["year"], rows, cls_="months")


# --- the page ------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1f24;
 margin:0;background:#f4f5f7}
main{max-width:980px;margin:0 auto;padding:14px 12px 40px}
h1{font-size:20px;margin:4px 0 2px}h2{font-size:16px;margin:22px 0 6px}
.sub{color:#57606a;font-size:13px;margin:0 0 10px}
.card{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:10px 12px;margin:10px 0}
.halt{background:#fff4e5;border:1px solid #e5a54b;border-left:6px solid #d9822b;border-radius:6px;
 padding:10px 12px;margin:10px 0;font-weight:600}
.warn{background:#fffbe6;border:1px solid #e0c44b;border-radius:6px;padding:8px 12px;margin:10px 0;font-size:13px}
.nw{white-space:nowrap}
.halt .cost{font-weight:400;display:block;margin-top:3px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.fig{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:6px 9px}
.fig b{display:block;font-size:18px;font-variant-numeric:tabular-nums;white-space:nowrap}
.fig span{color:#57606a;font-size:12px}
.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:#e3e7eb;stroke-width:1}.chart .ax{font-size:11px;fill:#57606a}
.legend{font-size:12px;color:#57606a;margin-top:4px}.key{margin-right:12px;white-space:nowrap}
.key i{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:4px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:3px 6px;border-bottom:1px solid #eaeef2;white-space:nowrap;text-align:left}
th{background:#f6f8fa;font-weight:600}
.r{text-align:right}.pos{color:#1e7d3a}.neg{color:#b42318}.b{font-weight:600}.dim{color:#57606a}
table.months td,table.months th{padding:3px 4px;font-size:12px}
table.wrap0 td:first-child{white-space:normal;min-width:150px}
table.trades td,table.trades th{padding:2px 4px;font-size:12px}
h3{font-size:14px;margin:14px 0 4px}
.verdict{font-size:15px;margin:4px 0 8px}
p.note{color:#57606a;font-size:12.5px;margin:6px 0 0}
"""


def fig(label: str, value: str, k: str = "") -> str:
    return f'<div class="fig"><b class="{k}">{esc(value)}</b><span>{esc(label)}</span></div>'


def page(result: BacktestResult, bl=None, stats=None) -> str:
    """The whole page as one string (``bl``: ``core.backtest.baseline.Baselines`` or None)."""
    s = stats or stats_of(result)
    doc = to_json(result, s, bl.doc if bl is not None else None)
    extra = headline(result, doc)
    quote = result.cfg.universe.quote
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width,initial-scale=1">',
           f"<title>pitrader backtest {esc(doc['from'][:10])} .. {esc(doc['to'][:10])}</title>",
           f"<style>{CSS}</style></head><body><main>"]
    out.append(f"<h1>Backtest: {esc(', '.join(doc['strategies']))}</h1>")
    out.append(f'<p class="sub">{esc(doc["from"])} &rarr; {esc(doc["to"])} &middot; {result.cycles:,} cycles of '
               f'{esc(result.timeframe)} over {result.pairs} pairs ({result.candles:,} candles) &middot; paper, '
               f'starting balance {money(doc["start_equity"])} {esc(quote)} &middot; data {esc(result.data)}</p>')
    if result.interrupted:
        out.append('<div class="halt">interrupted: the figures cover the cycles that ran</div>')
    halt = halt_text(doc)
    if halt:
        head, _, cost = halt.partition(": ")
        out.append(f'<div class="halt">{esc(head)}<span class="cost">{esc(cost)}</span></div>')
    if result.loaded is not None and doc["markets"] is None:
        warn = esc(NO_MARKETS).replace("--markets FILE", '<code class="nw">--markets FILE</code>')
        out.append(f'<div class="warn">warning: {warn}</div>')

    figs = [
        ("return", pct(doc["return"], 2, True), cls(doc["return"])), ("CAGR", pct(extra["cagr"], 1, True), cls(extra["cagr"])),
        ("end equity", f"{money(doc['end_equity'])}", ""), ("Sharpe", ratio(doc["sharpe"]), ""),
        ("Sortino", ratio(doc["sortino"]), ""), ("Calmar", ratio(extra["calmar"]), ""),
        ("profit factor", ratio(doc["profit_factor"]), ""),
        ("expectancy", "n/a" if extra["expectancy_r"] is None else f"{extra['expectancy_r']:+.2f} R",
         cls(extra["expectancy_r"])),
        ("trades", f"{doc['trades']:,}", ""), ("win rate", pct(doc["win_rate"]), ""),
        ("exposure", pct(doc["exposure"]), ""), ("max drawdown", pct(doc["max_drawdown"], 1), "neg" if doc["max_drawdown"] else ""),
        ("longest drawdown", span(doc["max_drawdown_duration_s"] * 1000), ""),
        ("fees", money(doc["fees"]), ""),
    ]
    out.append('<div class="figs">' + "".join(fig(a, b, c) for a, b, c in figs) + "</div>")

    b = doc.get("baselines")
    if b is not None:
        out.append("<h2>Strategy vs baselines</h2>")
        rnd = b.get("random")
        if rnd and rnd.get("seeds"):
            p = rnd["percentile"]
            verdict = ("beat every random seed" if p == 100 else "did worse than every random seed" if p == 0
                       else f"beat {p:.0f}% of the random seeds")
            out.append(f'<p class="verdict">The strategy {esc(verdict)} (random pairs, {rnd["seeds"]} seeds; '
                       f'p = {rnd["p_value"]:.2f}).</p>')
        rows = []
        for label, r, pf, rng, pc in baseline_rows(doc):
            rows.append([label.replace(", median of", ": median of"), (pct(r, 1, True), cls(r)),
                     ratio(pf) if (pf is not None or label == "strategy") else "-", rng or "", pc or ""])
        out.append(table(["", "return", "PF", "random p5 .. p95", "percentile"], rows, cls_="wrap0"))
        per = b.get("by_strategy") or {}
        modes = [m for m in MODE_LABELS if (b.get(m) or {}).get("seeds")]
        if per and modes:
            prow = []
            for name, g in per.items():
                row: list[Any] = [name, (money(g["pnl"], True), cls(g["pnl"]))]
                for m in modes:
                    d = g[m]["pnl"]
                    row += [money(d["median"], True), "n/a" if d["percentile"] is None else f"{d['percentile']:.0f}"]
                prow.append(row)
            head = ["strategy", "PnL"] + [h for m in modes for h in (f"{MODE_LABELS[m]}: median", "pct")]
            out.append("<h3>Each strategy vs the random entries that took its slots</h3>" + table(head, prow))
            out.append('<p class="note">Percentile: the share of random seeds that did worse (100 = better than '
                       'all). Random pairs: at each cycle as many entries as the strategies had, on pairs drawn at '
                       'random among the eligible ones; random timing: entries at random cycles, as many in '
                       f'expectation. Both copy the strategy\'s exit geometry: each random entry takes the stop and '
                       f'target distances of a real opportunity in ATR{b["atr_period"]} units and applies them to its '
                       f'own pair (median stop {_atr(b["stop_atr"])}, target {_atr(b["target_atr"])} '
                       f'ATR{b["atr_period"]}), with the same engine, sizing, exits and costs. '
                       'Per strategy: PnL of the random entries that took that strategy\'s slots in the same '
                       'run. The percentile is in-sample: see the README on out-of-sample checks.</p>')

    out.append(f'<h2>Equity</h2><div class="card">{equity_svg(result, bl)}</div>')
    out.append(f'<h2>Drawdown</h2><div class="card">{drawdown_svg(result)}</div>')
    out.append(f"<h2>Monthly returns</h2>{monthly_table(monthly_returns(result.curve))}")
    trades = per_trade(result.closed)
    returns = [t["return_pct"] for t in trades]
    out.append(f'<h2>Trade returns</h2><div class="card">{histogram_svg(returns)}'
               f'<p class="note">{len(returns):,} trades; return on the money put in, after fees.</p></div>')
    out.append("<h2>By strategy</h2>" + table(["strategy"] + GROUP_HEAD, group_rows(doc["by_strategy"])))
    pairs = doc["by_pair"]
    if pairs:
        order = sorted(pairs, key=lambda k: (-pairs[k]["pnl"], k))
        out.append(f"<h2>By pair ({len(pairs)})</h2>" + table(["pair"] + GROUP_HEAD,
                                                              group_rows({k: pairs[k] for k in order})))
    notes = []
    if doc["exit_reasons"]:
        notes.append("exits: " + ", ".join(f"{k} {v:,}" for k, v in doc["exit_reasons"].items()))
    if doc["rejections"]:
        notes.append("risk gate refused: " + ", ".join(f"{k} {v:,}" for k, v in
                                                       sorted(doc["rejections"].items(), key=lambda kv: -kv[1])))
    for h in doc["halts"]:
        notes.append(f"halt at {h['at']}: {h['halt']}")
    if notes:
        out.append('<div class="card">' + "".join(f'<p class="note">{esc(n)}</p>' for n in notes) + "</div>")
    if trades:
        rows = [[t["symbol"].removesuffix("/" + quote), t["strategy"],
                 iso(t["opened_ms"]).replace("T", " ")[:16], span(t["closed_ms"] - t["opened_ms"]),
                 f"{t['entry_price']:.6g}", "-" if t["exit_price"] is None else f"{t['exit_price']:.6g}",
                 (money(t["pnl"], True), cls(t["pnl"])),
                 (pct(t["return_pct"], 2, True), cls(t["return_pct"])), (t["exit_reason"] or "").split(":", 1)[0]]
                for t in sorted(trades, key=lambda t: (t["opened_ms"], t["id"]))]
        out.append(f"<h2>All trades ({len(trades):,}, by opening time)</h2>" + table(
            [f"pair (/{quote})", "strategy", "opened (UTC)", "held", "entry", "exit", "PnL", "return", "exit"],
            rows, right_from=3, cls_="trades"))
    out.append(f'<p class="note">pitrader backtest report; {esc(quote)} amounts; every figure from the same engine '
               f"as live trading.</p></main></body></html>")
    return "\n".join(out)


def write(path: Path, result: BacktestResult, bl=None, stats=None) -> None:
    """Write the page atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page(result, bl, stats), encoding="utf-8")
    tmp.replace(path)
