"""The emulated spot account: balances, orders, trades and a simple matching engine (Decimal).

Matching rules (documented behaviour tests and helpers rely on):
- MARKET orders walk the synthetic book (one trade per level). If the book runs out the rest
  is not filled and the order ends EXPIRED, as on Binance. ``quoteOrderQty`` is supported.
- LIMIT orders that are marketable fill at once against the book as taker, up to the limit
  price; GTC leftovers rest, IOC leftovers expire, FOK fills all or expires. LIMIT_MAKER that
  would match is rejected ("Order would immediately match and take.").
- A resting order fills, as maker at its own price, on each later candle (open time at or
  after the order's time, closed at "now") that *trades through* it: low < price for a buy,
  high > price for a sell (a touch is not a fill). Per such candle it fills at most
  ``partial_fill_ratio`` x the original quantity (rounded down to the lot step, at least one
  step) and never more than the candle's volume: ratio 1.0 (default) fills at once, 0.5
  gives a PARTIALLY_FILLED order that completes on the next candle through the price.
- STOP_LOSS(_LIMIT) / TAKE_PROFIT(_LIMIT) orders (with ``stopPrice`` and/or ``trailingDelta``)
  wait, unworking, until the candles trigger them (``triggers.py``), then act as a MARKET or
  LIMIT order; order lists (OCO) are in ``orderlist.py``.
- Commission: ``fee_rate`` (0.1 %) of what is *received*: base asset on buys, quote asset on
  sells (Binance's default without BNB), quantized to 8 decimals (half up).
- ``newClientOrderId`` must be unique among *open* orders (-2010 "Duplicate order sent.");
  like Binance, an id whose order is closed may be used again. Lookups by
  ``origClientOrderId`` return the most recent order with that id.

Validation is split like Binance's: ``check`` is what the API layer rejects before the matching
engine sees the order (parameters, order types, filters, order counts; cancelReplace runs it
before cancelling), ``execute`` what the engine rejects (duplicate id, funds, "would match",
"would trigger").
"""
from __future__ import annotations

from dataclasses import asdict
from decimal import ROUND_DOWN, Decimal
from typing import Any, Iterator, Protocol

from tests.support.emulator.book import Book
from tests.support.emulator.orderlist import OrderList, OrderLists
from tests.support.emulator.orders import EmuOrder, EmuTrade, OrderSpec
from tests.support.emulator.params import (ORDER_TYPES, PRICED_TYPES, Q8, STOP_TYPES, TIF_TYPES, ZERO, mandatory,
                                           not_required, parse_decimal, parse_int, q8)
from tests.support.emulator.rules import ApiError, SymbolRules
from tests.support.emulator.triggers import RestingMatcher, would_trigger

__all__ = ["Account", "EmuOrder", "EmuTrade", "MarketView", "OrderSpec", "mandatory", "parse_decimal", "q8"]

_UNSUPPORTED = {  # order type missing from the symbol's orderTypes -> (code, message)
    "MARKET": (-2010, "Market orders are not supported for this symbol."),
    "STOP_LOSS": (-1013, "Stop loss orders are not supported for this symbol."),
    "STOP_LOSS_LIMIT": (-1013, "Stop loss limit orders are not supported for this symbol."),
    "TAKE_PROFIT": (-1013, "Take profit orders are not supported for this symbol."),
    "TAKE_PROFIT_LIMIT": (-1013, "Take profit limit orders are not supported for this symbol."),
}

INSUFFICIENT = "Account has insufficient balance for requested action."


class MarketView(Protocol):
    def book(self, symbol: str) -> Book | None: ...

    def book_at(self, symbol: str, ts: int, price: Decimal) -> Book:
        """A book centred on ``price`` during the candle opened at ``ts`` (where a stop triggered)."""
        ...

    def avg_price(self, symbol: str) -> Decimal | None: ...

    def candle_rows(self, symbol: str, start_ms: int,
                    now_ms: int) -> Iterator[tuple[int, int, float, float, float, float, float]]:
        """(open time, tf ms, open, high, low, close, volume) of candles opened at/after start, closed at now."""
        ...


