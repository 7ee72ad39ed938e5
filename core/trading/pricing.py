"""Entry pricing: the reference price of an entry and the stop and target the risk gate uses.

One rule for the gate and for `pitrader scan`, so what a scan shows is what the engine would
enter with. Stop and target come from one risk unit R = price - stop:

- the stop is the strategy's, but never wider than ``trading.stop_loss_pct`` below the price;
- the target keeps the strategy's reward:risk: when the stop is clamped, the target is pulled in
  by the same factor (a 2 ATR stop / 4 ATR target clamped to 3 % gives a 6 % target, still 2R),
  so a clamp never turns a 2:1 plan into a 4:1 one that is rarely reached;
- without a strategy target (none, or not a tick above the price), ``trading.take_profit_pct`` above;

both on the market's tick (stop rounded up, target down: rounding never widens the risk or
promises more).
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
    planned = s if 0 < s < ref else floor  # the strategy's risk unit (the widest stop if none given)
    stop = max(planned, floor)
    tg = to_decimal(strategy_target) if strategy_target == strategy_target else Decimal(0)
    target = Decimal(0)
    if tg > ref:  # the strategy's target keeps its reward:risk when the stop is pulled in
        target = round_step(ref + (tg - ref) * (ref - stop) / (ref - planned), tick, ROUND_DOWN)
    if not target > ref:  # none, or not a tick above the price
        target = round_step(ref * (1 + Decimal(str(t.take_profit_pct))), tick, ROUND_DOWN)
    stop = min(round_step(stop, tick, ROUND_UP), ref)
    return stop, target


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
