"""Exchange-side protective orders on Binance spot through ccxt's implicit (raw) endpoints.

ccxt 4.5 has no unified OCO for spot, and its unified ``create_order`` goes through floats; the
raw endpoints take the exact decimal strings we computed (``core.trading.rules.conform_protection``)
and answer with Binance's own JSON, which is parsed here. Every request runs through the
gateway's guard (``CcxtGateway._call``): weight budget, circuit breakers, error translation,
never retried or hedged when it places or cancels something.

- ``place_oco``: ``POST /api/v3/orderList/oco``, a SELL list: LIMIT_MAKER above (take-profit),
  STOP_LOSS_LIMIT below, one quantity, our list and leg client ids;
- ``place_stop``: ``POST /api/v3/order`` STOP_LOSS_LIMIT alone;
- ``replace_stop``: ``POST /api/v3/order/cancelReplace`` (STOP_ON_FAILURE): cancels the old stop
  (for an OCO leg Binance cancels the whole list) and places the new stop in one request;
- ``cancel_list`` / ``open_lists`` / ``avg_price`` / ``rules``.

A refusal raises ``ListRejected`` with Binance's code (``-2010`` "would trigger immediately" and
the OCO "relationship of the prices" mean the market is already through a level).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.exchange.ccxt_client import cx
from core.exchange.ccxt_convert import _STATUS, exact_decimal
from core.exchange.ccxt_errors import MalformedReply, clean_message
from core.exchange.gateway import GatewayError, OrderRejected
from core.exchange.ratelimit import MARKET, ORDERS, binance_weight
from core.models import OrderStatus

_BODY = re.compile(r"(\{.*\})", re.S)


class ListRejected(OrderRejected):
    """The exchange refused a protective order; ``code`` is Binance's (0 when unknown), ``data`` the
    cancelReplace detail when there is one (``cancelResult`` / ``newOrderResult``)."""

    def __init__(self, message: str, code: int = 0, data: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data or {}

    @property
    def would_trigger(self) -> bool:
        """The market is already at or through the stop (or an OCO's price order does not hold)."""
        text = str(self).lower()
        return "trigger immediately" in text or "relationship of the prices" in text


@dataclass(frozen=True, slots=True)
class LegReport:
    client_id: str
    exchange_id: str
    status: OrderStatus
    filled: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """What a protective order on one symbol must respect (from the market's ``info``)."""

    symbol: str
    order_types: frozenset[str] = frozenset()
    oco_allowed: bool = False
    cancel_replace_allowed: bool = False
    tick: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    step: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    min_notional: Decimal | None = None
    max_notional: Decimal | None = None
    ask_up: Decimal | None = None  # PERCENT_PRICE_BY_SIDE (or PERCENT_PRICE) for a SELL
    ask_down: Decimal | None = None
    max_orders: int | None = None
    max_algo_orders: int | None = None
    known: bool = True  # False: the exchange gave no filters (a non-Binance market): nothing checked


def _d(v: Any) -> Decimal | None:
    d = exact_decimal(v)
    return d if d is not None and d > 0 else None


def symbol_rules(market: dict | None, symbol: str) -> SymbolRules:
    info = (market or {}).get("info") if isinstance(market, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("filters"), list):
        return SymbolRules(symbol, known=False)
    f = {x.get("filterType"): x for x in info["filters"] if isinstance(x, dict)}
    price, lot = f.get("PRICE_FILTER", {}), f.get("LOT_SIZE", {})
    notional = f.get("NOTIONAL") or {}
    pbs, pp = f.get("PERCENT_PRICE_BY_SIDE"), f.get("PERCENT_PRICE")
    up = _d(pbs.get("askMultiplierUp")) if pbs else _d(pp.get("multiplierUp")) if pp else None
    down = _d(pbs.get("askMultiplierDown")) if pbs else _d(pp.get("multiplierDown")) if pp else None
    mn = _d(notional.get("minNotional")) or _d((f.get("MIN_NOTIONAL") or {}).get("minNotional"))

    def count(name: str, key: str) -> int | None:
        v = (f.get(name) or {}).get(key)
        return int(v) if isinstance(v, (int, str)) and str(v).isdigit() else None

    return SymbolRules(
        symbol, frozenset(str(t) for t in info.get("orderTypes") or ()), bool(info.get("ocoAllowed")),
        bool(info.get("cancelReplaceAllowed")), _d(price.get("tickSize")), _d(price.get("minPrice")),
        _d(price.get("maxPrice")), _d(lot.get("stepSize")), _d(lot.get("minQty")), _d(lot.get("maxQty")),
        mn, _d(notional.get("maxNotional")), up, down, count("MAX_NUM_ORDERS", "maxNumOrders"),
        count("MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders"))


def _leg(r: Any) -> LegReport:
    if not isinstance(r, dict) or r.get("orderId") in (None, ""):
        raise MalformedReply("order list: leg without ids")
    cid = r.get("origClientOrderId") or r.get("clientOrderId")  # a cancel reply names the cancel's own id
    if not cid:
        raise MalformedReply("order list: leg without ids")
    status = _STATUS.get(str(r.get("status")), OrderStatus.SUBMITTED)
    filled = exact_decimal(r.get("executedQty")) or Decimal(0)
    if status == OrderStatus.SUBMITTED and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    return LegReport(str(cid), str(r["orderId"]), status, filled)


def _refusal(exc: BaseException, what: str, secrets) -> GatewayError | None:
    """A Binance refusal (HTTP 4xx with a code) as ``ListRejected``; None for anything else."""
    if not isinstance(exc, cx.BaseError) or isinstance(exc, (cx.NetworkError, cx.AuthenticationError,
                                                            cx.RateLimitExceeded, cx.DDoSProtection)):
        return None
    m = _BODY.search(str(exc))
    try:
        body = json.loads(m.group(1)) if m else {}
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, int):
        return None
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    inner = data.get("newOrderResponse") if isinstance(data.get("newOrderResponse"), dict) else {}
    msg = clean_message(json.dumps({"code": code, "msg": body.get("msg", "")}), secrets)
    if inner.get("code"):
        msg += f"; new order: code {inner.get('code')}: {str(inner.get('msg', ''))[:120]}"
    return ListRejected(f"{what}: rejected by the exchange ({msg})", code, data)


