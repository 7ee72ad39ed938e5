"""Trading statistics shared by `demo`, `status` and the backtest report.

Money stays Decimal (PnL, fees, best/worst); ratios are floats. Definitions:

- a trade is a closed position that bought something (entries that never filled are not trades);
  a win has PnL > 0 (net of all fees);
- profit factor = gross profit / gross loss (None when nothing was lost);
- returns are taken between consecutive equity snapshots and annualised with the median
  snapshot spacing; Sharpe = mean / sample std, Sortino = mean / downside
  deviation (root mean square of the negative returns, target 0); risk-free rate 0;
- max drawdown is the largest fall from a running peak (``start_equity`` included) as a fraction
  of that peak; its duration runs from the peak until equity is back at it (or the last snapshot).
  The engine's equity snapshots are the marked-to-market equity the risk gate judges each cycle,
  so this is the drawdown its halt measures: one definition for demo, status, backtest and halts;
- exposure is the fraction of the covered time with at least one position open.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable

from core.models import Position
from core.timeframes import DAY_MS, YEAR_MS

ZERO = Decimal(0)


@dataclass(frozen=True)
class TradeStats:
    trades: int
    wins: int
    losses: int
    win_rate: float
    profit_factor: float | None
    pnl: Decimal
    fees: Decimal
    gross_profit: Decimal
    gross_loss: Decimal
    avg_pnl: Decimal | None
    best: Decimal | None
    worst: Decimal | None
    start_equity: Decimal
    end_equity: Decimal
    return_pct: float
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration_ms: int
    exposure: float
    avg_hold_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as numbers (floats) like the rest of the machine-readable output."""
        return {k: (float(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}


def trades_of(positions: Iterable[Position]) -> list[Position]:
    return sorted((p for p in positions if p.status == "closed" and p.amount > 0 and p.pnl is not None),
                  key=lambda p: (p.closed_ms or 0, p.id or 0))


def _returns(points: list[tuple[int, Decimal]]) -> tuple[list[float], float | None]:
    rets = [float(b / a - 1) for (_, a), (_, b) in zip(points, points[1:]) if a > 0]
    gaps = sorted(t2 - t1 for (t1, _), (t2, _) in zip(points, points[1:]) if t2 > t1)
    if not gaps:
        return rets, None
    mid = len(gaps) // 2
    median = gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2
    return rets, YEAR_MS / median


def sharpe_sortino(points: list[tuple[int, Decimal]]) -> tuple[float | None, float | None]:
    rets, per_year = _returns(points)
    if len(rets) < 2 or per_year is None:
        return None, None
    n = len(rets)
    mean = sum(rets) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / (n - 1))
    down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / n)
    scale = math.sqrt(per_year)
    sharpe = mean / std * scale if std > 0 else None
    sortino = mean / down * scale if down > 0 else None
    return sharpe, sortino


def drawdown(points: list[tuple[int, Decimal]]) -> tuple[float, int]:
    """(max drawdown fraction, longest time under a previous peak in ms)."""
    if not points:
        return 0.0, 0
    peak, peak_ts = points[0][1], points[0][0]
    worst, longest, under = 0.0, 0, False
    for ts, eq in points:
        if eq >= peak:
            if under:
                longest = max(longest, ts - peak_ts)
            peak, peak_ts, under = eq, ts, False
        else:
            under = True
            if peak > 0:
                worst = max(worst, float((peak - eq) / peak))
    if under:
        longest = max(longest, points[-1][0] - peak_ts)
    return worst, longest


def worst_day(points: list[tuple[int, Decimal]]) -> tuple[float, int | None]:
    """(largest fall of the marked equity below its UTC day's start, that day's midnight in ms), the
    day's start being its first mark, as the risk gate counts ``risk.max_daily_loss_pct``."""
    worst, when, day, start = 0.0, None, None, Decimal(0)
    for ts, eq in points:
        if ts // DAY_MS != day:
            day, start = ts // DAY_MS, eq
        elif start > 0 and (loss := float((start - eq) / start)) > worst:
            worst, when = loss, day * DAY_MS
    return worst, when


