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
- Commission: ``fee_rate`` (0.1 %) of what is *received*: base asset on buys, quote asset on
  sells (Binance's default without BNB), quantized to 8 decimals (half up).
- ``newClientOrderId`` must be unique among *open* orders (-2010 "Duplicate order sent.");
  like Binance, an id whose order is closed may be used again. Lookups by
  ``origClientOrderId`` return the most recent order with that id.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any, Iterator, Protocol

from tests.support.emulator.book import Book
from tests.support.emulator.rules import ApiError, SymbolRules

ZERO = Decimal(0)
Q8 = Decimal("0.00000001")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
ORDER_TYPES = ("LIMIT", "MARKET", "LIMIT_MAKER")
_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")

INSUFFICIENT = "Account has insufficient balance for requested action."


class MarketView(Protocol):
    def book(self, symbol: str) -> Book | None: ...

    def avg_price(self, symbol: str) -> Decimal | None: ...

    def candles_between(self, symbol: str, start_ms: int, now_ms: int) -> Iterator[tuple[int, int, float, float, float]]:
        """(open time, tf ms, low, high, volume) of candles opened at/after start, closed at now."""
        ...


def q8(x: Decimal) -> Decimal:
    return x.quantize(Q8, rounding=ROUND_HALF_UP)


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def parse_decimal(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise mandatory(name)
        return None
    if not _NUMBER.match(raw):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                              f"'^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.")
    return Decimal(raw)


@dataclass
class EmuTrade:
    id: int
    symbol: str
    order_id: int
    client_id: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def to_api(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": -1,
                "price": f"{self.price:.8f}", "qty": f"{self.qty:.8f}", "quoteQty": f"{self.quote_qty:.8f}",
                "commission": f"{self.commission:.8f}", "commissionAsset": self.commission_asset,
                "time": self.time, "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True}


@dataclass
class EmuOrder:
    symbol: str
    order_id: int
    client_id: str
    side: str  # BUY | SELL
    type: str  # LIMIT | MARKET | LIMIT_MAKER
    time_in_force: str
    price: Decimal  # 0 for market orders
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    locked: Decimal = ZERO  # funds still locked for this order (quote for buys, base for sells)
    scan_from: int = 0  # resting orders: first candle open time not yet matched
    trade_ids: list[int] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def to_api(self, kind: str = "query", fills: list[EmuTrade] | None = None) -> dict[str, Any]:
        base = {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id}
        common = {"price": f"{self.price:.8f}", "origQty": f"{self.orig_qty:.8f}",
                  "executedQty": f"{self.executed_qty:.8f}", "cummulativeQuoteQty": f"{self.cum_quote:.8f}",
                  "status": self.status, "timeInForce": self.time_in_force, "type": self.type, "side": self.side}
        if kind == "ack":
            return {**base, "transactTime": self.time}
        if kind in ("result", "full"):
            out = {**base, "transactTime": self.time, **common, "workingTime": self.time,
                   "origQuoteOrderQty": f"{self.orig_quote_qty:.8f}", "selfTradePreventionMode": "NONE"}
            if kind == "full":
                out["fills"] = [{"price": f"{t.price:.8f}", "qty": f"{t.qty:.8f}",
                                 "commission": f"{t.commission:.8f}", "commissionAsset": t.commission_asset,
                                 "tradeId": t.id} for t in (fills or [])]
            return out
        return {**base, **common, "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": self.time,
                "updateTime": self.update_time, "isWorking": self.type != "MARKET", "workingTime": self.time,
                "origQuoteOrderQty": f"{self.orig_quote_qty:.8f}", "selfTradePreventionMode": "NONE"}


class Account:
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
        order = self.by_id.get(order_id) if order_id is not None else self.by_client.get(client_id or "")
        return order if order is not None and order.symbol == symbol else None

    def order_trades(self, order: EmuOrder) -> list[EmuTrade]:
        # trade ids are 1..n in order, so the list index is id - 1
        return [self.trades[i - 1] for i in order.trade_ids]

    # -- orders ---------------------------------------------------------------------------
    def place(self, rules: SymbolRules, market: MarketView, params: dict[str, str], now_ms: int,
              client_id: str) -> tuple[EmuOrder, list[EmuTrade]]:
        """Validate and execute a new order; raises ApiError exactly where Binance would."""
        side = params.get("side")
        if not side:
            raise mandatory("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        otype = params.get("type")
        if not otype:
            raise mandatory("type")
        if otype not in ORDER_TYPES:
            raise ApiError(-1116, "Invalid orderType.") if otype not in rules.order_types else \
                ApiError(-1014, "Unsupported order combination.")
        tif = params.get("timeInForce")
        if otype == "LIMIT":
            if not tif:
                raise mandatory("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise ApiError(-1115, "Invalid timeInForce.")
        elif tif:
            raise ApiError(-1106, "Parameter 'timeInForce' sent when not required.")
        tif = tif or "GTC"
        qty = parse_decimal(params, "quantity")
        quote_qty = parse_decimal(params, "quoteOrderQty")
        price = parse_decimal(params, "price", required=otype != "MARKET")
        if otype == "MARKET":
            if price is not None:
                raise ApiError(-1106, "Parameter 'price' sent when not required.")
            if (qty is None) == (quote_qty is None):
                raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
        elif qty is None:
            raise mandatory("quantity")
        if rules.status != "TRADING":
            raise ApiError(-2010, "Market is closed.")
        if otype not in rules.order_types:
            raise ApiError(-2010, "Market orders are not supported for this symbol." if otype == "MARKET"
                           else "Unsupported order combination")
        if client_id in self.by_client and self.by_client[client_id].is_open:
            raise ApiError(-2010, "Duplicate order sent.")
        avg = market.avg_price(rules.symbol)
        book = market.book(rules.symbol)
        if avg is None or book is None:
            raise ApiError(-2010, "Market is closed.")

        fills: list[tuple[Decimal, Decimal]]
        if otype == "MARKET":
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
                rules.check_quantity(qty, market=True)
                rules.check_notional(qty * avg, market=True)
                fills = self._walk(book, side, qty, None)
            cost = sum((q8(p * q) for p, q in fills), ZERO)
            if side == "BUY" and max(cost, quote_qty or ZERO) > self.free.get(rules.quote, ZERO):
                raise ApiError(-2010, INSUFFICIENT)
            if side == "SELL" and qty > self.free.get(rules.base, ZERO):
                raise ApiError(-2010, INSUFFICIENT)
            order = self._new_order(rules, client_id, side, otype, "GTC", ZERO, qty, quote_qty or ZERO, now_ms)
            trades = [self._fill(order, rules, p, q, now_ms, maker=False) for p, q in fills]
            order.status = "FILLED" if order.remaining == 0 and trades else "EXPIRED"
            return order, trades

        assert price is not None and qty is not None
        rules.check_price(price)
        rules.check_quantity(qty, market=False)
        rules.check_percent_price(side, price, avg)
        rules.check_notional(price * qty, market=False)
        rules.check_open_orders(len(self.open_orders(rules.symbol)))
        (best_bid, _), (best_ask, _) = book.top()
        marketable = price >= best_ask if side == "BUY" else price <= best_bid
        if otype == "LIMIT_MAKER" and marketable:
            raise ApiError(-2010, "Order would immediately match and take.")
        lock_asset, lock_amount = (rules.quote, q8(price * qty)) if side == "BUY" else (rules.base, qty)
        if lock_amount > self.free.get(lock_asset, ZERO):
            raise ApiError(-2010, INSUFFICIENT)
        fills = self._walk(book, side, qty, price) if marketable else []
        if tif == "FOK" and sum((q for _, q in fills), ZERO) < qty:
            fills = []
        order = self._new_order(rules, client_id, side, otype, tif, price, qty, ZERO, now_ms)
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

    def cancel(self, rules: SymbolRules, order: EmuOrder | None, now_ms: int) -> EmuOrder:
        if order is None or not order.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        order.status = "CANCELED"
        order.update_time = now_ms
        self._release(order, rules)
        return order

    def match_resting(self, rules_of: dict[str, SymbolRules], market: MarketView, now_ms: int) -> list[EmuTrade]:
        """Fill resting orders against the candles that closed since they were last looked at."""
        new: list[EmuTrade] = []
        for order in self.open_orders():
            rules = rules_of[order.symbol]
            step = rules.step if rules.step > 0 else Q8
            cap = (order.orig_qty * Decimal(repr(self.partial_fill_ratio)) / step).to_integral_value(ROUND_DOWN) * step
            cap = max(cap, step)
            for ts, tf, low, high, volume in market.candles_between(order.symbol, order.scan_from, now_ms):
                order.scan_from = ts + tf
                through = low < float(order.price) if order.side == "BUY" else high > float(order.price)
                if not through:
                    continue
                by_volume = (Decimal(repr(volume)) / step).to_integral_value(ROUND_DOWN) * step
                qty = min(order.remaining, cap, by_volume)
                if qty <= 0:
                    continue
                new.append(self._fill(order, rules, order.price, qty, ts + tf - 1, maker=True))
                if order.remaining == 0:
                    order.status = "FILLED"
                    self._release(order, rules)
                    break
                order.status = "PARTIALLY_FILLED"
        return new

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
                         commission, asset, ts, order.side == "BUY", maker)
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
                "trades": [enc(asdict(t)) for t in self.trades]}

    def load_dict(self, data: dict[str, Any]) -> None:
        dec_order = ("price", "orig_qty", "orig_quote_qty", "executed_qty", "cum_quote", "locked")
        dec_trade = ("price", "qty", "quote_qty", "commission")
        self.free = {a: Decimal(v) for a, v in data["free"].items()}
        self.locked = {a: Decimal(v) for a, v in data["locked"].items()}
        self.next_order_id = int(data["next_order_id"])
        self.next_trade_id = int(data["next_trade_id"])
        self.orders = [EmuOrder(**{k: Decimal(v) if k in dec_order else v for k, v in o.items()})
                       for o in data["orders"]]
        self.trades = [EmuTrade(**{k: Decimal(v) if k in dec_trade else v for k, v in t.items()})
                       for t in data["trades"]]
        self.by_id = {o.order_id: o for o in self.orders}
        self.by_client = {}
        for o in self.orders:
            self.by_client[o.client_id] = o
