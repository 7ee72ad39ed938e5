"""Answers for the Telegram remote from the running engine: its live state, not a copy.

Texts are short and plain (a phone screen); numbers keep their significant digits (never cut).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal

from core.timeframes import DAY_MS


def num(v: Decimal | float | None) -> str:
    """Money in the quote currency: cents from 1 up, four significant digits below (a BTC-quoted
    account's 0.0001234 must not read 0.00)."""
    if v is None:
        return "-"
    d = Decimal(str(v))
    if d == 0 or abs(d) >= 1:
        return f"{float(d):,.2f}"
    return format(d.quantize(Decimal(1).scaleb(d.adjusted() - 3)), "f")


def signed(v: Decimal) -> str:
    """Money with its sign: '+12.30' or '-4.05'."""
    return f"{'+' if v >= 0 else ''}{num(v)}"


def tally(closed) -> tuple[Decimal, int]:
    """(net PnL, trades won) of closed positions."""
    return sum((p.pnl for p in closed), Decimal(0)), sum(1 for p in closed if p.pnl > 0)


def qty(v: Decimal) -> str:
    """An amount as the exchange gave it: every significant digit, no exponent, no trailing zeros."""
    return format(Decimal(v).normalize(), "f")


def price(v: Decimal | float) -> str:
    d = Decimal(str(v))
    return format(d.normalize(), "f") if d < 1000 else f"{float(d):,.2f}"


class EngineRemote:
    """``core.notify.telegram.Remote`` over an ``Engine``."""

    def __init__(self, engine, wall_ms=lambda: int(time.time() * 1000)) -> None:
        self.engine = engine
        self.wall_ms = wall_ms

    @property
    def quote(self) -> str:
        return self.engine.cfg.universe.quote

    async def _open(self):
        return [p for p in self.engine.executor.positions if str(p.status) != "closed"]

    async def _prices(self, symbols) -> dict[str, float]:
        try:
            return await self.engine.prices(set(symbols))
        except Exception:  # noqa: BLE001 - an answer without prices beats no answer
            return {}

    async def status(self) -> str:
        e = self.engine
        rep = e.last_report
        lines = [f"pitrader {e.cfg.mode}"]
        if rep is not None:
            lines.append(f"equity {num(rep.equity)} {self.quote} (cash {num(rep.cash)})")
            start = e.risk.day_start_equity
            if start:
                pnl = rep.equity - start
                lines.append(f"today {signed(pnl)} {self.quote} "
                             f"({float(pnl / start) * 100:+.2f} %)")
            lines.append(f"{rep.open_positions} open positions; last scan "
                         f"{datetime.fromtimestamp(rep.ts_ms / 1000, timezone.utc):%H:%M UTC}, "
                         f"{rep.scan.pairs_scanned} pairs")
        else:
            lines.append("starting: no scan yet")
        for h in e.risk.halts:
            lines.append(f"HALT {h}")
        paused = e.pause_reason()
        if paused:
            lines.append(f"PAUSED: {paused}")
        return "\n".join(lines)

    async def positions(self) -> str:
        pos = await self._open()
        if not pos:
            return "No open positions."
        prices = await self._prices(p.symbol for p in pos)
        lines = []
        for p in pos:
            line = f"{p.symbol} #{p.id}: {qty(p.amount)} @ {price(p.entry_price)}"
            last = prices.get(p.symbol)
            if last is not None:
                pnl = (Decimal(str(last)) - p.entry_price) * p.amount - p.entry_fees
                pct = float(Decimal(str(last)) / p.entry_price - 1) * 100 if p.entry_price else 0.0
                line += f", now {price(last)}, {signed(pnl)} {self.quote} ({pct:+.2f} %)"
            else:
                line += ", no price now"
            line += f"; stop {price(p.stop)}, target {price(p.target)}"
            lines.append(line)
        return "\n".join(lines)

    async def _closed(self, since_ms: int | None):
        closed = await self.engine.store.positions("closed")
        return [p for p in closed if p.pnl is not None and (since_ms is None or (p.closed_ms or 0) >= since_ms)]

    async def profit(self, days: int | None) -> str:
        since = None if days is None else self.wall_ms() - days * DAY_MS
        closed = await self._closed(since)
        span = "all time" if days is None else f"last {days} days"
        if not closed:
            return f"No closed trades ({span})."
        pnl, wins = tally(closed)
        fees = sum((p.entry_fees + p.exit_fees for p in closed), Decimal(0))
        best = max(closed, key=lambda p: p.pnl)
        return (f"{span}: {len(closed)} trades, {wins} won ({wins / len(closed) * 100:.0f} %)\n"
                f"PnL {signed(pnl)} {self.quote} after {num(fees)} fees\n"
                f"best {best.symbol} {signed(best.pnl)}")

    async def daily(self) -> str:
        today = self.wall_ms() // DAY_MS
        closed = await self._closed((today - 6) * DAY_MS)
        lines = ["UTC day: realised PnL (trades)"]
        for d in range(today - 6, today + 1):
            day = [p for p in closed if (p.closed_ms or 0) // DAY_MS == d]
            label = datetime.fromtimestamp(d * DAY_MS / 1000, timezone.utc).strftime("%a %d %b")
            lines.append(f"{label}: {signed(tally(day)[0])} ({len(day)})")
        return "\n".join(lines)

    async def balance(self) -> str:
        pos = await self._open()
        prices = await self._prices(p.symbol for p in pos)
        pf = await self.engine.executor.portfolio(prices)
        lines = [f"{self.quote}: {num(pf.cash)} free"]
        for p in pos:
            last = pf.prices.get(p.symbol)
            value = f" = {num(p.amount * last)} {self.quote}" if last is not None else ""
            lines.append(f"{p.base}: {qty(p.amount)}{value}")
        lines.append(f"equity {num(pf.equity)} {self.quote}")
        return "\n".join(lines)

    async def daily_summary(self) -> str:
        """The daily notification: equity, today's PnL, trades closed today, open positions."""
        today = await self.profit_since(self.wall_ms() // DAY_MS * DAY_MS, "today")
        return f"Daily summary\n{await self.status()}\n{today}\n{await self.positions()}"

    async def profit_since(self, since_ms: int, span: str) -> str:
        closed = await self._closed(since_ms)
        if not closed:
            return f"No closed trades ({span})."
        pnl, wins = tally(closed)
        return f"{span}: {len(closed)} trades closed, {wins} won, PnL {signed(pnl)} {self.quote}"

    async def pause(self, who: str) -> str:
        changed = await self.engine.between_steps(lambda: self.engine.pause(who))
        return "New entries paused (exits go on). /resume to allow them again." if changed else "Already paused."

    async def resume(self, who: str) -> str:
        changed = await self.engine.between_steps(lambda: self.engine.resume(who))
        return "Entries allowed again." if changed else "Entries were not paused."

    async def close_preview(self, symbol: str) -> str | None:
        pos = [p for p in await self._open() if p.symbol == symbol]
        if not pos:
            return None
        return "\n".join(f"{p.symbol} #{p.id}: {qty(p.amount)} @ {price(p.entry_price)} ({p.strategy})" for p in pos)

    async def close(self, symbol: str, who: str) -> str:
        # between the loop's steps: never racing its own exit of the same position
        done = await self.engine.between_steps(lambda: self.engine.close_symbol(symbol, who))
        return f"Sold {symbol} at market ({done} position{'s' if done != 1 else ''})." if done else \
            f"No open position in {symbol} any more."
