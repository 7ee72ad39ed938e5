"""Order-book checks of an entry: spread, depth and the slippage of walking the asks.

Skipped when no book is known (replay and backtests have none); the gate's approval says what
it was sized at either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.config import RiskConfig
from core.models import OrderBook
from core.trading.portfolio import to_decimal
from core.trading.rules import fmt_dec, fmt_pct


@dataclass(frozen=True)
class BookCheck:
    """Walking the asks for ``amount``: what it would cost and what depth is near the top."""

    best_bid: Decimal
    best_ask: Decimal
    spread: Decimal  # (ask - bid) / mid
    vwap: Decimal | None  # None: the visible book cannot fill the amount
    slippage: Decimal | None  # vwap / best ask - 1
    depth_near: Decimal  # base amount offered within max_slippage of the best ask


def walk_asks(book: OrderBook, amount: Decimal, max_slippage: Decimal) -> BookCheck:
    asks = [(to_decimal(p), to_decimal(a)) for p, a in book.asks if p > 0 and a > 0]
    bids = [(to_decimal(p), to_decimal(a)) for p, a in book.bids if p > 0 and a > 0]
    best_ask, best_bid = asks[0][0], bids[0][0]
    mid = (best_ask + best_bid) / 2
    left, cost = amount, Decimal(0)
    for price, qty in asks:
        take = min(left, qty)
        cost += take * price
        left -= take
        if left <= 0:
            break
    vwap = cost / amount if left <= 0 else None
    limit = best_ask * (1 + max_slippage)
    near = sum((q for p, q in asks if p <= limit), Decimal(0))
    return BookCheck(best_bid, best_ask, (best_ask - best_bid) / mid, vwap,
                     None if vwap is None else vwap / best_ask - 1, near)


def one_sided(book: OrderBook) -> tuple[str, str] | None:
    """A book empty on one side cannot price an entry."""
    if not book.asks or not book.bids:
        return "book", "the order book is empty on one side"
    return None


def check_book(book: OrderBook, amount: Decimal, base: str, r: RiskConfig) -> tuple[str, str] | None:
    """(check, reason) if buying ``amount`` from this book breaks a limit, else None."""
    max_slip = Decimal(str(r.max_slippage_pct))
    bc = walk_asks(book, amount, max_slip)
    if bc.spread > Decimal(str(r.max_spread_pct)):
        return "spread", f"spread {fmt_pct(bc.spread)} above risk.max_spread_pct ({fmt_pct(r.max_spread_pct)})"
    if bc.vwap is None:
        return "depth", f"the visible book cannot fill {amount} {base}"
    if bc.slippage > max_slip:
        return "slippage", (f"buying {amount} would cost {fmt_pct(bc.slippage)} over the best ask "
                            f"(risk.max_slippage_pct {fmt_pct(r.max_slippage_pct)})")
    need = amount * Decimal(str(r.min_depth_multiple))
    if bc.depth_near < need:
        return "depth", (f"{fmt_dec(bc.depth_near)} {base} offered within the slippage limit, need {fmt_dec(need)} "
                         f"({r.min_depth_multiple}x the order)")
    return None
