"""Binance spot endpoints: the route table (method, path, weight, signed) and the replies.

Handlers run under the emulator's lock, get the merged query/body parameters and return the
JSON text of a 200 reply, or raise ``ApiError`` with Binance's code and message. Weights are
Binance's current spot request weights; ``order_count`` is what a request adds to the unfilled
order count (the X-MBX-ORDER-COUNT headers). Order lists and cancelReplace: ``list_handlers``.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import numpy as np

from tests.support.emulator.candles import INTERVAL_MS
from tests.support.emulator.matching import EmuOrder, mandatory
from tests.support.emulator.rules import ApiError, SymbolRules

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_CLIENT_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-")


@dataclass(frozen=True, slots=True)
class Route:
    handler: str
    weight: Callable[[dict[str, str]], int]
    signed: bool = False
    sapi: bool = False
    mutating: bool = False
    per_symbol: bool = False
    order_count: int = 0


def _by_symbol(one: int, all_: int) -> Callable[[dict[str, str]], int]:
    return lambda p: one if p.get("symbol") else all_


def _depth_weight(p: dict[str, str]) -> int:
    try:
        limit = int(p.get("limit", "100"))
    except ValueError:
        return 5
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _ticker_weight(p: dict[str, str]) -> int:
    if p.get("symbol"):
        return 2
    raw = p.get("symbols")
    if not raw:
        return 80
    n = raw.count(",") + 1
    return 2 if n <= 20 else 40 if n <= 100 else 80


def _const(w: int) -> Callable[[dict[str, str]], int]:
    return lambda p: w


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/api/v3/ping"): Route("ping", _const(1)),
    ("GET", "/api/v3/time"): Route("time", _const(1)),
    ("GET", "/api/v3/exchangeInfo"): Route("exchange_info", _const(20)),
    ("GET", "/api/v3/klines"): Route("klines", _const(2), per_symbol=True),
    ("GET", "/api/v3/depth"): Route("depth", _depth_weight, per_symbol=True),
    ("GET", "/api/v3/ticker/24hr"): Route("ticker_24hr", _ticker_weight, per_symbol=True),
    ("GET", "/api/v3/ticker/price"): Route("ticker_price", _by_symbol(2, 4), per_symbol=True),
    ("GET", "/api/v3/ticker/bookTicker"): Route("book_ticker", _by_symbol(2, 4), per_symbol=True),
    ("GET", "/api/v3/avgPrice"): Route("avg_price", _const(2), per_symbol=True),
    ("GET", "/api/v3/account"): Route("account", _const(20), signed=True),
    ("POST", "/api/v3/order"): Route("new_order", _const(1), signed=True, mutating=True, order_count=1),
    ("POST", "/api/v3/order/test"): Route("test_order", _const(1), signed=True),
    ("GET", "/api/v3/order"): Route("query_order", _const(4), signed=True),
    ("DELETE", "/api/v3/order"): Route("cancel_order", _const(1), signed=True, mutating=True),
    ("GET", "/api/v3/openOrders"): Route("open_orders", _by_symbol(6, 80), signed=True),
    ("DELETE", "/api/v3/openOrders"): Route("cancel_open_orders", _const(1), signed=True, mutating=True),
    ("GET", "/api/v3/allOrders"): Route("all_orders", _const(20), signed=True),
    ("GET", "/api/v3/myTrades"): Route("my_trades", _const(20), signed=True),
    ("POST", "/api/v3/order/cancelReplace"): Route("cancel_replace", _const(1), signed=True, mutating=True,
                                                   order_count=1),
    ("POST", "/api/v3/orderList/oco"): Route("new_oco", _const(1), signed=True, mutating=True, order_count=2),
    ("POST", "/api/v3/order/oco"): Route("new_oco_legacy", _const(1), signed=True, mutating=True, order_count=2),
    ("DELETE", "/api/v3/orderList"): Route("cancel_order_list", _const(1), signed=True, mutating=True),
    ("GET", "/api/v3/orderList"): Route("query_order_list", _const(4), signed=True),
    ("GET", "/api/v3/openOrderList"): Route("open_order_lists", _const(6), signed=True),
    ("GET", "/api/v3/allOrderList"): Route("all_order_lists", _const(20), signed=True),
    ("GET", "/sapi/v1/system/status"): Route("system_status", _const(1), sapi=True),
    ("GET", "/sapi/v1/capital/config/getall"): Route("capital_config", _const(10), signed=True, sapi=True),
    ("GET", "/sapi/v1/margin/allPairs"): Route("margin_pairs", _const(1), signed=True, sapi=True),
    ("GET", "/sapi/v1/margin/isolated/allPairs"): Route("isolated_pairs", _const(10), signed=True, sapi=True),
}


def _f8(x: float) -> str:
    return "%.8f" % x


def _int_param(params: dict[str, str], name: str, default: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")


def _limit(params: dict[str, str], default: int, maximum: int) -> int:
    limit = _int_param(params, "limit", default)
    assert limit is not None
    if limit < 1 or limit > maximum:
        raise ApiError(-1130, "Invalid data sent for a parameter.")
    return limit


class EndpointHandlers:
    """Mixed into ``Emulator``: one ``_h_<name>`` per route."""

    def _rules(self, params: dict[str, str]) -> SymbolRules:
        symbol = params.get("symbol")
        if not symbol:
            raise mandatory("symbol")
        rules = self.exchange.rules.get(symbol)
        if rules is None:
            raise ApiError(-1121, "Invalid symbol.")
        return rules

    # -- public handlers ------------------------------------------------------------------
    def _h_ping(self, params: dict[str, str]) -> str:
        return "{}"

    def _h_time(self, params: dict[str, str]) -> str:
        return json.dumps({"serverTime": self.server_ms()})

    def _h_system_status(self, params: dict[str, str]) -> str:
        return json.dumps({"status": 0, "msg": "normal"})

    def _symbol_list(self, params: dict[str, str]) -> list[str] | None:
        if params.get("symbol"):
            return [self._rules(params).symbol]
        raw = params.get("symbols")
        if not raw:
            return None
        try:
            wanted = json.loads(raw)
        except ValueError:
            raise ApiError(-1100, "Illegal characters found in parameter 'symbols'; legal range is "
                                  "'^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.") from None
        if not isinstance(wanted, list) or any(s not in self.exchange.rules for s in wanted):
            raise ApiError(-1121, "Invalid symbol.")
        return list(dict.fromkeys(wanted))

    def _h_exchange_info(self, params: dict[str, str]) -> str:
        return self.exchange.exchange_info_json(self.server_ms(), self._symbol_list(params))

    def _h_klines(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        interval = params.get("interval")
        if not interval:
            raise mandatory("interval")
        tf = INTERVAL_MS.get(interval)
        if tf is None:
            raise ApiError(-1120, "Invalid interval.")
        limit = _limit(params, 500, 1000)
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        s = self.candles.series(rules.symbol, tf)
        if s is None:
            return "[]"
        hi = s.closed_count(self._now)
        if end is not None:
            hi = min(hi, int(np.searchsorted(s.ts, end, side="right")))
        if start is not None:
            lo = s.index_at(start)
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return s.kline_json(lo, hi) if lo < hi else "[]"

    def _h_depth(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        limit = _limit(params, 100, 5000)
        book = self.book(rules.symbol)
        if book is None:
            return '{"lastUpdateId":0,"bids":[],"asks":[]}'
        return book.depth_json(limit, book.ref_ts // 1000)

    def _ticker(self, symbol: str) -> str:
        now = self._now
        if self._ticker_cache[0] != now:
            self._ticker_cache = (now, {})
        cache = self._ticker_cache[1]
        text = cache.get(symbol)
        if text is None:
            text = cache[symbol] = json.dumps(self._ticker_fields(symbol, now), separators=(",", ":"))
        return text

    def _ticker_fields(self, symbol: str, now: int) -> dict[str, Any]:
        last = self.candles.last_close(symbol, now)
        s = self.candles.series(symbol, HOUR_MS)
        book = self.book(symbol)
        (bid, bid_q), (ask, ask_q) = book.top() if book is not None else ((Decimal(0),) * 2, (Decimal(0),) * 2)
        out: dict[str, Any] = {"symbol": symbol}
        last_price = last[1] if last is not None else 0.0
        op = hi_ = lo_ = last_price
        vol = qvol = prev = 0.0
        if s is not None and last is not None:
            n = s.closed_count(now)
            i0 = s.index_at(now - DAY_MS)
            if i0 > 0:
                prev = float(s.ohlcv[min(i0, n) - 1, 3])
            if n > i0:
                x = s.ohlcv[i0:n]
                op, hi_, lo_ = float(x[0, 0]), float(x[:, 1].max()), float(x[:, 2].min())
                hi_, lo_ = max(hi_, last_price), min(lo_, last_price)
                vol = float(x[:, 4].sum())
                qvol = float(np.dot(x[:, 3], x[:, 4]))
        change = last_price - op
        out.update({
            "priceChange": _f8(change), "priceChangePercent": "%.3f" % (100.0 * change / op if op else 0.0),
            "weightedAvgPrice": _f8(qvol / vol if vol else 0.0), "prevClosePrice": _f8(prev),
            "lastPrice": _f8(last_price), "lastQty": "0.00000000",
            "bidPrice": f"{bid:.8f}", "bidQty": f"{bid_q:.8f}", "askPrice": f"{ask:.8f}", "askQty": f"{ask_q:.8f}",
            "openPrice": _f8(op), "highPrice": _f8(hi_), "lowPrice": _f8(lo_), "volume": _f8(vol),
            "quoteVolume": _f8(qvol), "openTime": now - DAY_MS, "closeTime": now - 1,
            "firstId": -1, "lastId": -1, "count": 0,
        })
        return out

    def _h_ticker_24hr(self, params: dict[str, str]) -> str:
        only = self._symbol_list(params)
        if params.get("symbol"):
            return self._ticker(params["symbol"])
        return "[" + ",".join(self._ticker(s) for s in (only or self.symbols)) + "]"

    def _h_ticker_price(self, params: dict[str, str]) -> str:
        only = self._symbol_list(params)
        rows = []
        for sym in only or self.symbols:
            last = self.candles.last_close(sym, self._now)
            rows.append({"symbol": sym, "price": _f8(last[1] if last else 0.0)})
        return json.dumps(rows[0] if params.get("symbol") else rows)

    def _h_book_ticker(self, params: dict[str, str]) -> str:
        only = self._symbol_list(params)
        rows = []
        for sym in only or self.symbols:
            book = self.book(sym)
            if book is None:
                rows.append({"symbol": sym, "bidPrice": "0.00000000", "bidQty": "0.00000000",
                             "askPrice": "0.00000000", "askQty": "0.00000000"})
                continue
            (bp, bq), (ap, aq) = book.top()
            rows.append({"symbol": sym, "bidPrice": f"{bp:.8f}", "bidQty": f"{bq:.8f}", "askPrice": f"{ap:.8f}",
                         "askQty": f"{aq:.8f}"})
        return json.dumps(rows[0] if params.get("symbol") else rows)

    def _h_avg_price(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        last = self.candles.last_close(rules.symbol, self._now)
        return json.dumps({"mins": 5, "price": _f8(last[1] if last else 0.0), "closeTime": self._now})

    # -- signed handlers ------------------------------------------------------------------
    def _h_account(self, params: dict[str, str]) -> str:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        assets = list(dict.fromkeys(self.exchange.assets() + sorted(self.account.free)))
        rows = []
        for a in assets:
            free, locked = self.account.free.get(a, Decimal(0)), self.account.locked.get(a, Decimal(0))
            if omit_zero and not free and not locked:
                continue
            rows.append({"asset": a, "free": f"{free:.8f}", "locked": f"{locked:.8f}"})
        return json.dumps({
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": f"{self.account.fee_rate:.8f}", "taker": f"{self.account.fee_rate:.8f}",
                                "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self._now,
            "accountType": "SPOT", "balances": rows, "permissions": ["SPOT"], "uid": 1000001,
        })

    def _client_id(self, params: dict[str, str], name: str) -> str:
        cid = params.get(name)
        if cid is None or cid == "":
            return "emu" + "".join(self._rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(19))
        if len(cid) > 36 or not set(cid) <= _CLIENT_ID_CHARS:
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        return cid

    @staticmethod
    def _resp_type(params: dict[str, str]) -> str:
        """newOrderRespType, lower case; Binance's default is FULL for MARKET and LIMIT, else ACK."""
        default = "FULL" if params.get("type") in ("MARKET", "LIMIT") else "ACK"
        kind = (params.get("newOrderRespType") or default).upper()
        if kind not in ("ACK", "RESULT", "FULL"):
            raise ApiError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        return kind.lower()

    def _h_new_order(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        cid = self._client_id(params, "newClientOrderId")
        kind = self._resp_type(params)
        order, trades = self.account.place(rules, self, params, self._now, cid)
        self._save()
        log.debug("emulator order %s %s %s %s -> %s", cid, order.side, order.type, order.symbol, order.status)
        return json.dumps(order.to_api(kind, trades))

    def _h_test_order(self, params: dict[str, str]) -> str:
        """Validate like a real order, on a throwaway copy of the account."""
        rules = self._rules(params)
        copy.deepcopy(self.account).place(rules, self, params, self._now,
                                          self._client_id(params, "newClientOrderId"))
        return "{}"

    def _lookup(self, params: dict[str, str]) -> tuple[SymbolRules, EmuOrder | None]:
        rules = self._rules(params)
        order_id = _int_param(params, "orderId")
        client_id = params.get("origClientOrderId") or None
        if order_id is None and client_id is None:
            raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        return rules, self.account.find(rules.symbol, order_id, client_id)

    def _h_query_order(self, params: dict[str, str]) -> str:
        _, order = self._lookup(params)
        if order is None:
            raise ApiError(-2013, "Order does not exist.")
        return json.dumps(order.to_api("query"))

    def _cancel_reply(self, order: EmuOrder, params: dict[str, str], name: str = "newClientOrderId",
                      cancel_id: str | None = None) -> dict[str, Any]:
        out = order.to_api("cancel")
        out["clientOrderId"] = cancel_id or self._client_id(params, name)
        out["transactTime"] = self._now
        return out

    def _h_cancel_order(self, params: dict[str, str]) -> str:
        rules, order = self._lookup(params)
        self.account.cancel(rules, order, self._now)
        self._save()
        return json.dumps(self._cancel_reply(order, params))  # type: ignore[arg-type]

    def _h_cancel_open_orders(self, params: dict[str, str]) -> str:
        """Plain orders first, then each executing order list as one list-status entry (as Binance)."""
        rules = self._rules(params)
        open_ = self.account.open_orders(rules.symbol)
        if not open_:
            raise ApiError(-2011, "Unknown order sent.")
        lists = self.account.open_lists(rules.symbol)
        in_lists = {i for lst in lists for i in lst.order_ids}
        out: list[dict[str, Any]] = []
        cid = self._client_id({}, "newClientOrderId")
        for order in open_:
            if order.order_id not in in_lists:
                self.account.cancel(rules, order, self._now)
                out.append(self._cancel_reply(order, {}, cancel_id=cid))
        for lst in lists:
            legs = self.account.cancel_list(rules, lst, self._now)
            out.append(lst.to_api(legs, [self._cancel_reply(o, {}, cancel_id=cid) for o in legs], self._now))
        self._save()
        return json.dumps(out)

    def _h_open_orders(self, params: dict[str, str]) -> str:
        symbol = self._rules(params).symbol if params.get("symbol") else None
        return json.dumps([o.to_api("query") for o in self.account.open_orders(symbol)])

    def _h_all_orders(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        limit = _limit(params, 500, 1000)
        from_id = _int_param(params, "orderId")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        rows = [o for o in self.account.orders if o.symbol == rules.symbol
                and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time >= start) and (end is None or o.time <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return json.dumps([o.to_api("query") for o in rows])

    def _h_my_trades(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        limit = _limit(params, 500, 1000)
        order_id, from_id = _int_param(params, "orderId"), _int_param(params, "fromId")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        if start is not None and end is not None and end - start > DAY_MS:
            raise ApiError(-1127, "More than 24 hours between startTime and endTime.")
        rows = [t for t in self.account.trades if t.symbol == rules.symbol
                and (order_id is None or t.order_id == order_id)
                and (from_id is None or t.id >= from_id)
                and (start is None or t.time >= start) and (end is None or t.time <= end)]
        rows.sort(key=lambda t: (t.time, t.id))
        rows = rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]
        return json.dumps([t.to_api() for t in rows])

    # -- sapi (what ccxt's load_markets asks for when keys are set) -------------------------
    def _h_capital_config(self, params: dict[str, str]) -> str:
        rows = []
        for a in dict.fromkeys(self.exchange.assets() + sorted(self.account.free)):
            free, locked = self.account.free.get(a, Decimal(0)), self.account.locked.get(a, Decimal(0))
            rows.append({"coin": a, "depositAllEnable": True, "withdrawAllEnable": True, "name": a,
                         "free": f"{free:.8f}", "locked": f"{locked:.8f}", "freeze": "0", "withdrawing": "0",
                         "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": False, "trading": True,
                         "networkList": []})
        return json.dumps(rows)

    def _margin_rows(self, with_id: bool) -> list[dict[str, Any]]:
        rows = []
        for i, r in enumerate(self.exchange.rules.values()):
            if not r.raw.get("isMarginTradingAllowed"):
                continue
            row: dict[str, Any] = {"symbol": r.symbol, "base": r.base, "quote": r.quote, "isMarginTrade": True,
                                   "isBuyAllowed": True, "isSellAllowed": True}
            if with_id:
                row["id"] = 351637150141315861 + i
            rows.append(row)
        return rows

    def _h_margin_pairs(self, params: dict[str, str]) -> str:
        return json.dumps(self._margin_rows(True))

    def _h_isolated_pairs(self, params: dict[str, str]) -> str:
        return json.dumps(self._margin_rows(False))
