"""The loopback Binance spot REST server: routes, signing, weights and faults around the state.

Two clocks, on purpose:
- *market time* ``now_ms`` (virtual, moved by ``set_time``/``advance``): which candles have
  closed, the 24 h ticker window, the book, order/trade timestamps, resting-order fills;
- *server time* = wall clock + ``faults.clock_skew_ms``: ``/api/v3/time``, exchangeInfo
  ``serverTime``, the signed-request timestamp/recvWindow check and the weight windows.
  ccxt signs with the wall clock, so the server clock must be the wall clock for
  recvWindow checks (and a gateway's time-offset correction) to mean anything.

Endpoints: see ``ROUTES`` (weights are Binance's current spot weights). Derived data, since
the recordings have candles only: ticker/24hr comes from the hourly candles that closed in the
last 24 h of market time (quoteVolume = sum(close x volume); lastQty, count: 0; firstId/lastId:
-1), bid/ask from the synthetic book (``book.py``). Unlike Binance, klines never include the
still-open candle. Intervals 3d/1w/1M are not served (-1120). The sapi endpoints that ccxt's
``load_markets`` calls with keys set are answered from the served assets (capital config with
an empty networkList; margin pairs = exchangeInfo's isMarginTradingAllowed symbols).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl

import numpy as np
from aiohttp import web

from tests.support.emulator.book import Book, BookMaker
from tests.support.emulator.candles import INTERVAL_MS, CandleBook
from tests.support.emulator.faults import Faults, SapiMeter, WeightMeter
from tests.support.emulator.matching import Account, EmuOrder, EmuTrade, mandatory
from tests.support.emulator.rules import ApiError, ExchangeRules, SymbolRules, load_exchange_info

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_CLIENT_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    wall_ms: int
    method: str
    path: str
    symbol: str | None
    status: int
    weight: int
    used_weight_1m: int
    fault: str | None


@dataclass(frozen=True, slots=True)
class Route:
    handler: str
    weight: Callable[[dict[str, str]], int]
    signed: bool = False
    sapi: bool = False
    mutating: bool = False
    per_symbol: bool = False


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
    ("POST", "/api/v3/order"): Route("new_order", _const(1), signed=True, mutating=True),
    ("POST", "/api/v3/order/test"): Route("test_order", _const(1), signed=True),
    ("GET", "/api/v3/order"): Route("query_order", _const(4), signed=True),
    ("DELETE", "/api/v3/order"): Route("cancel_order", _const(1), signed=True, mutating=True),
    ("GET", "/api/v3/openOrders"): Route("open_orders", _by_symbol(6, 80), signed=True),
    ("DELETE", "/api/v3/openOrders"): Route("cancel_open_orders", _const(1), signed=True, mutating=True),
    ("GET", "/api/v3/allOrders"): Route("all_orders", _const(20), signed=True),
    ("GET", "/api/v3/myTrades"): Route("my_trades", _const(20), signed=True),
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


def _strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if not part.startswith("signature="))


class Emulator:
    """Binance spot over loopback HTTP, on recorded candles and a virtual market clock."""

    def __init__(self, ohlcv_dir: Path, exchange_info: Path, start_ms: int, *, api_key: str = "emu-key-0001",
                 api_secret: str = "emu-secret-0001", balances: dict[str, str] | None = None,
                 weight_limit: int = 6000, seed: int = 0, state_file: Path | None = None,
                 partial_fill_ratio: float = 1.0, fee_rate: str = "0.001") -> None:
        self.candles = CandleBook(Path(ohlcv_dir))
        self.exchange = ExchangeRules(load_exchange_info(Path(exchange_info)), self.candles.symbols, weight_limit)
        self.symbols = sorted(self.exchange.rules)
        self.api_key = api_key
        self.api_secret = api_secret
        self._secret = api_secret.encode()
        self.seed = seed
        self.faults = Faults()
        self.meter = WeightMeter(weight_limit)
        self.sapi_meter = SapiMeter()
        self.requests: deque[RequestRecord] = deque(maxlen=200_000)  # copy with request_log() while serving
        self._log_lock = threading.Lock()
        self.url: str | None = None
        self.busy_s = 0.0  # time spent inside request handlers (the emulator's own CPU cost)
        self._books = BookMaker(seed)
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._now = int(start_ms)
        self._order_times: deque[int] = deque()
        self._ticker_cache: tuple[int, dict[str, str]] = (-1, {})
        self._qv_cache: dict[tuple[str, int], float] = {}
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        initial = {"USDT": "10000"} if balances is None else balances
        self.account = Account({a: Decimal(str(v)) for a, v in initial.items()}, Decimal(fee_rate),
                               partial_fill_ratio)
        self.state_file = Path(state_file) if state_file is not None else None
        if self.state_file is not None and self.state_file.exists() and self.state_file.stat().st_size:
            data = json.loads(self.state_file.read_text())
            self.account.load_dict(data["account"])
            self._now = max(self._now, int(data["now_ms"]))

    # -- clock ----------------------------------------------------------------------------
    @property
    def now_ms(self) -> int:
        return self._now

    def set_time(self, ms: int) -> None:
        """Move market time to ``ms`` (never backwards); resting orders fill on the candles passed."""
        ms = int(ms)
        with self._lock:
            if ms < self._now:
                raise ValueError(f"market time never goes backwards ({ms} < {self._now})")
            self._now = ms
            self.account.match_resting(self.exchange.rules, self, ms)
            self._save()

    def advance(self, ms: int) -> None:
        self.set_time(self._now + int(ms))

    def server_ms(self) -> int:
        return int(time.time() * 1000) + int(self.faults.clock_skew_ms)

    # -- inspectable state ----------------------------------------------------------------
    @property
    def balances(self) -> dict[str, Decimal]:
        """Total (free + locked) per asset."""
        with self._lock:
            return self.account.totals()

    @property
    def free(self) -> dict[str, Decimal]:
        with self._lock:
            return dict(self.account.free)

    @property
    def locked(self) -> dict[str, Decimal]:
        with self._lock:
            return dict(self.account.locked)

    @property
    def orders(self) -> dict[str, EmuOrder]:
        """Latest order per client order id."""
        with self._lock:
            return dict(self.account.by_client)

    @property
    def order_list(self) -> list[EmuOrder]:
        """Every order ever accepted, in placement order."""
        with self._lock:
            return list(self.account.orders)

    @property
    def trades(self) -> list[EmuTrade]:
        with self._lock:
            return list(self.account.trades)

    @property
    def weight_used(self) -> int:
        return self.meter.current(self.server_ms())

    @property
    def max_weight_1m(self) -> int:
        return self.meter.max_used

    def request_log(self) -> list[RequestRecord]:
        """A copy of the request log (safe while the server thread appends to it)."""
        with self._log_lock:
            return list(self.requests)

    def request_count(self, path: str | None = None) -> int:
        return sum(1 for r in self.request_log() if path is None or r.path == path)

    # -- market view (used by the matching engine) ----------------------------------------
    def _hourly_quote_volume(self, symbol: str, ref_ts: int) -> float:
        key = (symbol, ref_ts)
        qv = self._qv_cache.get(key)
        if qv is None:
            s = self.candles.series(symbol, HOUR_MS)
            if s is None or len(s) == 0:
                qv = 0.0
            else:
                hi = s.closed_count(ref_ts + HOUR_MS)
                lo = s.index_at(ref_ts + HOUR_MS - DAY_MS)
                x = s.ohlcv[lo:hi]
                qv = float(np.dot(x[:, 3], x[:, 4])) / 24.0 if len(x) else 0.0
            if len(self._qv_cache) > 50_000:
                self._qv_cache.clear()
            self._qv_cache[key] = qv
        return qv

    def book(self, symbol: str) -> Book | None:
        """The synthetic book at market time (None before the symbol's first candle)."""
        with self._lock:
            last = self.candles.last_close(symbol, self._now)
            if last is None:
                return None
            ref_ts, close = last
            r = self.exchange.rules[symbol]
            return self._books.book(symbol, ref_ts, close, self._hourly_quote_volume(symbol, ref_ts), r.tick,
                                    r.step, r.min_qty)

    def avg_price(self, symbol: str) -> Decimal | None:
        last = self.candles.last_close(symbol, self._now)
        return None if last is None else Decimal(repr(last[1]))

    def candles_between(self, symbol: str, start_ms: int, now_ms: int) -> Iterator[tuple[int, int, float, float, float]]:
        s = self.candles.price_series(symbol)
        if s is None:
            return
        hi = s.closed_count(now_ms)
        for i in range(s.index_at(start_ms), hi):
            o, h, low, c, v = s.ohlcv[i]
            yield int(s.ts[i]), s.tf_ms, float(low), float(h), float(v)

    # -- persistence ----------------------------------------------------------------------
    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"now_ms": self._now, "account": self.account.to_dict()}))
        os.replace(tmp, self.state_file)

    # -- server lifecycle -----------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        log.info("emulator listening on %s (market time %d)", self.url, self._now)
        return self.url

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hang(self, seconds: float) -> None:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    # -- request pipeline -----------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        raw_qs = request.raw_path.partition("?")[2]
        raw_body = await request.text() if request.can_read_body else ""
        params = dict(parse_qsl(raw_body, keep_blank_values=True))
        params.update(parse_qsl(raw_qs, keep_blank_values=True))
        symbol = params.get("symbol") or None
        route = ROUTES.get((method, path))
        wall = self.server_ms()
        faults = self.faults
        meter = self.sapi_meter if route is not None and route.sapi else self.meter

        def record(status: int, fault: str | None, weight: int) -> int:
            used = meter.current(wall)
            with self._log_lock:
                self.requests.append(RequestRecord(wall, method, path, symbol, status, weight, used, fault))
            return used

        def reply(status: int, body: str, fault: str | None = None, weight: int = 0,
                  headers: dict[str, str] | None = None, content_type: str = "application/json") -> web.Response:
            used = record(status, fault, weight)
            h = {"X-SAPI-USED-IP-WEIGHT-1M": str(used)} if meter is self.sapi_meter else {
                "X-MBX-USED-WEIGHT": str(used), "X-MBX-USED-WEIGHT-1M": str(used)}
            if headers:
                h.update(headers)
            return web.Response(status=status, text=body, content_type=content_type, headers=h)

        if route is None:
            return reply(404, "<html><body><h1>404 Not Found</h1></body></html>", content_type="text/html")
        if faults.ban_418 or self.meter.banned(wall):
            until = self.meter.banned_until if self.meter.banned(wall) else wall + faults.retry_after_s * 1000
            retry = str(max(1, -(-(until - wall) // 1000)))
            msg = (f"Way too much request weight used; IP banned until {until}. "
                   "Please use WebSocket Streams for live updates to avoid bans.")
            return reply(418, json.dumps({"code": -1003, "msg": msg}), "418", headers={"Retry-After": retry})
        if faults.latency_s > 0:
            await asyncio.sleep(faults.latency_s)
        fault = faults.draw(self._rng) if faults.applies_to(symbol) else None
        after = route.mutating and fault in ("5xx", "timeout", "reset") and self._rng.random() < faults.after_rate
        weight = route.weight(params)
        meter.add(weight, wall)
        if not route.sapi and self.meter.over_limit():
            if self.meter.note_limited(wall):
                log.warning("emulator: client kept going after 429, banned for %d s", self.meter.ban_s)
            return reply(429, self._too_much_weight(), "weight", weight,
                         {"Retry-After": str(self.meter.window_retry_after_s(wall))})
        if fault == "429":
            return reply(429, self._too_much_weight(), fault, weight,
                         {"Retry-After": str(faults.retry_after_s)})
        if fault in ("5xx", "timeout", "reset") and not after:
            return await self._fault_reply(request, fault, reply, record, weight)
        try:
            if route.signed:
                self._authenticate(request, raw_qs, raw_body, params)
            with self._lock:
                t0 = time.perf_counter()
                status, body = 200, getattr(self, "_h_" + route.handler)(params)
                self.busy_s += time.perf_counter() - t0
        except ApiError as err:
            status, body = err.status, err.body()
        if after:
            return await self._fault_reply(request, fault, reply, record, weight)
        if fault == "malformed" and status == 200:
            cut = self._rng.randint(1, max(1, len(body) - 1))
            return reply(200, body[:cut], fault, weight)
        extra = None
        if route.handler == "new_order":
            extra = self._order_count_headers(wall)
        return reply(status, body, None, weight, extra)

    def _too_much_weight(self) -> str:
        msg = (f"Too much request weight used; current limit is {self.meter.limit} request weight per 1 MINUTE. "
               "Please use WebSocket Streams for live updates to avoid polling the API.")
        return json.dumps({"code": -1003, "msg": msg})

    async def _fault_reply(self, request: web.Request, fault: str | None, reply: Callable[..., web.Response],
                           record: Callable[[int, str | None, int], int], weight: int) -> web.StreamResponse:
        if fault == "timeout":  # logged now: the client usually gives up (and disconnects) first
            late = reply(504, "<html><body><h1>504 Gateway Time-out</h1></body></html>", fault, weight,
                         content_type="text/html")
            await self._hang(self.faults.hang_s)
            return late
        if fault == "reset":
            record(0, fault, weight)  # status 0: no HTTP reply at all
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            raise asyncio.CancelledError()
        status = self._rng.choice((500, 502, 503, 504))
        if status == 500:
            return reply(500, json.dumps({"code": -1000, "msg": "An unknown error occurred while processing the "
                                                                 "request."}), fault, weight)
        if status == 503:
            return reply(503, json.dumps({"code": -1001, "msg": "Internal error; unable to process your request. "
                                                                 "Please try again."}), fault, weight)
        text = "502 Bad Gateway" if status == 502 else "504 Gateway Time-out"
        return reply(status, f"<html><body><h1>{text}</h1></body></html>", fault, weight, content_type="text/html")

    def _order_count_headers(self, wall: int) -> dict[str, str]:
        times = self._order_times
        times.append(wall)
        while times and times[0] <= wall - DAY_MS:
            times.popleft()
        recent = sum(1 for t in times if t > wall - 10_000)
        return {"X-MBX-ORDER-COUNT-10S": str(recent), "X-MBX-ORDER-COUNT-1D": str(len(times))}

    def _authenticate(self, request: web.Request, raw_qs: str, raw_body: str, params: dict[str, str]) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        ts = _int_param(params, "timestamp")
        if ts is None:
            raise mandatory("timestamp")
        recv_window = _int_param(params, "recvWindow", 5000)
        assert recv_window is not None
        if recv_window > 60_000:
            raise ApiError(-1131, "recvWindow must be less than 60000")
        signature = params.get("signature")
        if not signature:
            raise mandatory("signature")
        payload = _strip_signature(raw_qs) + _strip_signature(raw_body)
        expected = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")
        server = self.server_ms()
        if ts >= server + 1000:
            raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - ts > recv_window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")

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

    def _h_new_order(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        cid = self._client_id(params, "newClientOrderId")
        kind = params.get("newOrderRespType", "FULL").upper()
        if kind not in ("ACK", "RESULT", "FULL"):
            raise ApiError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        order, trades = self.account.place(rules, self, params, self._now, cid)
        self._save()
        log.debug("emulator order %s %s %s %s -> %s", cid, order.side, order.type, order.symbol, order.status)
        return json.dumps(order.to_api(kind.lower(), trades))

    def _h_test_order(self, params: dict[str, str]) -> str:
        import copy

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

    def _cancel_reply(self, order: EmuOrder, params: dict[str, str]) -> dict[str, Any]:
        out = order.to_api("result")
        out["origClientOrderId"] = order.client_id
        out["clientOrderId"] = self._client_id(params, "newClientOrderId")
        out["transactTime"] = self._now
        for k in ("workingTime", "origQuoteOrderQty"):
            out.pop(k, None)
        return out

    def _h_cancel_order(self, params: dict[str, str]) -> str:
        rules, order = self._lookup(params)
        self.account.cancel(rules, order, self._now)
        self._save()
        return json.dumps(self._cancel_reply(order, params))  # type: ignore[arg-type]

    def _h_cancel_open_orders(self, params: dict[str, str]) -> str:
        rules = self._rules(params)
        open_ = self.account.open_orders(rules.symbol)
        if not open_:
            raise ApiError(-2011, "Unknown order sent.")
        out = []
        for order in open_:
            self.account.cancel(rules, order, self._now)
            out.append(self._cancel_reply(order, {}))
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
