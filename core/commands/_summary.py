"""The end-of-run summary of `demo` and `run --replay`, and the last prices `status` shows.

A summary must agree with the books: the PnL a person reads is the change in marked-to-market
equity (closed trades *and* open positions), split into realised and unrealised, with the final
equity on its own line. Max drawdown is ``core.trading.stats``'s (peak to trough of the equity
curve, which records the marks the risk gate judges), so it agrees with the halt messages.
"""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

LAST_PRICES_KEY = "last_prices"  # bot_state: {"ts_ms", "prices": {symbol: price}}, for `status`


async def save_last_prices(store, report) -> None:
    """Remember the cycle's marks so `status` can value open positions without the network."""
    if report.prices:
        await store.set_state(LAST_PRICES_KEY, {"ts_ms": report.ts_ms,
                                                "prices": {s: float(p) for s, p in sorted(report.prices.items())}})


async def summarize(cfg, engine, store, pairs: int, started: float) -> dict[str, Any]:
    """The summary document (demo's --json keys first, then the split of the PnL)."""
    from core.trading.stats import trade_stats

    start = Decimal(cfg.paper.starting_balance)
    last = engine.last_report
    if last is not None:  # after the last cycle's trades: the curve holds the marks before them
        store.record_equity(last.ts_ms + 1, last.equity, last.cash)
    closed = await store.positions("closed")
    curve = await store.equity_curve()
    open_now = await store.positions("open")
    stats = trade_stats(closed, curve, start)
    final = last.equity if last is not None else (curve[-1][1] if curve else start)
    total = final - start
    return {"cycles": engine.cycles, "pairs": pairs, "duration_s": round(time.perf_counter() - started, 2),
            "trades": stats.trades, "win_rate": stats.win_rate, "pnl": float(stats.pnl), "fees": float(stats.fees),
            "max_drawdown": stats.max_drawdown, "open_positions": len(open_now), "final_equity": float(final),
            "start_equity": float(start), "peak_equity": float(max([start] + [e for _, e in curve])),
            "total_pnl": float(total),
            "return": float(total / start) if start > 0 else 0.0,
            "realised_pnl": float(stats.pnl), "unrealised_pnl": float(total - stats.pnl),
            "halts": list(last.halts) if last is not None else [], "interrupted": engine.stopping}


def print_summary(console, s: dict[str, Any], quote: str, what: str) -> None:
    colour = "green" if s["total_pnl"] >= 0 else "red"
    console.print(f"\n[bold]{what} finished[/]: {s['cycles']} cycles over {s['pairs']} pairs in "
                  f"{s['duration_s']:.1f} s" + (" [yellow](interrupted)[/]" if s.get("interrupted") else ""))
    console.print(f"final equity [bold]{s['final_equity']:,.2f}[/] {quote} from {s['start_equity']:,.2f}: "
                  f"[{colour}]{s['total_pnl']:+,.2f} ({s['return'] * 100:+.2f}%)[/]")
    console.print(f"  realised {s['realised_pnl']:+,.2f} on {s['trades']} closed trades (win rate "
                  f"{s['win_rate'] * 100:.1f}%, fees {s['fees']:,.2f}); unrealised {s['unrealised_pnl']:+,.2f} "
                  f"on {s['open_positions']} open position(s)")
    console.print(f"  max drawdown {s['max_drawdown'] * 100:.2f}% (peak to trough of the marked equity, as "
                  "the risk gate measures it)")
    for h in s.get("halts") or []:
        console.print(f"  [yellow]halt in force[/]: {h}", highlight=False)
