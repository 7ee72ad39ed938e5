"""Entry pricing: the reference price of an entry and the stop and target the risk gate uses.

One rule for the gate and for `pitrader scan`, so what a scan shows is what the engine would
enter with: the strategy's stop, but never wider than ``trading.stop_loss_pct``; the strategy's
target if above the price, else ``trading.take_profit_pct`` above; both on the market's tick
(stop rounded up, target down: rounding never widens the risk or promises more).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from core.config import TradingConfig
from core.models import Market, Opportunity, OrderBook
from core.trading.portfolio import to_decimal
from core.trading.rules import round_step


@dataclass(frozen=True, slots=True)
class Bracket:
    price: Decimal  # the reference price: limit price, or where a market buy starts
    stop: Decimal
    target: Decimal


def reference_price(opp: Opportunity, market: Market, book: OrderBook | None, order_type: str) -> Decimal:
    """A limit buys at the signal's price on the tick (rounded down); a market buy starts at the
    best ask when a book is known, else at the signal's price."""
    ref = to_decimal(opp.price)
    if order_type == "limit":
        return round_step(ref, market.price_tick, ROUND_DOWN)
    if book is not None:
        return to_decimal(book.asks[0][0])
    return ref


def stop_and_target(ref: Decimal, strategy_stop: float, strategy_target: float, tick: Decimal | None,
                    t: TradingConfig) -> tuple[Decimal, Decimal]:
    """The stop and target an entry at ``ref`` gets (pure; NaN from a strategy means none given)."""
    floor = ref * (1 - Decimal(str(t.stop_loss_pct)))
    s = to_decimal(strategy_stop) if strategy_stop == strategy_stop else Decimal(0)
    stop = max(s, floor) if 0 < s < ref else floor
    stop = min(round_step(stop, tick, ROUND_UP), ref)
    tg = to_decimal(strategy_target) if strategy_target == strategy_target else Decimal(0)
    target = tg if tg > ref else ref * (1 + Decimal(str(t.take_profit_pct)))
    return stop, round_step(target, tick, ROUND_DOWN)


def entry_bracket(opp: Opportunity, market: Market, t: TradingConfig,
                  book: OrderBook | None = None) -> Bracket | tuple[str, str]:
    """Price, stop and target of an entry on ``opp``, or (check, reason) when none can be set."""
    ref = reference_price(opp, market, book, t.order_type)
    if ref <= 0:
        return "price", f"no usable price ({ref})"
    stop, target = stop_and_target(ref, opp.stop, opp.target, market.price_tick, t)
    if not (stop < ref < target):
        return "stop", (f"stop {stop} / target {target} do not bracket the price {ref} "
                        f"at the market's tick {market.price_tick}")
    return Bracket(ref, stop, target)


def gate_levels(opps: list[Opportunity], markets: dict[str, Market], t: TradingConfig) -> list[Opportunity]:
    """``opps`` with the stop and target the gate would enter with at the signal's price (what
    `pitrader scan` shows); an opportunity on an unknown market, or that no stop can bracket, as is."""
    out = []
    for o in opps:
        m = markets.get(o.symbol)
        b = entry_bracket(o, m, t) if m is not None else None
        out.append(replace(o, stop=float(b.stop), target=float(b.target)) if isinstance(b, Bracket) else o)
    return out
