"""How open orders meet the candles as market time passes: fills, stop triggers, trailing stops.

The data has OHLC only, so a candle is walked as a straight-line price path: open, low, high,
close for a rising candle (close >= open), open, high, low, close for a falling one. The open is
a jump from the previous close (a gap), the rest is continuous, so a level between two path
points is crossed exactly at that level.

- Resting LIMIT / LIMIT_MAKER (and triggered stop-limit) orders: see ``matching``'s docstring
  (filled as maker at their price by candles that trade *through* them).
- A stop order triggers when the last price *reaches* its stop (a touch triggers): STOP_LOSS
  sells at price <= stop, buys at price >= stop; TAKE_PROFIT the other way round. Triggered
  inside a candle it triggers at the stop price; on a gap, at the open.
- Trailing stops (``trailingDelta`` bps, Binance's trailing-stop FAQ): with a ``stopPrice`` they
  start tracking when the stop condition is first met (the extreme starts at that price),
  without one at placement (from the last price). A sell then triggers once the price falls
  ``trailingDelta`` bps below the highest price since tracking began; a buy once it rises that
  far above the lowest.
- On trigger, STOP_LOSS / TAKE_PROFIT become a MARKET order and STOP_LOSS_LIMIT /
  TAKE_PROFIT_LIMIT a LIMIT order (its timeInForce applies), executed as taker against a
  synthetic book centred on the trigger price (``Emulator.book_at``); what a limit order does
  not fill at once rests at its price. So a stop-limit whose limit the market has gapped
  through (open beyond the limit) does not fill until a later price trades back through it.
- Trades and the trigger are stamped with the candle's close time (open + tf - 1), like
  resting fills. In an OCO the leg whose event comes first on the path wins; the other leg is
  EXPIRED (``orderlist``).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from tests.support.emulator.params import Q8, ZERO, q8

if TYPE_CHECKING:
    from tests.support.emulator.matching import MarketView
    from tests.support.emulator.orders import EmuOrder, EmuTrade
    from tests.support.emulator.orderlist import OrderList
    from tests.support.emulator.rules import SymbolRules

Row = tuple[int, int, float, float, float, float, float]  # ts, tf, open, high, low, close, volume


@dataclass(frozen=True, slots=True)
class Hit:
    pos: float  # where on the candle path: 0 = the open, i + f = fraction f along segment i
    price: Decimal


def would_trigger(side: str, otype: str, stop: Decimal, last: Decimal) -> bool:
    """True when a stop at ``stop`` is already met at ``last`` (Binance rejects such orders)."""
    rising = (side == "BUY") == otype.startswith("STOP_LOSS")  # triggers on a rise to the stop
    return last >= stop if rising else last <= stop


def candle_path(o: float, h: float, low: float, c: float) -> list[Decimal]:
    pts = (o, low, h, c) if c >= o else (o, h, low, c)
    return [Decimal(repr(p)) for p in pts]


def first_through(side: str, limit: Decimal, path: list[Decimal]) -> Hit | None:
    """Where the path first trades strictly through a resting limit order's price."""
    s = 1 if side == "SELL" else -1  # in x = s * price a fill needs x > s * limit
    lim = limit * s
    prev: Decimal | None = None
    for i, p in enumerate(path):
        x = p * s
        if x > lim:
            if prev is None:
                return Hit(0.0, p)
            return Hit(i - 1 + float((lim - prev) / (x - prev)), limit)
        prev = x
    return None


