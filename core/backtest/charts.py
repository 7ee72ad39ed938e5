"""The report page's charts as inline SVG (no script, no library): the equity curve against
buy-and-hold and the random band, the underwater (drawdown) chart and the trade-return histogram.

They scale with the page (a fixed view box) and print at 700 px width.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

import numpy as np

from core.backtest.runner import BacktestResult

W, H = 680, 260  # chart view box (scales with the page)
PAD_L, PAD_R, PAD_T, PAD_B = 58, 10, 10, 24
COLOURS = {"strategy": "#1f5fbf", "btc": "#e08a00", "equal_weight": "#6a3d9a", "band": "#9aa5b1",
           "median": "#5f6b77", "down": "#c0392b", "up": "#1e8449"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _resample(curve: list[tuple[int, float]], grid: np.ndarray) -> np.ndarray:
    """Value at or before each grid time (the first value before the curve starts)."""
    if not curve:
        return np.full(len(grid), np.nan)
    t = np.array([c[0] for c in curve], dtype=np.int64)
    v = np.array([float(c[1]) for c in curve])
    i = np.searchsorted(t, grid, side="right") - 1
    return v[np.maximum(i, 0)]


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    out = []
    for e in range(int(math.floor(math.log10(lo))) - 1, int(math.ceil(math.log10(hi))) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                out.append(v)
    if len(out) < 3:  # a narrow range: five even steps instead
        out = [lo + (hi - lo) * k / 4 for k in range(5)]
    return out


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span_ = hi - lo or abs(hi) or 1.0
    step = 10 ** math.floor(math.log10(span_ / n))
    for m in (1, 2, 2.5, 5, 10):
        if span_ / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def _fmt_axis(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _time_axis(t0: int, t1: int, x, h: int = H) -> str:
    """Month starts as ticks (every n-th when there are many)."""
    d = datetime.fromtimestamp(t0 / 1000, timezone.utc)
    y, m = d.year, d.month
    ticks = []
    while True:
        m += 1
        if m > 12:
            y, m = y + 1, 1
        ts = int(datetime(y, m, 1, tzinfo=timezone.utc).timestamp() * 1000)
        if ts > t1:
            break
        ticks.append((ts, y, m))
    every = max(1, math.ceil(len(ticks) / 8))
    out = []
    for j, (ts, y, m) in enumerate(ticks):
        if j % every:
            continue
        xx = x(ts)
        label = f"{MONTHS[m - 1]} {y}" if m == 1 or j == 0 else MONTHS[m - 1]
        out.append(f'<line x1="{xx:.1f}" y1="{PAD_T}" x2="{xx:.1f}" y2="{h - PAD_B}" class="grid"/>'
                   f'<text x="{xx:.1f}" y="{h - 6}" class="ax" text-anchor="middle">{label}</text>')
    return "".join(out)


def _path(xs: np.ndarray, ys: np.ndarray) -> str:
    pts = [f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys) if math.isfinite(b)]
    return "M" + " L".join(pts) if pts else ""


def equity_svg(result: BacktestResult, bl) -> str:
    """Strategy equity (log scale) with buy-and-hold lines and the random band (p5..p95, median)."""
    curve = [(t, float(e)) for t, e in result.curve]
    if len(curve) < 2:
        return '<p class="dim">(no equity snapshots)</p>'
    t0, t1 = result.start_ms, max(result.end_ms, curve[-1][0])
    grid = np.linspace(t0, t1, 400).astype(np.int64)
    start = float(result.cfg.paper.starting_balance)
    series = {"strategy": _resample(curve, grid)}
    band = None
    if bl is not None:
        for k, c in bl.hold_curves.items():
            series[k] = _resample(c, grid) * start
        runs = bl.runs.get("random") or []
        if runs:
            m = np.array([_resample(r["curve"], grid) for r in runs])
            band = (np.percentile(m, 5, axis=0), np.median(m, axis=0), np.percentile(m, 95, axis=0))
    allv = np.concatenate([v for v in series.values()] + (list(band) if band else []))
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = float(allv.min()), float(allv.max())
    lo, hi = lo / 1.05, hi * 1.05
    ly0, ly1 = math.log(lo), math.log(hi)

    def x(t):
        return PAD_L + (W - PAD_L - PAD_R) * (np.asarray(t) - t0) / max(1, t1 - t0)

    def y(v):
        v = np.asarray(v, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return PAD_T + (H - PAD_T - PAD_B) * (ly1 - np.log(v)) / (ly1 - ly0)

    xs = x(grid)
    parts = [f'<svg viewBox="0 0 {W} {H}" class="chart" role="img" aria-label="equity curve">']
    for v in _nice_log_ticks(lo, hi):
        yy = float(y(v))
        parts.append(f'<line x1="{PAD_L}" y1="{yy:.1f}" x2="{W - PAD_R}" y2="{yy:.1f}" class="grid"/>'
                     f'<text x="{PAD_L - 4}" y="{yy + 4:.1f}" class="ax" text-anchor="end">{_fmt_axis(v)}</text>')
    parts.append(_time_axis(t0, t1, lambda t: float(x(t))))
    if band:
        p5, med, p95 = (y(b) for b in band)
        poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, p95)) + " " + " ".join(
            f"{a:.1f},{b:.1f}" for a, b in zip(xs[::-1], p5[::-1]))
        parts.append(f'<polygon points="{poly}" fill="{COLOURS["band"]}" fill-opacity="0.35" stroke="none"/>')
        parts.append(f'<path d="{_path(xs, med)}" fill="none" stroke="{COLOURS["median"]}" stroke-width="1.2" '
                     f'stroke-dasharray="4 3"/>')
    for k in ("equal_weight", "btc", "strategy"):
        if k in series:
            parts.append(f'<path d="{_path(xs, y(series[k]))}" fill="none" stroke="{COLOURS[k]}" '
                         f'stroke-width="{2.2 if k == "strategy" else 1.5}"/>')
    halt = next((ts for ts, h in result.halts if h.startswith("drawdown")), None)
    if halt is not None:
        hx = float(x(halt))
        parts.append(f'<line x1="{hx:.1f}" y1="{PAD_T}" x2="{hx:.1f}" y2="{H - PAD_B}" stroke="{COLOURS["down"]}" '
                     f'stroke-dasharray="3 3"/><text x="{hx + 4:.1f}" y="{PAD_T + 12}" class="ax" '
                     f'fill="{COLOURS["down"]}">halt</text>')
    parts.append("</svg>")
    legend = [("strategy", "strategy")]
    if "btc" in series:
        legend.append(("btc", "buy & hold BTC"))
    if "equal_weight" in series:
        legend.append(("equal_weight", "buy & hold, equal weight"))
    if band:
        legend.append(("band", f"random pairs p5..p95 ({len(bl.runs['random'])} seeds)"))
        legend.append(("median", "random pairs median"))
    keys = "".join(f'<span class="key"><i style="background:{COLOURS[k]}"></i>{escape(label)}</span>'
                   for k, label in legend)
    quote = escape(result.cfg.universe.quote)
    return "".join(parts) + f'<div class="legend">{keys}<span class="dim">log scale, {quote}</span></div>'


def drawdown_svg(result: BacktestResult) -> str:
    curve = [(t, float(e)) for t, e in result.curve]
    if len(curve) < 2:
        return ""
    t = np.array([c[0] for c in curve], dtype=np.int64)
    v = np.array([c[1] for c in curve])
    dd = v / np.maximum.accumulate(v) - 1
    t0, t1 = int(t[0]), int(t[-1])
    worst = min(float(dd.min()), -0.001)
    hh = 150

    def x(tt):
        return PAD_L + (W - PAD_L - PAD_R) * (np.asarray(tt) - t0) / max(1, t1 - t0)

    def y(d):
        return PAD_T + (hh - PAD_T - PAD_B) * (np.asarray(d) / (worst * 1.05))

    step = max(1, len(t) // 600)
    xs, ys = x(t[::step]), y(dd[::step])
    poly = f"{PAD_L},{PAD_T} " + " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys)) + f" {xs[-1]:.1f},{PAD_T}"
    parts = [f'<svg viewBox="0 0 {W} {hh}" class="chart" role="img" aria-label="drawdown">']
    for d in _nice_ticks(worst * 1.05, 0.0, 4):
        yy = float(y(d))
        parts.append(f'<line x1="{PAD_L}" y1="{yy:.1f}" x2="{W - PAD_R}" y2="{yy:.1f}" class="grid"/>'
                     f'<text x="{PAD_L - 4}" y="{yy + 4:.1f}" class="ax" text-anchor="end">{d * 100:.0f}%</text>')
    parts.append(_time_axis(t0, t1, lambda tt: float(x(tt)), hh))
    parts.append(f'<polygon points="{poly}" fill="{COLOURS["down"]}" fill-opacity="0.45" stroke="{COLOURS["down"]}" '
                 f'stroke-width="1"/></svg>')
    return "".join(parts)


def histogram_svg(returns: list[float]) -> str:
    if not returns:
        return '<p class="dim">(no trades)</p>'
    r = np.array(returns) * 100
    lo, hi = float(np.floor(np.percentile(r, 0.5))), float(np.ceil(np.percentile(r, 99.5)))
    clipped = int(((r < lo) | (r > hi)).sum())
    r = np.clip(r, lo, hi)
    if hi - lo < 2:
        lo, hi = lo - 1, hi + 1
    bins = min(60, max(12, int((hi - lo) * 2)))  # about half a percent a bar
    counts, edges = np.histogram(r, bins=bins, range=(lo, hi))
    hh = 170
    top = counts.max() or 1
    bw = (W - PAD_L - PAD_R) / bins
    parts = [f'<svg viewBox="0 0 {W} {hh}" class="chart" role="img" aria-label="trade returns">']
    for c in _nice_ticks(0, float(top), 4):
        yy = hh - PAD_B - (hh - PAD_T - PAD_B) * c / top
        parts.append(f'<line x1="{PAD_L}" y1="{yy:.1f}" x2="{W - PAD_R}" y2="{yy:.1f}" class="grid"/>'
                     f'<text x="{PAD_L - 4}" y="{yy + 4:.1f}" class="ax" text-anchor="end">{c:.0f}</text>')
    for j, c in enumerate(counts):
        if not c:
            continue
        bh = (hh - PAD_T - PAD_B) * c / top
        mid = (edges[j] + edges[j + 1]) / 2
        colour = COLOURS["up"] if mid > 0 else COLOURS["down"]
        parts.append(f'<rect x="{PAD_L + j * bw + 0.5:.1f}" y="{hh - PAD_B - bh:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                     f'height="{bh:.1f}" fill="{colour}"><title>{edges[j]:.1f}% .. {edges[j + 1]:.1f}%: {c}'
                     f'</title></rect>')
    for v in _nice_ticks(lo, hi, 8):
        xx = PAD_L + (W - PAD_L - PAD_R) * (v - lo) / (hi - lo)
        parts.append(f'<text x="{xx:.1f}" y="{hh - 6}" class="ax" text-anchor="middle">{v:g}%</text>')
    if lo < 0 < hi:
        zx = PAD_L + (W - PAD_L - PAD_R) * (0 - lo) / (hi - lo)
        parts.append(f'<line x1="{zx:.1f}" y1="{PAD_T}" x2="{zx:.1f}" y2="{hh - PAD_B}" stroke="#333" '
                     f'stroke-width="1"/>')
    parts.append("</svg>")
    if clipped:
        parts.append(f'<p class="note">{clipped} trade{"s" * (clipped > 1)} beyond {lo:g}% .. {hi:g}% counted in '
                     "the end bars.</p>")
    return "".join(parts)
