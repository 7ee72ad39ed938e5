"""Order lists (OCO): two orders on one quantity, where the first to act ends the other.

``POST /api/v3/orderList/oco`` names its legs by where they sit against the last price: the
*above* leg (LIMIT_MAKER / TAKE_PROFIT(_LIMIT) for a sell, STOP_LOSS(_LIMIT) for a buy) and the
*below* leg (the mirror). The deprecated ``POST /api/v3/order/oco`` (price, stopPrice,
stopLimitPrice ...) is translated to the same thing. Binance's rules, codes and messages:

- leg types: -1158 "Order type not supported in OCO.", -1168 both LIMIT_MAKER, -1165/-1166/
  -1196..-1199 a leg on the wrong side for the list's side;
- each leg passes the single-order checks (``Account.check``: filters, TRAILING_DELTA, order
  counts: a list counts as two orders, stop legs as algo orders);
- prices: the above leg's price (LIMIT_MAKER / TAKE_PROFIT_LIMIT) or stop (the others) above
  the last price, the below leg's under it, and no stop that would trigger at once, else
  -2010 "The relationship of the prices for the orders is not correct.";
- one lock covers both legs (the base quantity for a sell, the larger leg cost for a buy).

Both legs work from placement (stop legs wait for their trigger). When one leg triggers or
trades, the other is EXPIRED and the list is ALL_DONE (the triggered leg may keep working as a
limit order). Cancelling either leg, or the list, cancels both. The stop-loss-type leg gets the
lower orderId and is listed first, as in Binance's examples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tests.support.emulator.params import STOP_TYPES, ZERO, mandatory, not_required
from tests.support.emulator.rules import ApiError
from tests.support.emulator.triggers import would_trigger

if TYPE_CHECKING:
    from tests.support.emulator.matching import MarketView
    from tests.support.emulator.orders import EmuOrder, OrderSpec
    from tests.support.emulator.rules import SymbolRules

OCO_ABOVE = ("STOP_LOSS_LIMIT", "STOP_LOSS", "LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
OCO_BELOW = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
_LEG_FIELDS = (("Price", "price"), ("StopPrice", "stopPrice"), ("TrailingDelta", "trailingDelta"),
               ("TimeInForce", "timeInForce"))
BAD_PRICES = "The relationship of the prices for the orders is not correct."


@dataclass
class OrderList:
    order_list_id: int
    list_client_id: str
    symbol: str
    time: int
    order_ids: list[int] = field(default_factory=list)
    contingency: str = "OCO"
    list_status: str = "EXEC_STARTED"  # listStatusType
    list_order_status: str = "EXECUTING"  # listOrderStatus
    update_time: int = 0

    @property
    def is_open(self) -> bool:
        return self.list_order_status == "EXECUTING"

    def to_api(self, orders: list[EmuOrder], reports: list[dict[str, Any]] | None = None,
               transaction_time: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "orderListId": self.order_list_id, "contingencyType": self.contingency,
            "listStatusType": self.list_status, "listOrderStatus": self.list_order_status,
            "listClientOrderId": self.list_client_id,
            "transactionTime": self.time if transaction_time is None else transaction_time, "symbol": self.symbol,
            "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_id} for o in orders]}
        if reports is not None:
            out["orderReports"] = reports
        return out


def legacy_oco_params(params: dict[str, str]) -> dict[str, str]:
    """The deprecated ``/api/v3/order/oco`` parameters as ``/api/v3/orderList/oco`` ones."""
    for name in ("side", "quantity", "price", "stopPrice"):
        if not params.get(name):
            raise mandatory(name)
    stop_limit = params.get("stopLimitPrice") or None
    tif = params.get("stopLimitTimeInForce") or None
    if stop_limit and not tif:
        raise mandatory("stopLimitTimeInForce")
    if tif and not stop_limit:
        raise not_required("stopLimitTimeInForce")
    limit_leg = {"Type": "LIMIT_MAKER", "Price": params["price"], "ClientOrderId": params.get("limitClientOrderId")}
    stop_leg = {"Type": "STOP_LOSS_LIMIT" if stop_limit else "STOP_LOSS", "StopPrice": params["stopPrice"],
                "Price": stop_limit, "TimeInForce": tif, "TrailingDelta": params.get("trailingDelta"),
                "ClientOrderId": params.get("stopClientOrderId")}
    above, below = (limit_leg, stop_leg) if params["side"] == "SELL" else (stop_leg, limit_leg)
    out = {k: params[k] for k in ("symbol", "side", "quantity", "listClientOrderId", "newOrderRespType")
           if params.get(k)}
    for pos, leg in (("above", above), ("below", below)):
        out.update({pos + k: v for k, v in leg.items() if v})
    return out


def _check_leg_sides(side: str, above: str, below: str) -> None:
    if above == below == "LIMIT_MAKER":
        raise ApiError(-1168, "At least one OCO order must be contingent.")
    if side == "SELL":
        if above.startswith("STOP_LOSS"):
            raise ApiError(-1197, "A stop loss order in a sell OCO must be below.")
        if below.startswith("TAKE_PROFIT"):
            raise ApiError(-1199, "A take profit order in a sell OCO must be above.")
        if below == "LIMIT_MAKER":
            raise ApiError(-1166, "A limit order in a sell OCO must be above.")
    else:
        if below.startswith("STOP_LOSS"):
            raise ApiError(-1196, "A stop loss order in a buy OCO must be above.")
        if above.startswith("TAKE_PROFIT"):
            raise ApiError(-1198, "A take profit order in a buy OCO must be below.")
        if above == "LIMIT_MAKER":
            raise ApiError(-1165, "A limit order in a buy OCO must be below.")


def _leg_error(err: ApiError, pos: str) -> ApiError:
    """Name the leg's parameter as the request did (``'price'`` -> ``'abovePrice'``)."""
    msg = err.msg
    for suffix, name in _LEG_FIELDS:
        msg = msg.replace(f"'{name}'", f"'{pos}{suffix}'")
    return ApiError(err.code, msg, err.status)


