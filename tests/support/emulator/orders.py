"""What the emulator stores per order and per trade, and how Binance shows them (``to_api``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tests.support.emulator.params import OPEN_STATUSES, STOP_TYPES, ZERO

if TYPE_CHECKING:
    from tests.support.emulator.rules import SymbolRules


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
    order_list_id: int = -1

    def to_api(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": self.order_list_id,
                "price": f"{self.price:.8f}", "qty": f"{self.qty:.8f}", "quoteQty": f"{self.quote_qty:.8f}",
                "commission": f"{self.commission:.8f}", "commissionAsset": self.commission_asset,
                "time": self.time, "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True}


@dataclass
class EmuOrder:
    symbol: str
    order_id: int
    client_id: str
    side: str  # BUY | SELL
    type: str  # one of ORDER_TYPES
    time_in_force: str
    price: Decimal  # 0 for market orders (and STOP_LOSS / TAKE_PROFIT)
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
    stop_price: Decimal = ZERO  # 0: none (not a stop order, or a trailing stop without activation price)
    trailing_delta: int = 0  # basis points; 0: not trailing
    trailing_time: int = -1  # when a trailing stop started tracking (-1: not yet)
    trail_extreme: Decimal = ZERO  # best price since tracking started (highest for sells, lowest for buys)
    working_time: int = 0  # when the order started working; -1 while a stop waits for its trigger
    order_list_id: int = -1

    def __post_init__(self) -> None:
        if self.working_time == 0:  # not given (also: state files written before stop orders existed)
            self.working_time = -1 if self.type in STOP_TYPES else self.time

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_waiting(self) -> bool:
        """An open stop order that has not triggered yet."""
        return self.working_time == -1 and self.is_open

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def _conditional(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type in STOP_TYPES:
            out["stopPrice"] = f"{self.stop_price:.8f}"
        if self.trailing_delta:
            out["trailingDelta"] = self.trailing_delta
            out["trailingTime"] = self.trailing_time
        return out

    def to_api(self, kind: str = "query", fills: list[EmuTrade] | None = None) -> dict[str, Any]:
        """Binance's order shapes: ``ack``/``result``/``full`` (placement), ``cancel``, ``query``."""
        base = {"symbol": self.symbol, "orderId": self.order_id, "orderListId": self.order_list_id,
                "clientOrderId": self.client_id}
        common = {"price": f"{self.price:.8f}", "origQty": f"{self.orig_qty:.8f}",
                  "executedQty": f"{self.executed_qty:.8f}", "cummulativeQuoteQty": f"{self.cum_quote:.8f}",
                  "status": self.status, "timeInForce": self.time_in_force, "type": self.type, "side": self.side}
        if kind == "ack":
            return {**base, "transactTime": self.time}
        if kind in ("result", "full"):
            out = {**base, "transactTime": self.time, **common, **self._conditional(),
                   "workingTime": self.working_time, "origQuoteOrderQty": f"{self.orig_quote_qty:.8f}",
                   "selfTradePreventionMode": "NONE"}
            if kind == "full":
                out["fills"] = [{"price": f"{t.price:.8f}", "qty": f"{t.qty:.8f}",
                                 "commission": f"{t.commission:.8f}", "commissionAsset": t.commission_asset,
                                 "tradeId": t.id} for t in (fills or [])]
            return out
        if kind == "cancel":  # clientOrderId and transactTime are the cancel's; the caller sets them
            return {"symbol": self.symbol, "origClientOrderId": self.client_id, "orderId": self.order_id,
                    "orderListId": self.order_list_id, "clientOrderId": "", "transactTime": 0, **common,
                    "origQuoteOrderQty": f"{self.orig_quote_qty:.8f}", **self._conditional(),
                    "selfTradePreventionMode": "NONE"}
        return {**base, **common, "stopPrice": f"{self.stop_price:.8f}", "icebergQty": "0.00000000",
                "time": self.time, "updateTime": self.update_time,
                "isWorking": self.type != "MARKET" and self.working_time != -1, "workingTime": self.working_time,
                "origQuoteOrderQty": f"{self.orig_quote_qty:.8f}", "selfTradePreventionMode": "NONE",
                **({"trailingDelta": self.trailing_delta, "trailingTime": self.trailing_time}
                   if self.trailing_delta else {})}


@dataclass
class OrderSpec:
    """A new order that passed the API-level checks (``Account.check``)."""
    rules: SymbolRules
    client_id: str
    side: str
    type: str
    tif: str
    qty: Decimal | None
    quote_qty: Decimal | None
    price: Decimal | None
    stop: Decimal | None
    trailing: int | None
