"""The real Binance exchangeInfo, cut down to the symbols we have candles for, and its filters.

Order checks follow Binance's filter semantics (PRICE_FILTER on price and stopPrice, LOT_SIZE,
MARKET_LOT_SIZE, PERCENT_PRICE / PERCENT_PRICE_BY_SIDE, MIN_NOTIONAL / NOTIONAL, MAX_NUM_ORDERS,
MAX_NUM_ALGO_ORDERS, TRAILING_DELTA) and fail with Binance's real code and message
(``-1013 "Filter failure: <FILTER>"``). The "average price" the percent and notional filters
use is the last close (the source data is hourly).
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

ZERO = Decimal(0)


class ApiError(Exception):
    """A Binance error reply: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, code: int, msg: str, status: int = 400, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.status, self.data = code, msg, status, data

    def reply(self) -> dict[str, Any]:
        """The ``{"code", "msg"}`` object (cancelReplace nests these inside its ``data``)."""
        return {"code": self.code, "msg": self.msg}

    def body(self) -> str:
        out: dict[str, Any] = self.reply()
        if self.data is not None:
            out["data"] = self.data
        return json.dumps(out)


def filter_failure(name: str) -> ApiError:
    return ApiError(-1013, f"Filter failure: {name}")


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _on_step(value: Decimal, start: Decimal, step: Decimal) -> bool:
    return step == 0 or (value - start) % step == 0


@dataclass
class SymbolRules:
    symbol: str
    base: str
    quote: str
    status: str
    order_types: frozenset[str]
    quote_order_qty_allowed: bool
    filters: dict[str, dict[str, Any]] = field(repr=False)
    raw: dict[str, Any] = field(repr=False)
    tick: Decimal = ZERO
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    step: Decimal = ZERO
    min_qty: Decimal = ZERO
    max_qty: Decimal = ZERO

    @classmethod
    def from_info(cls, entry: dict[str, Any]) -> SymbolRules:
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        return cls(
            symbol=entry["symbol"], base=entry["baseAsset"], quote=entry["quoteAsset"], status=entry["status"],
            order_types=frozenset(entry.get("orderTypes", [])),
            quote_order_qty_allowed=bool(entry.get("quoteOrderQtyMarketAllowed", False)),
            filters=filters, raw=entry,
            tick=_dec(price.get("tickSize", "0")), min_price=_dec(price.get("minPrice", "0")),
            max_price=_dec(price.get("maxPrice", "0")),
            step=_dec(lot.get("stepSize", "0")), min_qty=_dec(lot.get("minQty", "0")),
            max_qty=_dec(lot.get("maxQty", "0")),
        )

    # -- checks ---------------------------------------------------------------------------
    def check_price(self, price: Decimal) -> None:
        if "PRICE_FILTER" not in self.filters:
            return
        if ((self.min_price and price < self.min_price) or (self.max_price and price > self.max_price)
                or not _on_step(price, self.min_price, self.tick)):
            raise filter_failure("PRICE_FILTER")

    def check_quantity(self, qty: Decimal, market: bool) -> None:
        if "LOT_SIZE" in self.filters and (
                qty < self.min_qty or (self.max_qty and qty > self.max_qty)
                or not _on_step(qty, self.min_qty, self.step)):
            raise filter_failure("LOT_SIZE")
        mls = self.filters.get("MARKET_LOT_SIZE")
        if market and mls:
            lo, hi, step = _dec(mls["minQty"]), _dec(mls["maxQty"]), _dec(mls["stepSize"])
            if qty < lo or (hi and qty > hi) or not _on_step(qty, lo, step):
                raise filter_failure("MARKET_LOT_SIZE")

    def check_percent_price(self, side: str, price: Decimal, avg_price: Decimal) -> None:
        f = self.filters.get("PERCENT_PRICE_BY_SIDE")
        if f:
            up, down = ("bidMultiplierUp", "bidMultiplierDown") if side == "BUY" else ("askMultiplierUp",
                                                                                     "askMultiplierDown")
            if price > avg_price * _dec(f[up]) or price < avg_price * _dec(f[down]):
                raise filter_failure("PERCENT_PRICE_BY_SIDE")
        f = self.filters.get("PERCENT_PRICE")
        if f and (price > avg_price * _dec(f["multiplierUp"]) or price < avg_price * _dec(f["multiplierDown"])):
            raise filter_failure("PERCENT_PRICE")

    def check_notional(self, notional: Decimal, market: bool) -> None:
        f = self.filters.get("NOTIONAL")
        if f:
            if (not market or f.get("applyMinToMarket", True)) and notional < _dec(f["minNotional"]):
                raise filter_failure("NOTIONAL")
            cap = _dec(f.get("maxNotional", "0"))
            if cap and (not market or f.get("applyMaxToMarket", False)) and notional > cap:
                raise filter_failure("NOTIONAL")
        f = self.filters.get("MIN_NOTIONAL")
        if f and (not market or f.get("applyToMarket", True)) and notional < _dec(f["minNotional"]):
            raise filter_failure("MIN_NOTIONAL")

    def check_open_orders(self, open_count: int) -> None:
        f = self.filters.get("MAX_NUM_ORDERS")
        if f and open_count >= int(f["maxNumOrders"]):
            raise filter_failure("MAX_NUM_ORDERS")

    def check_algo_orders(self, open_algo_count: int) -> None:
        """Stop-loss and take-profit orders ("algo" orders) have their own cap per symbol."""
        f = self.filters.get("MAX_NUM_ALGO_ORDERS")
        if f and open_algo_count >= int(f["maxNumAlgoOrders"]):
            raise filter_failure("MAX_NUM_ALGO_ORDERS")

    def check_trailing_delta(self, side: str, otype: str, delta: int) -> None:
        """"Above" bounds for stops that trigger on a rise (SL buy, TP sell), "below" for the rest."""
        f = self.filters.get("TRAILING_DELTA")
        if not f:
            return
        above = (side == "BUY") == otype.startswith("STOP_LOSS")
        lo, hi = (f["minTrailingAboveDelta"], f["maxTrailingAboveDelta"]) if above else \
            (f["minTrailingBelowDelta"], f["maxTrailingBelowDelta"])
        if not int(lo) <= delta <= int(hi):
            raise filter_failure("TRAILING_DELTA")

    def allows(self, flag: str) -> bool:
        """exchangeInfo feature flags (ocoAllowed, allowTrailingStop, cancelReplaceAllowed).

        Only an explicit ``false`` forbids: older exchangeInfo files predate some of the flags.
        """
        return self.raw.get(flag, True) is not False


