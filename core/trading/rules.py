"""Exchange order rules: turn a desired order into one the exchange will accept, or refuse it.

Amounts are rounded *down* to the lot step (never buy more than we can pay for, never sell
more than we hold); prices to the tick (buy limits down, sell limits up, so rounding never
makes a limit more aggressive than asked).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from core.models import BUY, Market


@dataclass(frozen=True, slots=True)
class ValidOrder:
    amount: Decimal
    price: Decimal  # the limit price, or the reference price of a market order

    @property
    def cost(self) -> Decimal:
        return self.amount * self.price


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


def round_step(value: Decimal, step: Decimal | None, rounding: str = ROUND_DOWN) -> Decimal:
    if not step:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step


def conform_order(market: Market, side: str, amount: Decimal, price: Decimal) -> ValidOrder | Refusal:
    """Apply lot step, tick size, min/max amount and min notional; refuse with a reason otherwise."""
    if not market.active:
        return Refusal(f"{market.symbol} is not trading on the exchange")
    if price <= 0 or amount <= 0:
        return Refusal(f"non-positive amount {amount} or price {price}")
    p = round_step(price, market.price_tick, ROUND_DOWN if side == BUY else ROUND_UP)
    a = round_step(amount, market.amount_step, ROUND_DOWN)
    if market.max_amount is not None and a > market.max_amount:
        a = round_step(market.max_amount, market.amount_step, ROUND_DOWN)
    if a <= 0 or (market.min_amount is not None and a < market.min_amount):
        return Refusal(f"amount {a} below the minimum {market.min_amount or market.amount_step} for {market.symbol}")
    if market.min_cost is not None and a * p < market.min_cost:
        return Refusal(f"order value {(a * p).normalize():f} below the minimum notional {market.min_cost} "
                       f"for {market.symbol}")
    return ValidOrder(a, p)
