"""ccxt structures -> ``core.models``, each conversion validating what it is given.

Nothing ccxt returns is trusted: a 200 with a truncated body can come back as rows of ``None``
or an order without an id. Anything odd raises ``MalformedReply`` (retried, then the pair is
skipped), never a half-valid object. Pure functions of their input: testable with recorded
Binance replies and no server.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from core.exchange.ccxt_lean import async_support

async_support()  # before any ccxt import: a plain one would load all ~100 exchanges
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE  # noqa: E402

from core.exchange.ccxt_errors import MalformedReply  # noqa: E402
from core.models import Fill, Market, Order, OrderBook, OrderStatus, Ticker  # noqa: E402

_RATE_LIMITS = re.compile(r'"rateLimits"\s*:\s*(\[[^\]]*\])')
_STATUS = {  # Binance order status (info.status) first, ccxt's unified status as the fallback
    "NEW": OrderStatus.SUBMITTED, "PENDING_NEW": OrderStatus.SUBMITTED,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED, "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELLED, "PENDING_CANCEL": OrderStatus.SUBMITTED,
    "REJECTED": OrderStatus.REJECTED, "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    "open": OrderStatus.SUBMITTED, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED, "expired": OrderStatus.EXPIRED,
}


def finite_float(v: Any) -> float | None:
    """A finite float, or None for anything else (None, bools, text, NaN, inf)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def exact_decimal(v: Any) -> Decimal | None:
    """An exact Decimal from what ccxt gives (str, int or float); floats via their shortest repr,
    which is the decimal string the exchange sent (``0.00001`` not ``1.0000000000000001E-5``)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v))
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite():
        return None
    d = d.normalize()
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def _positive(v: Any) -> Decimal | None:
    d = exact_decimal(v)
    return d if d is not None and d > 0 else None


def _step(value: Any, mode: int) -> Decimal | None:
    """ccxt precision -> a step: TICK_SIZE modes give the step, DECIMAL_PLACES a digit count."""
    if value is None:
        return None
    if mode == TICK_SIZE:
        return _positive(value)
    if mode == DECIMAL_PLACES:
        try:
            return Decimal(1).scaleb(-int(value))
        except (TypeError, ValueError):
            return None
    return None  # significant digits: no fixed step


def to_market(m: Any, precision_mode: int) -> Market | None:
    """A ccxt market -> Market, or None when it is not a usable spot market."""
    if not isinstance(m, dict):
        return None
    symbol, base, quote = m.get("symbol"), m.get("base"), m.get("quote")
    if not all(isinstance(s, str) and s for s in (symbol, base, quote)) or m.get("spot") is False:
        return None
    prec = m.get("precision") or {}
    lim = m.get("limits") or {}

    def limit(kind: str, side: str) -> Decimal | None:
        return _positive((lim.get(kind) or {}).get(side))

    return Market(symbol=symbol, base=base, quote=quote, active=m.get("active") is not False,
                  amount_step=_step(prec.get("amount"), precision_mode),
                  price_tick=_step(prec.get("price"), precision_mode),
                  min_amount=limit("amount", "min"), min_cost=limit("cost", "min"),
                  max_amount=limit("amount", "max"))


def to_ticker(t: Any, now_ms: int) -> Ticker | None:
    """A ccxt ticker -> Ticker; None when it has no usable last price (skipped, not guessed)."""
    if not isinstance(t, dict) or not isinstance(t.get("symbol"), str):
        return None
    last = finite_float(t.get("last"))
    if last is None:
        last = finite_float(t.get("close"))
    if last is None or last <= 0:
        return None
    bid, ask = finite_float(t.get("bid")), finite_float(t.get("ask"))
    if bid is not None and bid <= 0:
        bid = None
    if ask is not None and ask <= 0:
        ask = None
    if bid is not None and ask is not None and bid > ask:  # a crossed quote is not a real market
        bid = ask = None
    qv = finite_float(t.get("quoteVolume"))
    ts = finite_float(t.get("timestamp"))
    return Ticker(symbol=t["symbol"], ts_ms=int(ts) if ts and ts > 0 else now_ms, last=last, bid=bid, ask=ask,
                  high=finite_float(t.get("high")), low=finite_float(t.get("low")),
                  quote_volume=qv if qv is not None and qv >= 0 else None)


def to_ohlcv(rows: Any, tf_ms: int, server_now_ms: int, what: str) -> np.ndarray:
    """ccxt OHLCV rows -> float64 (n, 6), closed candles only; raises on anything odd."""
    if not isinstance(rows, list):
        raise MalformedReply(f"{what}: malformed reply (expected a list of candles)")
    if not rows:
        return np.empty((0, 6))
    try:
        arr = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise MalformedReply(f"{what}: malformed reply (non-numeric candle fields)") from None
    if arr.ndim != 2 or arr.shape[1] < 6:
        raise MalformedReply(f"{what}: malformed reply (candles of shape {arr.shape})")
    arr = arr[:, :6]
    ts, o, h, lo, c, v = arr.T
    problem = None
    if not np.isfinite(arr).all():
        problem = "missing or non-finite fields"
    elif len(ts) > 1 and not (np.diff(ts) > 0).all():
        problem = "timestamps not strictly ascending"
    elif tf_ms <= 14_400_000 and (ts % tf_ms != 0).any():
        problem = "timestamps not aligned to the timeframe"
    elif ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)).any() or (v < 0).any():
        problem = "non-positive prices or negative volume"
    elif ((h < np.maximum(o, c)) | (lo > np.minimum(o, c))).any():
        problem = "high/low outside open/close"
    if problem:
        raise MalformedReply(f"{what}: malformed candles ({problem})")
    return np.ascontiguousarray(arr[ts + tf_ms <= server_now_ms])


def to_order_book(raw: Any, symbol: str, now_ms: int) -> OrderBook:
    if not isinstance(raw, dict):
        raise MalformedReply(f"order book {symbol}: malformed reply")

    def side(levels: Any, descending: bool) -> tuple[tuple[float, float], ...]:
        if not isinstance(levels, list):
            raise MalformedReply(f"order book {symbol}: malformed levels")
        out = []
        for lvl in levels:
            p = finite_float(lvl[0]) if isinstance(lvl, (list, tuple)) and len(lvl) >= 2 else None
            a = finite_float(lvl[1]) if p is not None else None
            if p is None or a is None or p <= 0 or a <= 0:
                raise MalformedReply(f"order book {symbol}: malformed level {str(lvl)[:40]}")
            out.append((p, a))
        prices = [p for p, _ in out]
        if any((x <= y) if descending else (x >= y) for x, y in zip(prices, prices[1:])):
            raise MalformedReply(f"order book {symbol}: levels out of order")
        return tuple(out)

    bids, asks = side(raw.get("bids"), True), side(raw.get("asks"), False)
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise MalformedReply(f"order book {symbol}: crossed (best bid {bids[0][0]} >= best ask {asks[0][0]})")
    ts = finite_float(raw.get("timestamp"))
    return OrderBook(symbol, int(ts) if ts and ts > 0 else now_ms, bids, asks)


def _status(raw: dict) -> OrderStatus | None:
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    return _STATUS.get(str(info.get("status"))) or _STATUS.get(str(raw.get("status")))


def to_order(raw: Any, template: Order | None, now_ms: int) -> Order:
    """A ccxt order -> Order. ``template`` is our order (create/cancel/fetch); None for an order we
    only learn about from the exchange (open orders), whose intent we cannot know."""
    if not isinstance(raw, dict):
        raise MalformedReply("order: malformed reply")
    exid = raw.get("id")
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    cid = info.get("origClientOrderId") or raw.get("clientOrderId")  # a cancel reply names the cancel's own id
    if exid in (None, ""):
        raise MalformedReply("order: reply without an exchange order id")
    if template is not None and cid not in (None, "") and cid != template.client_id:
        raise MalformedReply(f"order {template.client_id}: reply is for another order ({str(cid)[:40]})")
    status = _status(raw)
    if status is None:
        raise MalformedReply(f"order {cid or exid}: unknown status {str(raw.get('status'))[:20]}")
    filled = exact_decimal(raw.get("filled"))
    filled = Decimal(0) if filled is None else filled
    average = _positive(raw.get("average"))
    ts = finite_float(raw.get("lastUpdateTimestamp")) or finite_float(raw.get("timestamp")) or now_ms
    if template is None:
        symbol, side, otype = raw.get("symbol"), raw.get("side"), raw.get("type")
        amount, price = _positive(raw.get("amount")), _positive(raw.get("price"))
        if not (isinstance(symbol, str) and side in ("buy", "sell") and isinstance(otype, str) and amount
                and isinstance(cid, str) and cid):
            raise MalformedReply(f"order {exid}: incomplete reply")
        base = Order(client_id=cid, symbol=symbol, side=side, type=otype.lower(), amount=amount,
                     price=price, intent="unknown", created_ms=int(finite_float(raw.get("timestamp")) or now_ms))
    else:
        base = template
        if raw.get("symbol") not in (None, template.symbol):
            raise MalformedReply(f"order {template.client_id}: reply is for {str(raw.get('symbol'))[:20]}")
    if filled < 0 or filled > base.amount:
        raise MalformedReply(f"order {base.client_id}: filled {filled} outside 0..{base.amount}")
    if status == OrderStatus.SUBMITTED and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    if status == OrderStatus.FILLED and filled == 0:
        raise MalformedReply(f"order {base.client_id}: reported filled with nothing executed")
    return replace(base, exchange_id=str(exid), status=status, filled=filled,
                   average=average if filled > 0 else None, updated_ms=int(ts))


def to_fill(t: Any) -> Fill:
    if not isinstance(t, dict):
        raise MalformedReply("trade: malformed reply")
    tid, symbol, side = t.get("id"), t.get("symbol"), t.get("side")
    amount, price, ts = _positive(t.get("amount")), _positive(t.get("price")), finite_float(t.get("timestamp"))
    if tid in (None, "") or not isinstance(symbol, str) or side not in ("buy", "sell") or not amount or not price \
            or not ts:
        raise MalformedReply(f"trade {str(tid)[:20]}: incomplete reply")
    fee = t.get("fee") if isinstance(t.get("fee"), dict) else {}
    cost = exact_decimal(fee.get("cost"))
    currency = fee.get("currency") if isinstance(fee.get("currency"), str) and fee.get("currency") else None
    if cost is not None and cost > 0 and currency is None:
        # the ledger cannot value a fee of unknown asset; fetched again on the next poll
        raise MalformedReply(f"trade {str(tid)[:20]}: fee {cost} without its asset")
    order = t.get("order")
    return Fill(trade_id=str(tid), ts_ms=int(ts), symbol=symbol, side=side, quantity=amount, price=price,
                fee=cost if cost is not None and cost >= 0 else Decimal(0), fee_asset=currency,
                order_id=str(order) if order not in (None, "") else None)


def header(headers: Any, name: str) -> str | None:
    """A reply header by case-insensitive name (aiohttp's or a plain dict)."""
    if not isinstance(headers, dict):
        return None
    name = name.lower()
    for k, v in headers.items():
        if isinstance(k, str) and k.lower() == name:
            return str(v)
    return None


def weight_limit(exchange_info_body: str) -> int | None:
    """The request-weight limit per minute an exchangeInfo body announces (``rateLimits``), read
    from its first 20 kB without parsing the MBs of symbols; None when absent or odd."""
    m = _RATE_LIMITS.search(exchange_info_body[:20_000])
    if not m:
        return None
    try:
        for rl in json.loads(m.group(1)):
            if rl.get("rateLimitType") == "REQUEST_WEIGHT" and rl.get("interval") == "MINUTE" \
                    and rl.get("intervalNum") == 1 and int(rl.get("limit", 0)) > 0:
                return int(rl["limit"])
    except (ValueError, TypeError, AttributeError):
        return None
    return None