def exposure(trades: list[Position], start_ms: int, end_ms: int) -> float:
    """Fraction of [start_ms, end_ms] with at least one position open (union of holding intervals)."""
    if end_ms <= start_ms:
        return 0.0
    spans = sorted((max(p.opened_ms, start_ms), min(p.closed_ms or end_ms, end_ms)) for p in trades)
    covered, cur_s, cur_e = 0, None, None
    for s, e in spans:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        covered += cur_e - cur_s
    return covered / (end_ms - start_ms)


def trade_stats(closed: list[Position], equity_curve: list[tuple[int, Decimal]],
                start_equity: Decimal) -> TradeStats:
    trades = trades_of(closed)
    pnls = [p.pnl for p in trades]
    wins = [x for x in pnls if x > 0]
    gross_profit = sum(wins, ZERO)
    gross_loss = -sum((x for x in pnls if x < 0), ZERO)
    pnl = sum(pnls, ZERO)
    curve = sorted(equity_curve)
    first_ts = curve[0][0] if curve else min((p.opened_ms for p in trades), default=0)
    points = [(first_ts, start_equity)] + curve
    end_equity = curve[-1][1] if curve else start_equity + pnl
    sharpe, sortino = sharpe_sortino(curve)
    mdd, mdd_ms = drawdown(points)
    last_ts = curve[-1][0] if curve else max((p.closed_ms or 0 for p in trades), default=0)
    holds = [p.closed_ms - p.opened_ms for p in trades if p.closed_ms is not None]
    return TradeStats(
        trades=len(trades), wins=len(wins), losses=sum(1 for x in pnls if x < 0),
        win_rate=len(wins) / len(trades) if trades else 0.0,
        profit_factor=float(gross_profit / gross_loss) if gross_loss > 0 else None,
        pnl=pnl, fees=sum((p.entry_fees + p.exit_fees for p in trades), ZERO),
        gross_profit=gross_profit, gross_loss=gross_loss,
        avg_pnl=pnl / len(trades) if trades else None,
        best=max(pnls) if pnls else None, worst=min(pnls) if pnls else None,
        start_equity=start_equity, end_equity=end_equity,
        return_pct=float(end_equity / start_equity - 1) if start_equity > 0 else 0.0,
        sharpe=sharpe, sortino=sortino, max_drawdown=mdd, max_drawdown_duration_ms=mdd_ms,
        exposure=exposure(trades, first_ts, last_ts),
        avg_hold_ms=sum(holds) // len(holds) if holds else None,
    )


def per_trade(closed: list[Position]) -> list[dict[str, Any]]:
    """One row per trade, for tables and JSON (money as floats)."""
    rows = []
    for p in trades_of(closed):
        cost = p.amount * p.entry_price
        rows.append({"id": p.id, "symbol": p.symbol, "strategy": p.strategy, "opened_ms": p.opened_ms,
                     "closed_ms": p.closed_ms, "amount": float(p.amount), "entry_price": float(p.entry_price),
                     "exit_price": None if p.exit_price is None else float(p.exit_price),
                     "fees": float(p.entry_fees + p.exit_fees), "pnl": float(p.pnl),
                     "return_pct": float(p.pnl / cost) if cost > 0 else 0.0, "exit_reason": p.exit_reason})
    return rows


def group_stats(closed: list[Position], key: Callable[[Position], str]) -> dict[str, dict[str, Any]]:
    """Per-strategy / per-pair breakdown: trades, wins, win rate, PnL, fees, profit factor, best, worst."""
    groups: dict[str, list[Position]] = {}
    for p in trades_of(closed):
        groups.setdefault(key(p), []).append(p)
    out = {}
    for name, ps in sorted(groups.items()):
        pnls = [p.pnl for p in ps]
        gp, gl = sum((x for x in pnls if x > 0), ZERO), -sum((x for x in pnls if x < 0), ZERO)
        out[name] = {"trades": len(ps), "wins": sum(1 for x in pnls if x > 0),
                     "win_rate": sum(1 for x in pnls if x > 0) / len(ps), "pnl": float(sum(pnls, ZERO)),
                     "fees": float(sum((p.entry_fees + p.exit_fees for p in ps), ZERO)),
                     "profit_factor": float(gp / gl) if gl > 0 else None,
                     "best": float(max(pnls)), "worst": float(min(pnls))}
    return out