class OrderLists:
    """Mixed into ``Account``: OCO placement, expiry and cancellation."""

    lists: list[OrderList]
    by_id: dict[int, EmuOrder]
    free: dict[str, Decimal]
    if TYPE_CHECKING:
        def check(self, rules: SymbolRules, market: MarketView, params: dict[str, str], client_id: str,
                  extra_orders: int = 0, extra_algo: int = 0) -> OrderSpec: ...
        def is_duplicate(self, client_id: str) -> bool: ...
        def _new_order(self, rules: SymbolRules, client_id: str, side: str, otype: str, tif: str, price: Decimal,
                       qty: Decimal, quote_qty: Decimal, now_ms: int) -> EmuOrder: ...
        def _lock(self, asset: str, amount: Decimal) -> None: ...
        def _release(self, order: EmuOrder, rules: SymbolRules) -> None: ...
        @staticmethod
        def stop_lock(rules: SymbolRules, side: str, qty: Decimal, ref_price: Decimal) -> tuple[str, Decimal]: ...
        @staticmethod
        def arm_stop(order: EmuOrder, stop: Decimal | None, trailing: int | None, last: Decimal,
                     now_ms: int) -> None: ...

    def list_orders(self, lst: OrderList) -> list[EmuOrder]:
        return [self.by_id[i] for i in lst.order_ids]

    def open_lists(self, symbol: str | None = None) -> list[OrderList]:
        return [lst for lst in self.lists if lst.is_open and (symbol is None or lst.symbol == symbol)]

    def find_list(self, list_id: int | None, list_client_id: str | None) -> OrderList | None:
        """By id first (its client id must then match, if given), else the latest with that client id."""
        if list_id is not None:
            lst = self.lists[list_id] if 0 <= list_id < len(self.lists) else None
            return lst if lst is not None and (not list_client_id or lst.list_client_id == list_client_id) else None
        for lst in reversed(self.lists):
            if lst.list_client_id == list_client_id:
                return lst
        return None

    def place_oco(self, rules: SymbolRules, market: MarketView, params: dict[str, str], now_ms: int,
                  list_client_id: str, client_ids: dict[str, str]) -> tuple[OrderList, list[EmuOrder]]:
        """Validate and place an OCO; ``client_ids`` holds the "above" and "below" legs' ids."""
        side = params.get("side")
        if not side:
            raise mandatory("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        for name in ("quantity", "aboveType", "belowType"):
            if not params.get(name):
                raise mandatory(name)
        types = {"above": params["aboveType"], "below": params["belowType"]}
        if types["above"] not in OCO_ABOVE or types["below"] not in OCO_BELOW:
            raise ApiError(-1158, "Order type not supported in OCO.")
        _check_leg_sides(side, types["above"], types["below"])
        if not rules.allows("ocoAllowed"):
            raise ApiError(-2010, "OCO orders are not supported for this symbol")
        order = sorted(types, key=lambda pos: not types[pos].startswith("STOP_LOSS"))  # stop-loss leg first
        specs: list[tuple[str, OrderSpec]] = []
        for k, pos in enumerate(order):
            leg = {"side": side, "type": types[pos], "quantity": params["quantity"]}
            leg.update({name: params[pos + suffix] for suffix, name in _LEG_FIELDS if params.get(pos + suffix)})
            try:
                spec = self.check(rules, market, leg, client_ids[pos], extra_orders=k,
                                  extra_algo=sum(1 for _, s in specs if s.type in STOP_TYPES))
            except ApiError as err:
                raise _leg_error(err, pos) from None
            specs.append((pos, spec))
        # -- what the matching engine rejects ---------------------------------------------
        if any(lst.list_client_id == list_client_id for lst in self.open_lists()) or \
                client_ids["above"] == client_ids["below"] or any(self.is_duplicate(s.client_id) for _, s in specs):
            raise ApiError(-2010, "Duplicate order sent.")
        last = market.avg_price(rules.symbol)
        book = market.book(rules.symbol)
        assert last is not None and book is not None  # check() saw them
        for pos, spec in specs:
            ref = spec.price if spec.type in ("LIMIT_MAKER", "TAKE_PROFIT_LIMIT") else spec.stop
            if ref is not None and (ref <= last if pos == "above" else ref >= last):
                raise ApiError(-2010, BAD_PRICES)
            if spec.stop is not None and would_trigger(side, spec.type, spec.stop, last):
                raise ApiError(-2010, BAD_PRICES)
        (bid, _), (ask, _) = book.top()
        for _, spec in specs:
            if spec.type == "LIMIT_MAKER" and spec.price is not None and \
                    (spec.price >= ask if side == "BUY" else spec.price <= bid):
                raise ApiError(-2010, "Order would immediately match and take.")
        qty = specs[0][1].qty
        assert qty is not None
        locks = [self.stop_lock(rules, side, qty, s.price or s.stop or last) for _, s in specs]
        lock_asset, lock_amount = max(locks, key=lambda a: a[1])
        if lock_amount > self.free.get(lock_asset, ZERO):
            raise ApiError(-2010, "Account has insufficient balance for requested action.")
        lst = OrderList(len(self.lists), list_client_id, rules.symbol, now_ms, update_time=now_ms)
        self.lists.append(lst)
        legs = []
        for _, spec in specs:
            leg_order = self._new_order(rules, spec.client_id, side, spec.type, spec.tif, spec.price or ZERO, qty,
                                        ZERO, now_ms)
            leg_order.order_list_id = lst.order_list_id
            if spec.type in STOP_TYPES:
                self.arm_stop(leg_order, spec.stop, spec.trailing, last, now_ms)
            lst.order_ids.append(leg_order.order_id)
            legs.append(leg_order)
        self._lock(lock_asset, lock_amount)
        legs[0].locked = lock_amount  # one lock for the list; end_list hands it to the leg that acts
        return lst, legs

    def end_list(self, lst: OrderList, winner: EmuOrder, ts: int) -> None:
        """``winner`` triggered or traded: the other legs expire and hand it their lock."""
        for leg in self.list_orders(lst):
            if leg is not winner and leg.is_open:
                leg.status, leg.update_time = "EXPIRED", ts
                winner.locked += leg.locked
                leg.locked = ZERO
        lst.list_status = lst.list_order_status = "ALL_DONE"
        lst.update_time = ts

    def cancel_list(self, rules: SymbolRules, lst: OrderList, now_ms: int) -> list[EmuOrder]:
        if not lst.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        legs = self.list_orders(lst)
        for leg in legs:
            if leg.is_open:
                leg.status, leg.update_time = "CANCELED", now_ms
                self._release(leg, rules)
        lst.list_status = lst.list_order_status = "ALL_DONE"
        lst.update_time = now_ms
        return legs