class OrderLists:
    """Protective-order requests for one ``CcxtGateway`` (see the module doc)."""

    def __init__(self, gateway: Any) -> None:
        self.gw = gateway

    @property
    def ex(self):
        return self.gw.exchange

    def rules(self, symbol: str) -> SymbolRules:
        markets = getattr(self.ex, "markets", None) or {}
        return symbol_rules(markets.get(symbol), symbol)

    def _id(self, symbol: str) -> str:
        return self.ex.market(symbol)["id"]

    async def _send(self, what: str, weight: int, call, *, family: str = ORDERS, mutating: bool = True) -> Any:
        secrets = getattr(self.gw, "_secrets", ())

        async def fn(meta: dict) -> Any:
            try:
                return await call()
            except cx.BaseError as exc:
                refused = _refusal(exc, what, secrets)
                if refused is not None:
                    raise refused from None
                raise

        return await self.gw._call(family, weight, what, fn, retries=0 if mutating else None, rejects=True,
                                   hedge=not mutating)

    async def avg_price(self, symbol: str) -> Decimal:
        """The symbol's average price (what PERCENT_PRICE_BY_SIDE is judged against)."""
        raw = await self._send(f"average price {symbol}", 2,
                               lambda: self.ex.public_get_avgprice({"symbol": self._id(symbol)}),
                               family=MARKET, mutating=False)
        px = _d(raw.get("price")) if isinstance(raw, dict) else None
        if px is None:
            raise MalformedReply("average price: malformed reply")
        return px

    async def place_oco(self, symbol: str, list_id: str, stop_id: str, target_id: str, amount: Decimal,
                        target: Decimal, stop: Decimal, limit: Decimal) -> list[LegReport]:
        params = {"symbol": self._id(symbol), "side": "SELL", "quantity": f"{amount:f}",
                  "listClientOrderId": list_id, "aboveType": "LIMIT_MAKER", "abovePrice": f"{target:f}",
                  "aboveClientOrderId": target_id, "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": f"{stop:f}",
                  "belowPrice": f"{limit:f}", "belowTimeInForce": "GTC", "belowClientOrderId": stop_id,
                  "newOrderRespType": "RESULT"}
        raw = await self._send(f"place OCO {list_id}", 1, lambda: self.ex.private_post_orderlist_oco(params))
        reports = raw.get("orderReports") if isinstance(raw, dict) else None
        if not isinstance(reports, list) or len(reports) != 2:
            raise MalformedReply(f"OCO {list_id}: reply without its two legs")
        return [_leg(r) for r in reports]

    async def place_stop(self, symbol: str, client_id: str, amount: Decimal, stop: Decimal,
                         limit: Decimal) -> LegReport:
        params = {"symbol": self._id(symbol), "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC",
                  "quantity": f"{amount:f}", "price": f"{limit:f}", "stopPrice": f"{stop:f}",
                  "newClientOrderId": client_id, "newOrderRespType": "RESULT"}
        raw = await self._send(f"place stop {client_id}", binance_weight("order:POST"),
                               lambda: self.ex.private_post_order(params))
        return _leg(raw)

    async def replace_stop(self, symbol: str, old_id: str, new_id: str, amount: Decimal, stop: Decimal,
                           limit: Decimal) -> LegReport:
        """Cancel ``old_id`` (its whole list if it is an OCO leg) and place a new stop, atomically on
        the exchange's side: STOP_ON_FAILURE places nothing when the cancel fails (the old order
        filled or is gone)."""
        params = {"symbol": self._id(symbol), "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC",
                  "quantity": f"{amount:f}", "price": f"{limit:f}", "stopPrice": f"{stop:f}",
                  "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrigClientOrderId": old_id,
                  "newClientOrderId": new_id, "newOrderRespType": "RESULT"}
        raw = await self._send(f"replace stop {old_id} -> {new_id}", 1,
                               lambda: self.ex.private_post_order_cancelreplace(params))
        new = raw.get("newOrderResponse") if isinstance(raw, dict) else None
        if not isinstance(new, dict):
            raise MalformedReply(f"replace stop {old_id}: reply without the new order")
        return _leg(new)

    async def cancel_list(self, symbol: str, list_id: str) -> list[LegReport] | None:
        """Cancel an OCO by our list id; None when the exchange has no open list by that id."""
        try:
            raw = await self._send(f"cancel OCO {list_id}", 1, lambda: self.ex.private_delete_orderlist(
                {"symbol": self._id(symbol), "listClientOrderId": list_id}))
        except ListRejected as exc:
            if exc.code in (-2011, -2013):
                return None
            raise
        reports = raw.get("orderReports") if isinstance(raw, dict) else None
        return [_leg(r) for r in reports] if isinstance(reports, list) else []

    async def open_lists(self) -> dict[str, list[str]]:
        """Open order lists: our list client id -> its legs' client ids (one request, weight 6)."""
        raw = await self._send("open order lists", 6, lambda: self.ex.private_get_openorderlist(),
                               mutating=False)
        if not isinstance(raw, list):
            raise MalformedReply("open order lists: malformed reply")
        return {str(x.get("listClientOrderId")): [str(o.get("clientOrderId")) for o in x.get("orders") or []]
                for x in raw if isinstance(x, dict)}


def order_lists(gateway: Any) -> OrderLists | None:
    """The protective-order requests of ``gateway``; None for a gateway without them (replay)."""
    if hasattr(gateway, "exchange") and hasattr(gateway, "_call"):
        return OrderLists(gateway)
    return None


__all__ = ["LegReport", "ListRejected", "OrderLists", "SymbolRules", "order_lists", "symbol_rules"]
