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


# --- exchange-side protective orders ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Protective:
    """A SELL protection the exchange will accept: a stop-limit, and an OCO take-profit when ``target``."""

    amount: Decimal
    stop: Decimal
    limit: Decimal
    target: Decimal | None
    note: str = ""  # why an OCO became a stop alone, when it did


def conform_protection(r, amount: Decimal, stop: Decimal, offset: Decimal, target: Decimal | None,
                       avg_price: Decimal | None, open_orders: int = 0, open_algo: int = 0) -> Protective | Refusal:
    """Apply every filter a SELL stop-limit (and an OCO's LIMIT_MAKER take-profit) must pass on
    Binance spot: order types / ocoAllowed, PRICE_FILTER on price and stopPrice (tick, min, max),
    LOT_SIZE, NOTIONAL / MIN_NOTIONAL per leg, PERCENT_PRICE_BY_SIDE (a sell's limit against the
    average price; a too-deep limit is raised up to the bound, never above the stop), MAX_NUM_ORDERS
    and MAX_NUM_ALGO_ORDERS (``open_orders`` / ``open_algo``: what already rests on the symbol).
    ``r`` is a ``core.exchange.ccxt_orders.SymbolRules``. Rounding: the stop up (never looser than
    asked), the limit down (room to fill), the target up (never sells below it)."""
    if r.known and "STOP_LOSS_LIMIT" not in r.order_types:
        return Refusal(f"{r.symbol} does not accept STOP_LOSS_LIMIT orders")
    note = ""
    if target is not None and r.known and not (r.oco_allowed and "LIMIT_MAKER" in r.order_types):
        target, note = None, "OCO not allowed on the symbol: stop-limit alone"
    a = round_step(amount, r.step, ROUND_DOWN)
    if r.max_qty is not None and a > r.max_qty:
        a = round_step(r.max_qty, r.step, ROUND_DOWN)
    if a <= 0 or (r.min_qty is not None and a < r.min_qty):
        return Refusal(f"amount {fmt_dec(a)} below the minimum {r.min_qty or r.step} for {r.symbol}")
    s = round_step(stop, r.tick, ROUND_UP)
    lim = round_step(stop * (1 - offset), r.tick, ROUND_DOWN)
    if avg_price is not None and r.ask_down is not None:
        floor = round_step(avg_price * r.ask_down, r.tick, ROUND_UP)
        if lim < floor:
            if floor > s:
                return Refusal(f"stop {fmt_dec(s)} lies below what PERCENT_PRICE_BY_SIDE allows a sell on {r.symbol} "
                               f"({fmt_dec(floor)})")
            lim = floor
    for name, px in (("stop", s), ("limit", lim)):
        if px <= 0 or (r.min_price is not None and px < r.min_price) or (r.max_price is not None
                                                                         and px > r.max_price):
            return Refusal(f"{name} price {fmt_dec(px)} outside the PRICE_FILTER of {r.symbol}")
    if r.min_notional is not None and a * lim < r.min_notional:
        return Refusal(f"stop-limit value {fmt_dec(a * lim)} below the minimum notional {fmt_dec(r.min_notional)} "
                       f"for {r.symbol}")
    if target is not None:
        t = round_step(target, r.tick, ROUND_UP)
        why = None
        if t <= s or (r.max_price is not None and t > r.max_price):
            why = "take-profit outside the PRICE_FILTER or not above the stop"
        elif avg_price is not None and r.ask_up is not None and t > avg_price * r.ask_up:
            why = "take-profit above what PERCENT_PRICE_BY_SIDE allows"
        elif r.max_notional is not None and a * t > r.max_notional:
            why = "take-profit value above the maximum notional"
        elif r.max_orders is not None and open_orders + 2 > r.max_orders:
            why = "MAX_NUM_ORDERS leaves room for one order only"
        if why:
            target, note = None, f"{why}: stop-limit alone"
        else:
            target = t
    if r.max_orders is not None and open_orders + (2 if target is not None else 1) > r.max_orders:
        return Refusal(f"MAX_NUM_ORDERS ({r.max_orders}) reached on {r.symbol}")
    if r.max_algo_orders is not None and open_algo + 1 > r.max_algo_orders:
        return Refusal(f"MAX_NUM_ALGO_ORDERS ({r.max_algo_orders}) reached on {r.symbol}")
    return Protective(a, s, lim, target, note)