def find_trigger(order: EmuOrder, path: list[Decimal], event_ms: int) -> Hit | None:
    """Walk a waiting stop order over one candle path; its trigger point, if it has one.

    Updates a trailing stop's tracking state (``trailing_time``, ``trail_extreme``). Works in
    x = s * price (s = +1 sell, -1 buy): stop-loss conditions become "x <= stop", take-profit
    ones "x >= stop", and every trailing stop triggers on a fall of delta from the highest x.
    """
    s = 1 if order.side == "SELL" else -1
    above = order.type.startswith("TAKE_PROFIT")
    trailing = order.trailing_delta > 0
    d = Decimal(order.trailing_delta) / 10000
    level = order.stop_price * s if order.stop_price else None
    active = trailing and order.trailing_time != -1
    m = order.trail_extreme * s if active else ZERO

    def met(x: Decimal) -> bool:
        return level is not None and (x >= level if above else x <= level)

    def hit(pos: float, x: Decimal) -> Hit:
        if trailing and active:
            order.trail_extreme = m * s
        return Hit(pos, x * s)

    prev: Decimal | None = None
    for i, p in enumerate(path):
        x = p * s
        if prev is None:  # the open: a jump from the previous close
            if not active:
                if met(x):
                    if not trailing:
                        return hit(0.0, x)
                    active, m, order.trailing_time = True, x, event_ms
            elif x > m:
                m = x
            elif x <= m - abs(m) * d:
                return hit(0.0, x)
            prev = x
            continue
        a, start = prev, prev
        prev = x
        if not active:
            if not met(x):
                continue
            assert level is not None
            f = float((level - a) / (x - a)) if x != a else 0.0
            if not trailing:
                return hit(i - 1 + f, level)
            active, m, order.trailing_time, start = True, level, event_ms, level
        if x >= start:
            m = max(m, x)
            continue
        trig = m - abs(m) * d
        if x <= trig:
            f = float((trig - a) / (x - a)) if x != a else 0.0
            return hit(i - 1 + min(max(f, 0.0), 1.0), trig)
    if trailing and active:
        order.trail_extreme = m * s
    return None


def _affordable(fills: list[tuple[Decimal, Decimal]], budget: Decimal, step: Decimal) -> list[tuple[Decimal, Decimal]]:
    """The leading part of a buy's book walk that ``budget`` quote pays for."""
    out: list[tuple[Decimal, Decimal]] = []
    spent = ZERO
    for p, q in fills:
        cost = q8(p * q)
        if spent + cost <= budget:
            out.append((p, q))
            spent += cost
            continue
        take = ((budget - spent) / p / step).to_integral_value(ROUND_DOWN) * step
        while take > 0 and spent + q8(p * take) > budget:
            take -= step
        if take > 0:
            out.append((p, take))
        break
    return out


