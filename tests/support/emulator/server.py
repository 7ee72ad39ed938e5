"""The loopback Binance spot REST server: routes, signing, weights and faults around the state.

Two clocks, on purpose:
- *market time* ``now_ms`` (virtual, moved by ``set_time``/``advance``): which candles have
  closed, the 24 h ticker window, the book, order/trade timestamps, resting-order fills;
- *server time* = wall clock + ``faults.clock_skew_ms``: ``/api/v3/time``, exchangeInfo
  ``serverTime``, the signed-request timestamp/recvWindow check and the weight windows.
  ccxt signs with the wall clock, so the server clock must be the wall clock for
  recvWindow checks (and a gateway's time-offset correction) to mean anything.

Endpoints and weights: ``handlers.ROUTES``. Derived data, since
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
from typing import Callable, Iterator
from urllib.parse import parse_qsl

import numpy as np
from aiohttp import web

from tests.support.emulator.book import Book, BookMaker
from tests.support.emulator.candles import CandleBook
from tests.support.emulator.faults import Faults, SapiMeter, WeightMeter
from tests.support.emulator.handlers import DAY_MS, HOUR_MS, ROUTES, EndpointHandlers, _int_param
from tests.support.emulator.list_handlers import ListHandlers
from tests.support.emulator.matching import Account, EmuOrder, EmuTrade, mandatory
from tests.support.emulator.orderlist import OrderList
from tests.support.emulator.rules import ApiError, ExchangeRules, load_exchange_info

log = logging.getLogger(__name__)


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


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if not part.startswith("signature="))


class Emulator(EndpointHandlers, ListHandlers):
    """Binance spot over loopback HTTP, on recorded candles and a virtual market clock."""

    def __init__(self, ohlcv_dir: Path, exchange_info: Path, start_ms: int, *, api_key: str = "emu-key-0001",
                 api_secret: str = "emu-secret-0001", balances: dict[str, str] | None = None,
                 weight_limit: int = 6000, seed: int = 0, state_file: Path | None = None,
                 partial_fill_ratio: float = 1.0, fee_rate: str = "0.001", realtime: bool = False) -> None:
        # realtime: the candle at start_ms is served as if it were today (shifted by whole days) and
        # market time then follows the wall clock, so a client on a real clock (`pitrader scan
        # --once` via exchange.api_url) sees fresh data. Otherwise market time moves only when told.
        self.realtime = realtime
        shift = (_wall_ms() - int(start_ms)) // DAY_MS * DAY_MS if realtime else 0
        self.candles = CandleBook(Path(ohlcv_dir), shift)
        start_ms = int(start_ms) + shift
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
        self.internal_errors: list[str] = []  # handler crashes (emulator bugs); tests should assert it stays empty
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

    @property
    def _now(self) -> int:
        return max(self._market_ms, _wall_ms()) if self.realtime else self._market_ms

    @_now.setter
    def _now(self, ms: int) -> None:
        self._market_ms = ms

    def set_time(self, ms: int) -> None:
        """Move market time to ``ms`` (never backwards); open orders fill/trigger on the candles passed."""
        ms = int(ms)
        with self._lock:
            if ms < self._now:
                raise ValueError(f"market time never goes backwards ({ms} < {self._now})")
            self._now = ms
            self.account.match_resting(self.exchange.rules, self, ms)
            self._save()

    def advance(self, ms: int) -> None:
        self.set_time(self._now + int(ms))

    def reseed(self, seed: int) -> None:
        """Restart the fault/id RNG: the fault sequence depends on every request drawn before it."""
        self._rng.seed(seed)

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
    def order_lists(self) -> list[OrderList]:
        """Every order list (OCO) ever placed; index == orderListId."""
        with self._lock:
            return list(self.account.lists)

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

    def book_at(self, symbol: str, ts: int, price: Decimal) -> Book:
        """A book centred on ``price`` during the candle opened at ``ts``: where a stop order executes."""
        r = self.exchange.rules[symbol]
        return self._books.book(symbol, ts, float(price), self._hourly_quote_volume(symbol, ts), r.tick, r.step,
                                r.min_qty)

    def avg_price(self, symbol: str) -> Decimal | None:
        last = self.candles.last_close(symbol, self._now)
        return None if last is None else Decimal(repr(last[1]))

    def candle_rows(self, symbol: str, start_ms: int,
                    now_ms: int) -> Iterator[tuple[int, int, float, float, float, float, float]]:
        s = self.candles.price_series(symbol)
        if s is None:
            return
        hi = s.closed_count(now_ms)
        for i in range(s.index_at(start_ms), hi):
            o, h, low, c, v = s.ohlcv[i]
            yield int(s.ts[i]), s.tf_ms, float(o), float(h), float(low), float(c), float(v)

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
        except Exception as exc:  # an emulator bug: loud in the log and in internal_errors, 500 on the wire
            log.exception("emulator bug while handling %s %s", method, path)
            self.internal_errors.append(f"{method} {path}: {exc!r}")
            status, body = 500, json.dumps({"code": -1000, "msg": "emulator internal error"})
        if after:
            return await self._fault_reply(request, fault, reply, record, weight)
        if fault == "malformed" and status == 200:
            cut = self._rng.randint(1, max(1, len(body) - 1))
            return reply(200, body[:cut], fault, weight)
        extra = None
        if route.order_count:
            extra = self._order_count_headers(wall, route.order_count)
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

    def _order_count_headers(self, wall: int, count: int = 1) -> dict[str, str]:
        times = self._order_times
        times.extend([wall] * count)
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