def load_exchange_info(path: Path) -> dict[str, Any]:
    """The parsed file (cached per path and mtime: treat it as read-only)."""
    path = Path(path).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ValueError(f"{path}: cannot read exchangeInfo JSON ({exc})") from None
    return _load_exchange_info(str(path), mtime)


@lru_cache(maxsize=4)
def _load_exchange_info(name: str, mtime_ns: int) -> dict[str, Any]:
    path = Path(name)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read exchangeInfo JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("symbols"), list):
        raise ValueError(f"{path}: not a Binance exchangeInfo reply (no 'symbols' list)")
    return info


class ExchangeRules:
    """exchangeInfo restricted to ``symbols`` (those with candles), plus per-symbol rules."""

    def __init__(self, info: dict[str, Any], symbols: set[str], weight_limit: int) -> None:
        kept = [s for s in info["symbols"] if s.get("symbol") in symbols]
        self.rules = {s["symbol"]: SymbolRules.from_info(s) for s in kept}
        limits = []
        for lim in info.get("rateLimits", []):
            lim = dict(lim)
            if lim.get("rateLimitType") == "REQUEST_WEIGHT":
                lim["limit"] = weight_limit
            limits.append(lim)
        head = {"timezone": info.get("timezone", "UTC"), "serverTime": 0, "rateLimits": limits,
                "exchangeFilters": info.get("exchangeFilters", [])}
        self._head = head
        self._symbols_json = {s["symbol"]: json.dumps(s, separators=(",", ":")) for s in kept}
        # pre-split around serverTime so a reply is one string join
        text = json.dumps(head, separators=(",", ":"))
        self._prefix, self._suffix = text.split('"serverTime":0')
        self._all = ",".join(self._symbols_json.values())

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.rules

    def assets(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rules.values():
            seen[r.base] = None
            seen[r.quote] = None
        return list(seen)

    def exchange_info_json(self, server_ms: int, only: list[str] | None = None) -> str:
        body = self._all if only is None else ",".join(self._symbols_json[s] for s in only)
        head = self._prefix + f'"serverTime":{server_ms}' + self._suffix
        return head[:-1] + ',"symbols":[' + body + "]}"
