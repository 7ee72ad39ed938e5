"""The live exchange: ``ExchangeGateway`` over ``ccxt.async_support`` (Binance spot by default).

One ccxt client (one HTTP session) per gateway. ccxt's own rate limiter is off: it serialises
requests (126 candle requests take ~2.7 s instead of ~0.6 s at 80 ms RTT); ``core.exchange.ratelimit``
keeps us inside a request-weight budget instead, with bounded concurrency, timeouts, hedged
reads, retries and per-family circuit breakers.

This module is the transport: building the client, per-request reply metadata (status,
Retry-After, Date, used weight), clock re-sync, and one method per protocol call. Replies are
converted and validated in ``core.exchange.ccxt_convert``; ccxt exceptions become gateway errors
in ``core.exchange.ccxt_errors`` (messages never carry keys, signatures or query strings).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable

import numpy as np

from core.exchange.ccxt_client import build_exchange, ccxt_async, cx  # noqa: F401 - first: loads ccxt lean

from core.clock import Clock  # noqa: E402
from core.config import Config  # noqa: E402
from core.exchange.ccxt_convert import (exact_decimal, finite_float, header, to_fill, to_market,  # noqa: E402
                                        to_ohlcv, to_order, to_order_book, to_ticker, weight_limit)
from core.exchange.ccxt_errors import MalformedReply, OrderNotFound, clean_message, translate  # noqa: E402
from core.exchange.gateway import AuthenticationFailed, GatewayError, OrderRejected, RateLimited, TemporaryError  # noqa: E402
from core.exchange.ratelimit import (ACCOUNT, BINANCE_SPOT_WEIGHT_LIMIT, MARKET, ORDERS, Backoff,  # noqa: E402
                                     CircuitOpen, RequestGuard, WeightBudget, binance_weight)
from core.models import Fill, Market, Order, OrderBook, Ticker  # noqa: E402
from core.secrets import Secrets  # noqa: E402
from core.timeframes import timeframe_ms  # noqa: E402

log = logging.getLogger(__name__)

# What the transport saw for the request running in this task (ccxt's last_response_headers is
# one shared attribute, useless with concurrent requests).
_REPLY: contextvars.ContextVar[dict | None] = contextvars.ContextVar("pitrader_reply", default=None)

HEDGE_MIN_S = 0.5  # never hedge a read sooner: a duplicate costs weight
# Keys that once worked and are then refused on every signed request, at least KEY_REFUSALS times
# over KEY_REFUSED_S: revoked, IP whitelist changed (a short block of a valid key passes sooner).
KEY_REFUSALS = 3
KEY_REFUSED_S = 300

# --- the gateway ------------------------------------------------------------------------------

class CcxtGateway:
    """``ExchangeGateway`` over ccxt. See the module docstring for the request policy.

    Orders are addressed by *our* client id (``newClientOrderId`` on create,
    ``origClientOrderId`` on fetch/cancel), which the executor generates and persists before
    sending. That is what makes ambiguous failures recoverable: a 5xx, a reset or a timeout
    on ``create_order`` does NOT prove the order was not placed. ``create_order`` never
    retries; on such a failure it looks the order up once by client id and returns it if the
    exchange has it, else raises ``TemporaryError`` saying the outcome is unknown. The
    executor must then look the order up by client id (``fetch_order``) before deciding
    anything; core/trading/live.py keeps asking, and only once the exchange has not seen the order 30 s
    after its creation (Binance's recvWindow would refuse that request now) does it mark it
    expired and send the next attempt under a NEW client id: one id never reaches the exchange twice.
    """

    def __init__(self, cfg: Config, secrets: Secrets, clock: Clock, *, exchange: Any = None,
                 guard: RequestGuard | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.exchange = exchange if exchange is not None else build_exchange(cfg, secrets)
        self.has_keys = secrets.has_keys
        self._secrets = tuple(v for v in (secrets.api_key, secrets.api_secret) if v)
        x = cfg.exchange
        self.budget = guard.budget if guard else WeightBudget(BINANCE_SPOT_WEIGHT_LIMIT, x.weight_budget_pct,
                                                              max_pause_wait_s=x.timeout_s)
        # ccxt's aiohttp timeout fires first; wait_for is the backstop for anything that hangs around it
        # reads without a reply after a few median latencies get a twin (at most a quarter of the timeout)
        self.guard = guard or RequestGuard(self.budget, concurrency=x.max_concurrency, timeout_s=x.timeout_s + 2,
                                           retries=2, backoff=Backoff(), hedge_min_s=HEDGE_MIN_S,
                                           hedge_max_s=x.timeout_s / 4)
        self.exchange.on_rest_response = self._on_rest_response
        self.exchange.parse_json = self._guard_json(self.exchange.parse_json)
        self._raw_klines = getattr(self.exchange, "id", None) == "binance" and hasattr(self.exchange, "publicGetKlines")
        self._markets: dict[str, Market] = {}
        self._markets_ms: int | None = None
        self._markets_lock: asyncio.Lock | None = None
        self._resync_lock: asyncio.Lock | None = None
        self._resynced_at = -math.inf
        self.last_used_weight: int | None = None  # X-MBX-USED-WEIGHT-1M of the latest reply
        self.time_offset_ms: int | None = None  # server - local, from the last time sync
        self._key_accepted = False  # a signed request has succeeded with these keys
        self._key_refusals: list[int] = []  # when the signed requests refused in a row were (clock ms)
        # Set when the exchange refuses the keys before they ever worked, or again and again
        # after (KEY_REFUSALS, KEY_REFUSED_S): a configuration error the engine stops on (exit 78),
        # not an outage to retry forever.
        self.credentials_refused: AuthenticationFailed | None = None

    # --- plumbing ---------------------------------------------------------------------------

    def _on_rest_response(self, code, reason, url, method, headers, body, request_headers, request_body):
        meta = _REPLY.get()
        if meta is not None:
            meta["status"] = code
            retry_after = header(headers, "Retry-After")
            if retry_after is not None:
                try:
                    meta["retry_after"] = max(0.0, float(retry_after))
                except ValueError:
                    pass
            date = header(headers, "Date")
            if date:
                try:
                    meta["server_ms"] = int(parsedate_to_datetime(date).timestamp() * 1000)
                except (TypeError, ValueError, IndexError):
                    pass
        used = header(headers, "X-MBX-USED-WEIGHT-1M")
        if used is not None and used.strip().isdigit():
            self.last_used_weight = int(used)
            self.budget.observe(int(used))
        if code == 200 and isinstance(url, str) and "exchangeInfo" in url and isinstance(body, str):
            self._learn_limit(body)
        return body

    @staticmethod
    def _guard_json(parse: Callable[[str], Any]) -> Callable[[str], Any]:
        """ccxt hands a 2xx body that is not valid JSON (a truncated reply) on as a *string*, which
        its parsers turn into empty books, balances or order lists. Refuse it right here."""

        def parse_json(http_response: str) -> Any:
            parsed = parse(http_response)
            if parsed is None and http_response:
                meta = _REPLY.get()
                if meta is not None and 200 <= (meta.get("status") or 0) < 300:
                    raise MalformedReply(f"{meta.get('what', 'request')}: malformed reply (invalid JSON from the "
                                     "exchange)")
            return parsed

        return parse_json

    def _learn_limit(self, body: str) -> None:
        limit = weight_limit(body)
        if limit is not None:
            self.budget.set_limit(limit)

    def _clean(self, text: str) -> str:
        """An exchange/ccxt message made safe to log (see ``ccxt_errors.clean_message``)."""
        return clean_message(text, self._secrets)

    def _translate(self, exc: BaseException, meta: dict, what: str, rejects: bool) -> GatewayError:
        return translate(exc, what, status=meta.get("status"), retry_after=meta.get("retry_after"),
                         rejects=rejects, secrets=self._secrets)

    async def _resync_clock(self) -> None:
        """-1021: our timestamp is outside recvWindow. Measure the offset, let ccxt apply it."""
        if self._resync_lock is None:
            self._resync_lock = asyncio.Lock()
        async with self._resync_lock:
            if time.monotonic() - self._resynced_at < 5:
                return  # another request just did it
            ex = self.exchange
            ex.options["adjustForTimeDifference"] = True  # also re-measured on every markets reload
            await self.budget.acquire(binance_weight("time"))
            try:
                diff = await ex.load_time_difference()
            finally:
                self.budget.release(binance_weight("time"))
            self.time_offset_ms = -int(diff or 0)
            self._resynced_at = time.monotonic()
            log.warning("exchange clock differs from ours by %+d ms: re-synced (signed requests use the "
                        "exchange's time from now on)", self.time_offset_ms)

    async def _call(self, family: str, weight: int, what: str, fn: Callable[[dict], Awaitable[Any]], *,
                    retries: int | None = None, rejects: bool = False, hedge: bool = True) -> Any:
        """One request through the guard; ``fn(meta)`` does the ccxt call and the conversion.
        ``hedge=False`` for what must not be sent twice (order placement, cancels) or is too big."""

        async def attempt() -> Any:
            meta: dict = {"what": what}
            token = _REPLY.set(meta)
            try:
                try:
                    return await fn(meta)
                except cx.InvalidNonce:
                    try:
                        await self._resync_clock()
                    except Exception as exc:  # noqa: BLE001 - reported as the original problem
                        raise self._translate(exc, meta, f"{what} (clock re-sync)", False) from None
                    meta.clear()
                    meta["what"] = what
                    return await fn(meta)
            except GatewayError:
                raise
            except Exception as exc:  # noqa: BLE001 - every client failure becomes a gateway error
                raise self._translate(exc, meta, what, rejects) from None
            finally:
                _REPLY.reset(token)

        try:
            result = await self.guard.run(family, weight, attempt, what=what, retries=retries, hedge=hedge)
        except AuthenticationFailed as exc:
            refused = self._key_refusals
            refused.append(self.clock.now_ms())
            if not self._key_accepted or (len(refused) >= KEY_REFUSALS
                                          and refused[-1] - refused[0] >= KEY_REFUSED_S * 1000):
                self.credentials_refused = exc
            raise
        if family != MARKET:  # a signed request went through: the keys work
            self._key_accepted = True
            self._key_refusals.clear()
        return result

    def _server_now(self, meta: dict) -> int:
        """The exchange's 'now' for this reply: its Date header, else our clock corrected by the
        last measured offset. Decides which candles are closed."""
        if "server_ms" in meta:
            return int(meta["server_ms"])
        return self.clock.now_ms() + (self.time_offset_ms or 0)

    async def _market(self, symbol: str) -> Market:
        markets = await self.load_markets()
        m = markets.get(symbol)
        if m is None:
            raise GatewayError(f"{symbol} is not listed on {self.cfg.exchange.id}")
        return m

    # --- public data --------------------------------------------------------------------------

    async def load_markets(self, reload: bool = False) -> dict[str, Market]:
        """Spot markets, loaded once and refreshed every ``exchange.markets_refresh_s``. A failed
        scheduled refresh keeps the markets we have (retried a minute later); a failed first
        load or explicit ``reload`` raises."""
        refresh_ms = self.cfg.exchange.markets_refresh_s * 1000
        if not reload and self._fresh(refresh_ms):
            return dict(self._markets)
        if self._markets_lock is None:
            self._markets_lock = asyncio.Lock()
        async with self._markets_lock:
            if not reload and self._fresh(refresh_ms):
                return dict(self._markets)
            ex = self.exchange
            if self.has_keys and not self._markets:
                ex.options["adjustForTimeDifference"] = True  # signed calls start with the exchange's time

            async def fetch(meta: dict) -> dict[str, Market]:
                raw = await ex.load_markets(reload=bool(self._markets) or reload)
                if not isinstance(raw, dict):
                    raise MalformedReply("load markets: malformed reply")
                mode = ex.precisionMode
                out = {}
                for m in raw.values():
                    mk = to_market(m, mode)
                    if mk is not None:
                        out[mk.symbol] = mk
                if not out:
                    raise MalformedReply("load markets: the exchange listed no spot markets")
                return out

            try:
                markets = await self._call(MARKET, binance_weight("exchangeInfo"), "load markets", fetch,
                                           hedge=False)  # MBs to download and parse: never twice
            except GatewayError as exc:
                if self._markets and not reload:
                    log.warning("markets refresh failed (%s); keeping the markets loaded before", exc)
                    self._markets_ms = self.clock.now_ms() - refresh_ms + 60_000
                    return dict(self._markets)
                raise
            if "timeDifference" in ex.options and ex.options.get("adjustForTimeDifference"):
                self.time_offset_ms = -int(ex.options.get("timeDifference") or 0)
            self._markets, self._markets_ms = markets, self.clock.now_ms()
            log.info("loaded %d spot markets from %s", len(markets), self.cfg.exchange.id)
            return dict(self._markets)

    def _fresh(self, refresh_ms: int) -> bool:
        return bool(self._markets) and self._markets_ms is not None \
            and self.clock.now_ms() - self._markets_ms < refresh_ms

    async def fetch_tickers(self, symbols: list[str] | None = None) -> dict[str, Ticker]:
        """24 h tickers (one request); rows without a usable price are left out."""
        await self.load_markets()
        weight = binance_weight("ticker/24hr", symbols=len(symbols) if symbols else None)

        async def fetch(meta: dict) -> dict[str, Ticker]:
            raw = await self.exchange.fetch_tickers(symbols)
            if not isinstance(raw, dict):
                raise MalformedReply("tickers: malformed reply")
            now = self.clock.now_ms()
            out = {}
            for t in raw.values():
                tk = to_ticker(t, now)
                if tk is not None and (symbols is None or tk.symbol in symbols):
                    out[tk.symbol] = tk
            if raw and not out:
                raise MalformedReply("tickers: no usable row in the reply")
            return out

        return await self._call(MARKET, weight, "tickers", fetch)

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int | None = None,
                          limit: int | None = None) -> np.ndarray:
        """Closed candles only (an exchange's still-open last candle is dropped)."""
        await self._market(symbol)
        tf_ms = timeframe_ms(timeframe)
        what = f"candles {symbol} {timeframe}"

        async def fetch(meta: dict) -> np.ndarray:
            ex = self.exchange
            if self._raw_klines:
                # Binance spot: ccxt's per-row parser costs ~10 ms per 1000 candles in Python; the raw
                # rows ([open time, "o", "h", "l", "c", "v", close time, ...]) convert in one numpy call.
                request = {"symbol": ex.market(symbol)["id"], "interval": ex.timeframes.get(timeframe, timeframe),
                           "limit": min(limit or 500, 1000)}
                if since_ms is not None:
                    request["startTime"] = int(since_ms)
                rows = await ex.publicGetKlines(request)
            else:
                rows = await ex.fetch_ohlcv(symbol, timeframe, since_ms, limit)
            return to_ohlcv(rows, tf_ms, self._server_now(meta), what)

        return await self._call(MARKET, binance_weight("klines"), what, fetch)

    async def fetch_order_book(self, symbol: str, limit: int = 20) -> OrderBook:
        await self._market(symbol)

        async def fetch(meta: dict) -> OrderBook:
            raw = await self.exchange.fetch_order_book(symbol, limit)
            return to_order_book(raw, symbol, self.clock.now_ms())

        return await self._call(MARKET, binance_weight("depth", limit=limit), f"order book {symbol}", fetch)

    async def fetch_time(self) -> int:
        """The exchange's clock (epoch ms); also updates ``time_offset_ms`` (server - local, RTT-centred)."""
        async def fetch(meta: dict) -> int:
            t0 = self.clock.now_ms()
            server = finite_float(await self.exchange.fetch_time())
            t1 = self.clock.now_ms()
            if server is None or server <= 0:
                raise MalformedReply("server time: malformed reply")
            self.time_offset_ms = int(server - (t0 + t1) / 2)
            return int(server)

        return await self._call(MARKET, binance_weight("time"), "server time", fetch)

    # --- account and orders -------------------------------------------------------------------

    async def fetch_balance(self) -> dict[str, Decimal]:
        """Free balance per asset; assets with nothing free are left out."""
        await self.load_markets()

        async def fetch(meta: dict) -> dict[str, Decimal]:
            raw = await self.exchange.fetch_balance()
            free = raw.get("free") if isinstance(raw, dict) else None
            if not isinstance(free, dict):
                raise MalformedReply("balance: malformed reply")
            out = {}
            for asset, v in free.items():
                d = exact_decimal(v)
                if d is None:
                    continue
                if d < 0:
                    raise MalformedReply(f"balance: negative free {asset}")
                if d > 0:
                    out[str(asset)] = d
            return out

        return await self._call(ACCOUNT, binance_weight("account"), "balance", fetch)

    def _conform_check(self, order: Order) -> None:
        """Refuse to send what the exchange would reject for precision (core.trading.rules conforms first)."""
        ex = self.exchange
        try:
            amt = Decimal(ex.amount_to_precision(order.symbol, float(order.amount)))
            if amt != order.amount:
                raise OrderRejected(f"order {order.client_id}: amount {order.amount} is not a multiple of the "
                                    f"{order.symbol} lot step (conform it with core.trading.rules first)")
            if order.price is not None and order.type == "limit":
                px = Decimal(ex.price_to_precision(order.symbol, float(order.price)))
                if px != order.price:
                    raise OrderRejected(f"order {order.client_id}: price {order.price} is not a multiple of the "
                                        f"{order.symbol} tick size (conform it with core.trading.rules first)")
        except cx.BaseError as exc:
            raise OrderRejected(f"order {order.client_id}: {self._clean(str(exc))}") from None

    async def create_order(self, order: Order) -> Order:
        """Send ``order`` under its client id; returns the exchange's view of it.

        Raises ``OrderRejected`` (definitely not placed: never resend as is), ``RateLimited``
        (refused before processing), or ``TemporaryError`` when the outcome is UNKNOWN (5xx,
        timeout, reset, odd reply): look the order up by client id (``fetch_order``) before
        anything else (see the class docstring).
        """
        await self._market(order.symbol)
        self._conform_check(order)
        price = float(order.price) if order.type == "limit" and order.price is not None else None
        what = f"create order {order.client_id}"

        async def send(meta: dict) -> Order:
            raw = await self.exchange.create_order(order.symbol, order.type, order.side, float(order.amount), price,
                                                   {"newClientOrderId": order.client_id})
            return to_order(raw, order, self.clock.now_ms())

        try:
            return await self._call(ORDERS, binance_weight("order:POST"), what, send, retries=0, rejects=True,
                                    hedge=False)
        except (RateLimited, CircuitOpen):
            raise  # refused before it reached the matching engine
        except TemporaryError as exc:
            log.warning("%s: outcome unknown (%s); looking it up by client id", what, exc)
            try:
                found = await self.fetch_order(order)
            except GatewayError as lookup_exc:
                found = None
                log.warning("%s: lookup failed too (%s)", what, lookup_exc)
            if found is not None:
                log.info("%s: the exchange has it (status %s)", what, found.status.value)
                return found
            raise TemporaryError(f"{what}: outcome unknown ({exc}); the order may still appear: look it up by "
                                 f"client id before sending it again") from None

    async def cancel_order(self, order: Order) -> Order:
        """Cancel by client id. An order the exchange no longer has open (filled meanwhile, already
        cancelled) is looked up and returned in its real final state."""
        await self._market(order.symbol)
        what = f"cancel order {order.client_id}"

        async def send(meta: dict) -> Order:
            raw = await self.exchange.cancel_order(None, order.symbol, {"origClientOrderId": order.client_id})
            return to_order(raw, order, self.clock.now_ms())

        try:
            return await self._call(ORDERS, binance_weight("order:DELETE"), what, send, hedge=False)
        except OrderNotFound:
            found = await self.fetch_order(order)
            if found is None:
                raise OrderNotFound(f"{what}: the exchange does not know this order") from None
            return found

    async def fetch_order(self, order: Order) -> Order | None:
        """Look an order up by our client id; None if the exchange never saw it."""
        await self._market(order.symbol)

        async def fetch(meta: dict) -> Order:
            raw = await self.exchange.fetch_order(None, order.symbol, {"origClientOrderId": order.client_id})
            return to_order(raw, order, self.clock.now_ms())

        try:
            return await self._call(ORDERS, binance_weight("order:GET"), f"fetch order {order.client_id}", fetch)
        except OrderNotFound:
            return None

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (ours and any placed by hand: ``intent`` is "unknown" for all of them)."""
        await self.load_markets()

        async def fetch(meta: dict) -> list[Order]:
            raw = await self.exchange.fetch_open_orders(symbol)
            if not isinstance(raw, list):
                raise MalformedReply("open orders: malformed reply")
            now = self.clock.now_ms()
            return [to_order(o, None, now) for o in raw]

        return await self._call(ORDERS, binance_weight("openOrders", symbol=symbol is not None),
                                "open orders", fetch)

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[Fill]:
        """Our executions on ``symbol`` since ``since_ms``, oldest first, paged through.
        ``Fill.order_id`` is the *exchange's* order id here (trades do not carry client ids):
        match it against ``Order.exchange_id``."""
        await self._market(symbol)
        out: dict[str, Fill] = {}
        since = since_ms
        for _ in range(20):
            async def fetch(meta: dict, since=since) -> list[Fill]:
                raw = await self.exchange.fetch_my_trades(symbol, since, 1000)
                if not isinstance(raw, list):
                    raise MalformedReply("trades: malformed reply")
                return [to_fill(t) for t in raw]

            page = await self._call(ORDERS, binance_weight("myTrades"), f"trades {symbol}", fetch)
            new = [f for f in page if f.trade_id not in out]
            for f in page:
                out[f.trade_id] = f
            if len(page) < 1000 or not new:
                break
            since = max(f.ts_ms for f in page)
        return sorted(out.values(), key=lambda f: (f.ts_ms, f.trade_id))

    async def close(self) -> None:
        await self.exchange.close()


def make_gateway(cfg: Config, secrets: Secrets, clock: Clock) -> CcxtGateway:
    """The live gateway for ``cfg`` (what ``scan`` and ``run`` use without ``--replay``)."""
    return CcxtGateway(cfg, secrets, clock)
