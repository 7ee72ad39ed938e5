"""Exchange order rules: turn a desired order into one the exchange will accept, or refuse it.

Amounts are rounded *down* to the lot step (never buy more than we can pay for, never sell
more than we hold); prices to the tick (buy limits down, sell limits up, so rounding never
makes a limit more aggressive than asked). The minimum notional is checked at the price rounded
*down* on both sides: a market order is checked by the exchange at its own (average) price, not
at our tick-rounded estimate, so rounding a sell's price up would pass orders the exchange refuses.

Also the number formats for log lines, so a fill shows the market's precision, not 13 decimals.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal

from core.models import BUY, Fill, Market


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
    down = round_step(price, market.price_tick, ROUND_DOWN)
    p = down if side == BUY else round_step(price, market.price_tick, ROUND_UP)
    a = round_step(amount, market.amount_step, ROUND_DOWN)
    if market.max_amount is not None and a > market.max_amount:
        a = round_step(market.max_amount, market.amount_step, ROUND_DOWN)
    if a <= 0 or (market.min_amount is not None and a < market.min_amount):
        return Refusal(f"amount {a} below the minimum {market.min_amount or market.amount_step} for {market.symbol}")
    if market.min_cost is not None and a * down < market.min_cost:
        return Refusal(f"order value {(a * down).normalize():f} below the minimum notional {fmt_dec(market.min_cost)} "
                       f"for {market.symbol}")
    return ValidOrder(a, p)


# --- numbers in messages ----------------------------------------------------------------------
def fmt_dec(d: Decimal, places: int = 8) -> str:
    """At most ``places`` decimals, trailing zeros dropped (sizes and equity in risk messages)."""
    q = d.quantize(Decimal(1).scaleb(-places)) if d.as_tuple().exponent < -places else d
    return f"{q.normalize():f}"


def fmt_pct(x: Decimal | float) -> str:
    return f"{float(x) * 100:.2f}%"


def at_step(value: Decimal | None, step: Decimal | None, places: int = 8) -> str:
    """``value`` at the decimals of a tick or lot step (rounded half-even), for log lines; the store
    keeps the exact figure. Without a step: at most ``places`` decimals. A non-zero value the step
    would show as 0 (a tiny fee) keeps two significant digits instead."""
    if value is None:
        return "n/a"
    if not step or not value.is_finite():
        return fmt_dec(value, places)
    exp = min(step.normalize().as_tuple().exponent, 0)
    q = value.quantize(Decimal(1).scaleb(exp), rounding=ROUND_HALF_EVEN)
    if q == 0 and value != 0:
        q = value.quantize(Decimal(1).scaleb(value.adjusted() - 1), rounding=ROUND_HALF_EVEN)
    return f"{q:f}"


def fill_text(market: Market, f: Fill) -> str:
    """'buy 5.275 HNT/USDT @ 18.963 fee 0.100 USDT': amount at the lot step, price at the tick, the fee
    at the precision of the asset it is paid in (quote: the tick; base: the lot step; other: 8 places)."""
    fee_step = (market.price_tick if f.fee_asset in (None, market.quote)
                else market.amount_step if f.fee_asset == market.base else None)
    fee = at_step(f.fee, fee_step) if f.fee else "0"
    return (f"{f.side} {at_step(f.quantity, market.amount_step)} {f.symbol} @ {at_step(f.price, market.price_tick)} "
            f"fee {fee} {f.fee_asset or ''}").rstrip()