class RestingMatcher:
    """Mixed into ``Account``: what happens to its open orders when market time advances."""

    # provided by Account / OrderLists
    free: dict[str, Decimal]
    lists: list[OrderList]
    partial_fill_ratio: float
    if TYPE_CHECKING:
        def open_orders(self, symbol: str | None = None) -> list[EmuOrder]: ...
        def _fill(self, order: EmuOrder, rules: SymbolRules, price: Decimal, qty: Decimal, ts: int,
                  maker: bool) -> EmuTrade: ...
        def _release(self, order: EmuOrder, rules: SymbolRules) -> None: ...
        @staticmethod
        def _walk(book: Any, side: str, qty: Decimal, limit: Decimal | None) -> list[tuple[Decimal, Decimal]]: ...
        def end_list(self, lst: OrderList, winner: EmuOrder, ts: int) -> None: ...
        def list_orders(self, lst: OrderList) -> list[EmuOrder]: ...

    def match_resting(self, rules_of: dict[str, SymbolRules], market: MarketView, now_ms: int) -> list[EmuTrade]:
        """Fill and trigger open orders against the candles that closed since they were last looked at."""
        new: list[EmuTrade] = []
        for order in self.open_orders():
            if not order.is_open:  # expired by its OCO sibling earlier in this pass
                continue
            rules = rules_of[order.symbol]
            lst = self.lists[order.order_list_id] if order.order_list_id >= 0 else None
            if lst is not None and lst.is_open:
                new += self._match_list(lst, rules, market, now_ms)
            else:
                new += self._match_order(order, rules, market, now_ms)
        return new

    def _match_order(self, order: EmuOrder, rules: SymbolRules, market: MarketView, now_ms: int) -> list[EmuTrade]:
        new: list[EmuTrade] = []
        for row in market.candle_rows(order.symbol, order.scan_from, now_ms):
            ts, tf, o, high, low, c, volume = row
            order.scan_from = ts + tf
            if order.is_waiting:
                path = candle_path(o, high, low, c)
                hit = find_trigger(order, path, ts + tf - 1)
                if hit is not None:
                    new += self._trigger(order, rules, market, hit, path, row)
                    if not order.is_open:
                        break
                continue
            through = low < float(order.price) if order.side == "BUY" else high > float(order.price)
            if not through:
                continue
            trade = self._maker_fill(order, rules, ts + tf - 1, volume)
            if trade is not None:
                new.append(trade)
                if not order.is_open:
                    break
        return new

    def _match_list(self, lst: OrderList, rules: SymbolRules, market: MarketView, now_ms: int) -> list[EmuTrade]:
        """An executing OCO: the first leg to trigger or trade on the path wins, the other expires."""
        legs = self.list_orders(lst)
        start = min(leg.scan_from for leg in legs)
        for row in market.candle_rows(lst.symbol, start, now_ms):
            ts, tf, o, high, low, c, volume = row
            path = candle_path(o, high, low, c)
            hits: list[tuple[float, int, Hit]] = []
            for k, leg in enumerate(legs):
                leg.scan_from = ts + tf
                if leg.is_waiting:
                    found = find_trigger(leg, path, ts + tf - 1)
                elif self._maker_qty(leg, rules, volume) > 0:
                    found = first_through(leg.side, leg.price, path)
                else:
                    found = None
                if found is not None:
                    hits.append((found.pos, k, found))
            if not hits:
                continue
            _, k, found = min(hits)
            winner = legs[k]
            self.end_list(lst, winner, ts + tf - 1)
            if winner.is_waiting:
                new = self._trigger(winner, rules, market, found, path, row)
            else:
                trade = self._maker_fill(winner, rules, ts + tf - 1, volume)
                new = [trade] if trade is not None else []
            if winner.is_open:
                new += self._match_order(winner, rules, market, now_ms)
            return new
        return []

    def _maker_qty(self, order: EmuOrder, rules: SymbolRules, volume: float) -> Decimal:
        step = rules.step if rules.step > 0 else Q8
        cap = (order.orig_qty * Decimal(repr(self.partial_fill_ratio)) / step).to_integral_value(ROUND_DOWN) * step
        by_volume = (Decimal(repr(volume)) / step).to_integral_value(ROUND_DOWN) * step
        return min(order.remaining, max(cap, step), by_volume)

    def _maker_fill(self, order: EmuOrder, rules: SymbolRules, ts: int, volume: float) -> EmuTrade | None:
        qty = self._maker_qty(order, rules, volume)
        if qty <= 0:
            return None
        trade = self._fill(order, rules, order.price, qty, ts, maker=True)
        if order.remaining == 0:
            order.status = "FILLED"
            self._release(order, rules)
        else:
            order.status = "PARTIALLY_FILLED"
        return trade

    def _trigger(self, order: EmuOrder, rules: SymbolRules, market: MarketView, hit: Hit, path: list[Decimal],
                 row: Row) -> list[EmuTrade]:
        """A stop order triggered at ``hit``: run it as a market / limit order from that point."""
        ts, tf, volume = row[0], row[1], row[6]
        t = ts + tf - 1
        order.working_time = order.update_time = t
        book = market.book_at(order.symbol, ts, hit.price)
        buy = order.side == "BUY"
        if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
            fills = self._walk(book, order.side, order.remaining, None)
            if buy:
                fills = _affordable(fills, order.locked + self.free.get(rules.quote, ZERO),
                                    rules.step if rules.step > 0 else Q8)
            trades = [self._fill(order, rules, p, q, t, maker=False) for p, q in fills]
            order.status = "FILLED" if order.remaining == 0 else "EXPIRED"
            self._release(order, rules)
            return trades
        (bid, _), (ask, _) = book.top()
        marketable = order.price >= ask if buy else order.price <= bid
        fills = self._walk(book, order.side, order.remaining, order.price) if marketable else []
        if order.time_in_force == "FOK" and sum((q for _, q in fills), ZERO) < order.remaining:
            fills = []
        trades = [self._fill(order, rules, p, q, t, maker=False) for p, q in fills]
        if order.remaining == 0:
            order.status = "FILLED"
        elif order.time_in_force in ("IOC", "FOK"):
            order.status = "EXPIRED"
        else:
            order.status = "PARTIALLY_FILLED" if trades else "NEW"
            later = [p for i, p in enumerate(path) if i > hit.pos]  # the rest of this candle
            if any(p < order.price for p in later) if buy else any(p > order.price for p in later):
                trade = self._maker_fill(order, rules, t, volume)
                if trade is not None:
                    trades.append(trade)
        if not order.is_open:
            self._release(order, rules)
        return trades