class Account(RestingMatcher, OrderLists):
    """Balances and orders of the one emulated account. Not thread-safe: the emulator locks."""

    def __init__(self, balances: dict[str, Decimal], fee_rate: Decimal = Decimal("0.001"),
                 partial_fill_ratio: float = 1.0) -> None:
        self.free: dict[str, Decimal] = {a: Decimal(v) for a, v in balances.items()}
        self.locked: dict[str, Decimal] = {a: ZERO for a in balances}
        self.fee_rate = fee_rate
        self.partial_fill_ratio = partial_fill_ratio
        self.orders: list[EmuOrder] = []
        self.by_client: dict[str, EmuOrder] = {}
        self.by_id: dict[int, EmuOrder] = {}
        self.trades: list[EmuTrade] = []
        self.lists: list[OrderList] = []  # index == orderListId
        self.next_order_id = 1
        self.next_trade_id = 1

    # -- balances -------------------------------------------------------------------------
    def _credit(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, ZERO) + amount
        self.locked.setdefault(asset, ZERO)

    def _lock(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, ZERO) - amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount

    def _release(self, order: EmuOrder, rules: SymbolRules) -> None:
        if order.locked:
            asset = rules.quote if order.side == "BUY" else rules.base
            self.locked[asset] -= order.locked
            self._credit(asset, order.locked)
            order.locked = ZERO

    def totals(self) -> dict[str, Decimal]:
        assets = set(self.free) | set(self.locked)
        return {a: self.free.get(a, ZERO) + self.locked.get(a, ZERO) for a in sorted(assets)}

    # -- lookups --------------------------------------------------------------------------
    def open_orders(self, symbol: str | None = None) -> list[EmuOrder]:
        return [o for o in self.orders if o.is_open and (symbol is None or o.symbol == symbol)]

    def find(self, symbol: str, order_id: int | None, client_id: str | None) -> EmuOrder | None:
        """By id first; when both are given the client id must match that order (as on Binance)."""
        order = self.by_id.get(order_id) if order_id is not None else self.by_client.get(client_id or "")
        if order is not None and order_id is not None and client_id and order.client_id != client_id:
            return None
        return order if order is not None and order.symbol == symbol else None

    def order_trades(self, order: EmuOrder) -> list[EmuTrade]:
        # trade ids are 1..n in order, so the list index is id - 1
        return [self.trades[i - 1] for i in order.trade_ids]

    # -- orders ---------------------------------------------------------------------------
    def place(self, rules: SymbolRules, market: MarketView, params: dict[str, str], now_ms: int,
              client_id: str) -> tuple[EmuOrder, list[EmuTrade]]:
        """Validate and execute a new order; raises ApiError exactly where Binance would."""
        return self.execute(self.check(rules, market, params, client_id), market, now_ms)

    def check(self, rules: SymbolRules, market: MarketView, params: dict[str, str], client_id: str,
              extra_orders: int = 0, extra_algo: int = 0) -> OrderSpec:
        """The API-level checks (parameters, order type, filters, order counts); changes nothing.

        ``extra_orders``/``extra_algo``: orders of the same request already counted (OCO legs).
        """
        side = params.get("side")
        if not side:
            raise mandatory("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        otype = params.get("type")
        if not otype:
            raise mandatory("type")
        if otype not in ORDER_TYPES:
            raise ApiError(-1116, "Invalid orderType.")
        tif = params.get("timeInForce")
        if otype in TIF_TYPES:
            if not tif:
                raise mandatory("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise ApiError(-1115, "Invalid timeInForce.")
        elif tif:
            raise not_required("timeInForce")
        qty = parse_decimal(params, "quantity")
        quote_qty = parse_decimal(params, "quoteOrderQty")
        price = parse_decimal(params, "price", required=otype in PRICED_TYPES)
        stop = parse_decimal(params, "stopPrice")
        trailing = parse_int(params, "trailingDelta")
        if otype == "MARKET":
            if price is not None:
                raise not_required("price")
            if (qty is None) == (quote_qty is None):
                raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
        else:
            if quote_qty is not None:
                raise not_required("quoteOrderQty")
            if price is not None and otype not in PRICED_TYPES:
                raise not_required("price")
            if qty is None:
                raise mandatory("quantity")
        if otype in STOP_TYPES:
            if stop is None and trailing is None:
                raise ApiError(-1102, "Param 'stopPrice' or 'trailingDelta' must be sent, but both were empty/null!")
        elif stop is not None:
            raise not_required("stopPrice")
        elif trailing is not None:
            raise not_required("trailingDelta")
        if rules.status != "TRADING":
            raise ApiError(-2010, "Market is closed.")
        if otype not in rules.order_types:
            raise ApiError(*_UNSUPPORTED.get(otype, (-2010, "Unsupported order combination")))
        if trailing is not None and not rules.allows("allowTrailingStop"):
            raise ApiError(-1013, "Trailing stop orders are not supported for this symbol.")
        avg = market.avg_price(rules.symbol)
        if avg is None or market.book(rules.symbol) is None:
            raise ApiError(-2010, "Market is closed.")
        spec = OrderSpec(rules, client_id, side, otype, tif or "GTC", qty, quote_qty, price, stop, trailing)
        if otype == "MARKET":
            if qty is not None:  # quoteOrderQty orders are checked on the book walk (execute)
                rules.check_quantity(qty, market=True)
                rules.check_notional(qty * avg, market=True)
            return spec
        assert qty is not None
        stop_market = otype in ("STOP_LOSS", "TAKE_PROFIT")
        if price is not None:
            rules.check_price(price)
        if stop is not None:
            rules.check_price(stop)
        rules.check_quantity(qty, market=stop_market)
        if price is not None:
            rules.check_percent_price(side, price, avg)
        if stop_market:  # notional at the stop price (the average price for a pure trailing stop)
            rules.check_notional((stop or avg) * qty, market=True)
        else:
            assert price is not None
            rules.check_notional(price * qty, market=False)
        if trailing is not None:
            rules.check_trailing_delta(side, otype, trailing)
        rules.check_open_orders(len(self.open_orders(rules.symbol)) + extra_orders)
        if otype in STOP_TYPES:
            rules.check_algo_orders(self.open_algo_count(rules.symbol) + extra_algo)
        return spec

    def open_algo_count(self, symbol: str) -> int:
        return sum(1 for o in self.open_orders(symbol) if o.type in STOP_TYPES)

    def is_duplicate(self, client_id: str) -> bool:
        return client_id in self.by_client and self.by_client[client_id].is_open

    def execute(self, spec: OrderSpec, market: MarketView, now_ms: int) -> tuple[EmuOrder, list[EmuTrade]]:
        """The matching-engine side: duplicate id, funds, "would match/trigger", then the fills."""
        rules, side, otype, tif, qty, price = spec.rules, spec.side, spec.type, spec.tif, spec.qty, spec.price
        if self.is_duplicate(spec.client_id):
            raise ApiError(-2010, "Duplicate order sent.")
        avg = market.avg_price(rules.symbol)
        book = market.book(rules.symbol)
        assert avg is not None and book is not None  # check() saw them

        fills: list[tuple[Decimal, Decimal]]
        if otype == "MARKET":
            quote_qty = spec.quote_qty
            if quote_qty is not None:
                if not rules.quote_order_qty_allowed:
                    raise ApiError(-2010, "Quote order qty market orders are not support for this symbol.")
                if quote_qty <= 0:
                    raise ApiError(-1013, "Invalid quantity.")
                fills = self._walk_quote(book, rules, side, quote_qty)
                qty = sum((q for _, q in fills), ZERO)
                rules.check_quantity(qty, market=True)
                rules.check_notional(quote_qty, market=True)
            else:
                assert qty is not None
                fills = self._walk(book, side, qty, None)
            cost = sum((q8(p * q) for p, q in fills), ZERO)
            if side == "BUY" and max(cost, quote_qty or ZERO) > self.free.get(rules.quote, ZERO):
                raise ApiError(-2010, INSUFFICIENT)
            if side == "SELL" and qty > self.free.get(rules.base, ZERO):
                raise ApiError(-2010, INSUFFICIENT)
            order = self._new_order(rules, spec.client_id, side, otype, "GTC", ZERO, qty, quote_qty or ZERO, now_ms)
            trades = [self._fill(order, rules, p, q, now_ms, maker=False) for p, q in fills]
            order.status = "FILLED" if order.remaining == 0 and trades else "EXPIRED"
            return order, trades

        assert qty is not None
        if otype in STOP_TYPES:
            if spec.stop is not None and would_trigger(side, otype, spec.stop, avg):
                raise ApiError(-2010, "Stop price would trigger immediately.")
            lock_asset, lock_amount = self.stop_lock(rules, side, qty, price or spec.stop or avg)
            if lock_amount > self.free.get(lock_asset, ZERO):
                raise ApiError(-2010, INSUFFICIENT)
            order = self._new_order(rules, spec.client_id, side, otype, tif, price or ZERO, qty, ZERO, now_ms)
            self.arm_stop(order, spec.stop, spec.trailing, avg, now_ms)
            self._lock(lock_asset, lock_amount)
            order.locked = lock_amount
            return order, []

        assert price is not None
        (best_bid, _), (best_ask, _) = book.top()
        marketable = price >= best_ask if side == "BUY" else price <= best_bid
        if otype == "LIMIT_MAKER" and marketable:
            raise ApiError(-2010, "Order would immediately match and take.")
        lock_asset, lock_amount = self.stop_lock(rules, side, qty, price)
        if lock_amount > self.free.get(lock_asset, ZERO):
            raise ApiError(-2010, INSUFFICIENT)
        fills = self._walk(book, side, qty, price) if marketable else []
        if tif == "FOK" and sum((q for _, q in fills), ZERO) < qty:
            fills = []
        order = self._new_order(rules, spec.client_id, side, otype, tif, price, qty, ZERO, now_ms)
        self._lock(lock_asset, lock_amount)
        order.locked = lock_amount
        trades = [self._fill(order, rules, p, q, now_ms, maker=False) for p, q in fills]
        if order.remaining == 0:
            order.status = "FILLED"
        elif tif in ("IOC", "FOK"):
            order.status = "EXPIRED"
        else:
            order.status = "PARTIALLY_FILLED" if trades else "NEW"
        if not order.is_open:
            self._release(order, rules)
        return order, trades

    @staticmethod
    def stop_lock(rules: SymbolRules, side: str, qty: Decimal, ref_price: Decimal) -> tuple[str, Decimal]:
        """What an open order locks: the base quantity for a sell, ``ref_price x qty`` quote for a buy.

        For a buy stop-market order ``ref_price`` is its stop price (the last price for a trailing
        stop without one); what the fill costs beyond that is taken from the free balance.
        """
        return (rules.quote, q8(ref_price * qty)) if side == "BUY" else (rules.base, qty)

    @staticmethod
    def arm_stop(order: EmuOrder, stop: Decimal | None, trailing: int | None, last: Decimal, now_ms: int) -> None:
        """Set a new stop order waiting; a trailing stop without stopPrice tracks from the last price."""
        order.working_time = -1
        order.stop_price = stop or ZERO
        if trailing is not None:
            order.trailing_delta = trailing
            if stop is None:
                order.trailing_time, order.trail_extreme = now_ms, last

    def cancel(self, rules: SymbolRules, order: EmuOrder | None, now_ms: int) -> EmuOrder:
        """Cancel one order; an order of an executing order list cancels the whole list."""
        if order is None or not order.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        if order.order_list_id >= 0 and self.lists[order.order_list_id].is_open:
            self.cancel_list(rules, self.lists[order.order_list_id], now_ms)
            return order
        order.status = "CANCELED"
        order.update_time = now_ms
        self._release(order, rules)
        return order

    # -- internals ------------------------------------------------------------------------
    def _new_order(self, rules: SymbolRules, client_id: str, side: str, otype: str, tif: str, price: Decimal,
                   qty: Decimal, quote_qty: Decimal, now_ms: int) -> EmuOrder:
        order = EmuOrder(rules.symbol, self.next_order_id, client_id, side, otype, tif, price, qty, quote_qty,
                         now_ms, update_time=now_ms, scan_from=now_ms)
        self.next_order_id += 1
        self.orders.append(order)
        self.by_id[order.order_id] = order
        self.by_client[client_id] = order
        return order

    @staticmethod
    def _walk(book: Book, side: str, qty: Decimal, limit: Decimal | None) -> list[tuple[Decimal, Decimal]]:
        out: list[tuple[Decimal, Decimal]] = []
        remaining = qty
        depth = 100
        while True:
            levels = book.levels("asks" if side == "BUY" else "bids", depth)
            out.clear()
            remaining = qty
            for p, q in levels:
                if limit is not None and (p > limit if side == "BUY" else p < limit):
                    return out
                take = min(q, remaining)
                out.append((p, take))
                remaining -= take
                if remaining == 0:
                    return out
            if len(levels) < depth or depth >= 5000:
                return out  # the book ran out
            depth *= 5

    @staticmethod
    def _walk_quote(book: Book, rules: SymbolRules, side: str, quote: Decimal) -> list[tuple[Decimal, Decimal]]:
        step = rules.step if rules.step > 0 else Q8
        out: list[tuple[Decimal, Decimal]] = []
        left = quote
        for p, q in book.levels("asks" if side == "BUY" else "bids", 5000):
            take = min(q, (left / p / step).to_integral_value(ROUND_DOWN) * step)
            if take <= 0:
                break
            out.append((p, take))
            left -= q8(p * take)
        return out

    def _fill(self, order: EmuOrder, rules: SymbolRules, price: Decimal, qty: Decimal, ts: int,
              maker: bool) -> EmuTrade:
        quote = q8(price * qty)
        if order.side == "BUY":
            commission, asset = q8(qty * self.fee_rate), rules.base
            if order.type == "MARKET":
                self.free[rules.quote] = self.free.get(rules.quote, ZERO) - quote
            else:  # from the order's lock; a rounding remainder (if any) from free
                from_lock = min(quote, order.locked)
                self.locked[rules.quote] -= from_lock
                order.locked -= from_lock
                self.free[rules.quote] -= quote - from_lock
            self._credit(rules.base, qty - commission)
        else:
            commission, asset = q8(quote * self.fee_rate), rules.quote
            if order.type == "MARKET":
                self.free[rules.base] = self.free.get(rules.base, ZERO) - qty
            else:
                self.locked[rules.base] -= qty
                order.locked -= qty
            self._credit(rules.quote, quote - commission)
        trade = EmuTrade(self.next_trade_id, order.symbol, order.order_id, order.client_id, price, qty, quote,
                         commission, asset, ts, order.side == "BUY", maker, order.order_list_id)
        self.next_trade_id += 1
        self.trades.append(trade)
        order.trade_ids.append(trade.id)
        order.executed_qty += qty
        order.cum_quote += quote
        order.update_time = ts
        return trade

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def enc(obj: Any) -> Any:
            if isinstance(obj, Decimal):
                return str(obj)
            if isinstance(obj, dict):
                return {k: enc(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [enc(v) for v in obj]
            return obj

        return {"free": enc(self.free), "locked": enc(self.locked), "next_order_id": self.next_order_id,
                "next_trade_id": self.next_trade_id, "orders": [enc(asdict(o)) for o in self.orders],
                "trades": [enc(asdict(t)) for t in self.trades], "order_lists": [asdict(lst) for lst in self.lists]}

    def load_dict(self, data: dict[str, Any]) -> None:
        dec_order = ("price", "orig_qty", "orig_quote_qty", "executed_qty", "cum_quote", "locked", "stop_price",
                     "trail_extreme")
        dec_trade = ("price", "qty", "quote_qty", "commission")
        self.free = {a: Decimal(v) for a, v in data["free"].items()}
        self.locked = {a: Decimal(v) for a, v in data["locked"].items()}
        self.next_order_id = int(data["next_order_id"])
        self.next_trade_id = int(data["next_trade_id"])
        self.orders = [EmuOrder(**{k: Decimal(v) if k in dec_order else v for k, v in o.items()})
                       for o in data["orders"]]
        self.trades = [EmuTrade(**{k: Decimal(v) if k in dec_trade else v for k, v in t.items()})
                       for t in data["trades"]]
        self.lists = [OrderList(**lst) for lst in data.get("order_lists", [])]
        self.by_id = {o.order_id: o for o in self.orders}
        self.by_client = {}
        for o in self.orders:
            self.by_client[o.client_id] = o
