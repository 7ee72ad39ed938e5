"""The live exchange: ``ExchangeGateway`` over ``ccxt.async_support`` (Binance spot by default).

One ccxt client (one HTTP session) per gateway. ccxt's own rate limiter is off: it serialises
requests (126 candle requests take ~2.7 s instead of ~0.6 s at 80 ms RTT); ``core.exchange.ratelimit``
keeps us inside a request-weight budget instead, with bounded concurrency, timeouts, retries
and per-family circuit breakers.

Nothing ccxt returns is trusted: a 200 with a truncated body can come back as rows of
``None`` or an order without an id. Every reply is checked and converted to ``core.models``
here; anything odd becomes a ``TemporaryError`` (retried, then the pair is skipped), never a
half-valid object. Error messages are built by us and never carry keys, signatures or
query strings.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import re
import time
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import numpy as np

from core.exchange.ccxt_lean import async_support

ccxt_async = async_support()  # before the imports below: they would load all ~100 exchanges
from ccxt.base import errors as cx  # noqa: E402
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE  # noqa: E402

from core.clock import Clock
from core.config import Config, ConfigError
from core.secrets import Secrets
from core.exchange.gateway import AuthenticationFailed, GatewayError, OrderRejected, RateLimited, TemporaryError
from core.timeframes import timeframe_ms
from core.models import Fill, Market, Order, OrderBook, OrderStatus, Ticker
from core.exchange.ratelimit import (ACCOUNT, BINANCE_SPOT_WEIGHT_LIMIT, MARKET, ORDERS, Backoff, CircuitOpen,
                            RequestGuard, WeightBudget, binance_weight)

log = logging.getLogger(__name__)

# What the transport saw for the request running in this task (ccxt's last_response_headers is
# one shared attribute, useless with concurrent requests).
_REPLY: contextvars.ContextVar[dict | None] = contextvars.ContextVar("pitrader_reply", default=None)

_BINANCE_ERROR = re.compile(r'"code"\s*:\s*(-?\d+)\s*,\s*"msg"\s*:\s*"([^"]{0,160})')
_RATE_LIMITS = re.compile(r'"rateLimits"\s*:\s*(\[[^\]]*\])')
_STATUS = {  # Binance order status (info.status) first, ccxt's unified status as the fallback
    "NEW": OrderStatus.SUBMITTED, "PENDING_NEW": OrderStatus.SUBMITTED,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED, "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELLED, "PENDING_CANCEL": OrderStatus.SUBMITTED,
    "REJECTED": OrderStatus.REJECTED, "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
    "open": OrderStatus.SUBMITTED, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED, "expired": OrderStatus.EXPIRED,
}


class OrderNotFound(GatewayError):
    """The exchange does not know the order (by our client id)."""


class _Malformed(TemporaryError):
    pass


# --- construction -------------------------------------------------------------------------------

def _rewrite_urls(api: Any, base: str) -> Any:
    """Point every REST endpoint at ``base`` (scheme + host [+ prefix]), keeping each path."""
    if isinstance(api, str):
        return base.rstrip("/") + urlsplit(api).path
    if isinstance(api, dict):
        return {k: _rewrite_urls(v, base) for k, v in api.items()}
    return api


def build_exchange(cfg: Config, secrets: Secrets):
    """The configured ccxt client: own rate limiting, spot markets only, api_url / sandbox applied."""
    x = cfg.exchange
    klass = getattr(ccxt_async, x.id, None)
    if not isinstance(klass, type) or x.id not in ccxt_async.exchanges:
        raise ConfigError(cfg.source, "exchange.id", f"expected a ccxt exchange id such as \"binance\", got {x.id!r}")
    options: dict[str, Any] = {
        # Binance with keys: load_markets would also call signed sapi endpoints (coin config, margin
        # pairs), costing weight and failing on keys without those permissions; spot needs neither.
        "fetchCurrencies": False,
        "fetchMargins": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }
    if x.id == "binance" or x.api_url:
        options["fetchMarkets"] = {"types": ["spot"]}  # exchangeInfo only: no futures/options listings
    params: dict[str, Any] = {"enableRateLimit": False, "timeout": int(x.timeout_s * 1000), "options": options}
    if secrets.has_keys:
        params["apiKey"], params["secret"] = secrets.api_key, secrets.api_secret
    ex = klass(params)
    ex.enableLastHttpResponse = False  # would keep the last body (MBs of exchangeInfo) alive
    ex.enableLastResponseHeaders = False
    ex.enableLastJsonResponse = False  # likewise the last parsed reply (markets: ~MBs)
    if x.testnet or secrets.testnet:
        try:
            ex.set_sandbox_mode(True)
        except cx.NotSupported:
            raise ConfigError(cfg.source, "exchange.testnet", f"expected false: ccxt has no sandbox for {x.id}") from None
    if x.api_url:
        ex.urls["api"] = _rewrite_urls(ex.urls["api"], x.api_url)
    return ex


# --- conversions (ccxt structures -> core.models), each one validating ---------------------------

def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _dec(v: Any) -> Decimal | None:
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
    d = _dec(v)
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
    last = _num(t.get("last"))
    if last is None:
        last = _num(t.get("close"))
    if last is None or last <= 0:
        return None
    bid, ask = _num(t.get("bid")), _num(t.get("ask"))
    if bid is not None and bid <= 0:
        bid = None
    if ask is not None and ask <= 0:
        ask = None
    if bid is not None and ask is not None and bid > ask:  # a crossed quote is not a real market
        bid = ask = None
    qv = _num(t.get("quoteVolume"))
    ts = _num(t.get("timestamp"))
    return Ticker(symbol=t["symbol"], ts_ms=int(ts) if ts and ts > 0 else now_ms, last=last, bid=bid, ask=ask,
                  high=_num(t.get("high")), low=_num(t.get("low")),
                  quote_volume=qv if qv is not None and qv >= 0 else None)


def to_ohlcv(rows: Any, tf_ms: int, server_now_ms: int, what: str) -> np.ndarray:
    """ccxt OHLCV rows -> float64 (n, 6), closed candles only; raises on anything odd."""
    if not isinstance(rows, list):
        raise _Malformed(f"{what}: malformed reply (expected a list of candles)")
    if not rows:
        return np.empty((0, 6))
    try:
        arr = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise _Malformed(f"{what}: malformed reply (non-numeric candle fields)") from None
    if arr.ndim != 2 or arr.shape[1] < 6:
        raise _Malformed(f"{what}: malformed reply (candles of shape {arr.shape})")
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
        raise _Malformed(f"{what}: malformed candles ({problem})")
    return np.ascontiguousarray(arr[ts + tf_ms <= server_now_ms])


def to_order_book(raw: Any, symbol: str, now_ms: int) -> OrderBook:
    if not isinstance(raw, dict):
        raise _Malformed(f"order book {symbol}: malformed reply")

    def side(levels: Any, descending: bool) -> tuple[tuple[float, float], ...]:
        if not isinstance(levels, list):
            raise _Malformed(f"order book {symbol}: malformed levels")
        out = []
        for lvl in levels:
            p = _num(lvl[0]) if isinstance(lvl, (list, tuple)) and len(lvl) >= 2 else None
            a = _num(lvl[1]) if p is not None else None
            if p is None or a is None or p <= 0 or a <= 0:
                raise _Malformed(f"order book {symbol}: malformed level {str(lvl)[:40]}")
            out.append((p, a))
        prices = [p for p, _ in out]
        if any((x <= y) if descending else (x >= y) for x, y in zip(prices, prices[1:])):
            raise _Malformed(f"order book {symbol}: levels out of order")
        return tuple(out)

    bids, asks = side(raw.get("bids"), True), side(raw.get("asks"), False)
    if bids and asks and bids[0][0] >= asks[0][0]:
        raise _Malformed(f"order book {symbol}: crossed (best bid {bids[0][0]} >= best ask {asks[0][0]})")
    ts = _num(raw.get("timestamp"))
    return OrderBook(symbol, int(ts) if ts and ts > 0 else now_ms, bids, asks)


def _status(raw: dict) -> OrderStatus | None:
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    return _STATUS.get(str(info.get("status"))) or _STATUS.get(str(raw.get("status")))


def to_order(raw: Any, template: Order | None, now_ms: int) -> Order:
    """A ccxt order -> Order. ``template`` is our order (create/cancel/fetch); None for an order we
    only learn about from the exchange (open orders), whose intent we cannot know."""
    if not isinstance(raw, dict):
        raise _Malformed("order: malformed reply")
    exid = raw.get("id")
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    cid = info.get("origClientOrderId") or raw.get("clientOrderId")  # a cancel reply names the cancel's own id
    if exid in (None, ""):
        raise _Malformed("order: reply without an exchange order id")
    if template is not None and cid not in (None, "") and cid != template.client_id:
        raise _Malformed(f"order {template.client_id}: reply is for another order ({str(cid)[:40]})")
    status = _status(raw)
    if status is None:
        raise _Malformed(f"order {cid or exid}: unknown status {str(raw.get('status'))[:20]}")
    filled = _dec(raw.get("filled"))
    filled = Decimal(0) if filled is None else filled
    average = _positive(raw.get("average"))
    ts = _num(raw.get("lastUpdateTimestamp")) or _num(raw.get("timestamp")) or now_ms
    if template is None:
        symbol, side, otype = raw.get("symbol"), raw.get("side"), raw.get("type")
        amount, price = _positive(raw.get("amount")), _positive(raw.get("price"))
        if not (isinstance(symbol, str) and side in ("buy", "sell") and isinstance(otype, str) and amount
                and isinstance(cid, str) and cid):
            raise _Malformed(f"order {exid}: incomplete reply")
        base = Order(client_id=cid, symbol=symbol, side=side, type=otype.lower(), amount=amount,
                     price=price, intent="unknown", created_ms=int(_num(raw.get("timestamp")) or now_ms))
    else:
        base = template
        if raw.get("symbol") not in (None, template.symbol):
            raise _Malformed(f"order {template.client_id}: reply is for {str(raw.get('symbol'))[:20]}")
    if filled < 0 or filled > base.amount:
        raise _Malformed(f"order {base.client_id}: filled {filled} outside 0..{base.amount}")
    if status == OrderStatus.SUBMITTED and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    if status == OrderStatus.FILLED and filled == 0:
        raise _Malformed(f"order {base.client_id}: reported filled with nothing executed")
    return replace(base, exchange_id=str(exid), status=status, filled=filled,
                   average=average if filled > 0 else None, updated_ms=int(ts))


def to_fill(t: Any) -> Fill:
    if not isinstance(t, dict):
        raise _Malformed("trade: malformed reply")
    tid, symbol, side = t.get("id"), t.get("symbol"), t.get("side")
    amount, price, ts = _positive(t.get("amount")), _positive(t.get("price")), _num(t.get("timestamp"))
    if tid in (None, "") or not isinstance(symbol, str) or side not in ("buy", "sell") or not amount or not price \
            or not ts:
        raise _Malformed(f"trade {str(tid)[:20]}: incomplete reply")
    fee = t.get("fee") if isinstance(t.get("fee"), dict) else {}
    cost = _dec(fee.get("cost"))
    currency = fee.get("currency") if isinstance(fee.get("currency"), str) and fee.get("currency") else None
    if cost is not None and cost > 0 and currency is None:
        # the ledger cannot value a fee of unknown asset; fetched again on the next poll
        raise _Malformed(f"trade {str(tid)[:20]}: fee {cost} without its asset")
    order = t.get("order")
    return Fill(trade_id=str(tid), ts_ms=int(ts), symbol=symbol, side=side, quantity=amount, price=price,
                fee=cost if cost is not None and cost >= 0 else Decimal(0), fee_asset=currency,
                order_id=str(order) if order not in (None, "") else None)


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    name = name.lower()
    for k, v in headers.items():
        if isinstance(k, str) and k.lower() == name:
            return str(v)
    return None


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
        self.guard = guard or RequestGuard(self.budget, concurrency=x.max_concurrency, timeout_s=x.timeout_s + 2,
                                           retries=2, backoff=Backoff())
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

    # --- plumbing ---------------------------------------------------------------------------

    def _on_rest_response(self, code, reason, url, method, headers, body, request_headers, request_body):
        meta = _REPLY.get()
        if meta is not None:
            meta["status"] = code
            retry_after = _header(headers, "Retry-After")
            if retry_after is not None:
                try:
                    meta["retry_after"] = max(0.0, float(retry_after))
                except ValueError:
                    pass
            date = _header(headers, "Date")
            if date:
                try:
                    meta["server_ms"] = int(parsedate_to_datetime(date).timestamp() * 1000)
                except (TypeError, ValueError, IndexError):
                    pass
        used = _header(headers, "X-MBX-USED-WEIGHT-1M")
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
                    raise _Malformed(f"{meta.get('what', 'request')}: malformed reply (invalid JSON from the "
                                     "exchange)")
            return parsed

        return parse_json

    def _learn_limit(self, body: str) -> None:
        m = _RATE_LIMITS.search(body[:20_000])
        if not m:
            return
        try:
            for rl in json.loads(m.group(1)):
                if rl.get("rateLimitType") == "REQUEST_WEIGHT" and rl.get("interval") == "MINUTE" \
                        and rl.get("intervalNum") == 1 and int(rl.get("limit", 0)) > 0:
                    self.budget.set_limit(int(rl["limit"]))
        except (ValueError, TypeError, AttributeError):
            pass

    def _clean(self, text: str) -> str:
        """An exchange/ccxt message made safe to log: no query strings, no secrets, short."""
        m = _BINANCE_ERROR.search(text)
        if m:
            text = f"code {m.group(1)}: {m.group(2)}"
        else:
            text = re.sub(r"\?\S*", "", text)
        for s in self._secrets:
            text = text.replace(s, "***")
        return text[:200]

    def _translate(self, exc: BaseException, meta: dict, what: str, rejects: bool) -> GatewayError:
        status = meta.get("status")
        if isinstance(exc, (cx.DDoSProtection, cx.RateLimitExceeded)) or status in (418, 429):
            banned = status == 418
            retry = meta.get("retry_after", 120.0 if banned else 10.0)
            why = "the exchange banned this IP for too many requests (HTTP 418)" if banned else \
                f"the exchange says too many requests (HTTP {status or 429})"
            return RateLimited(f"{what}: {why}; retry after {retry:.0f} s", retry, banned)
        if isinstance(exc, cx.AuthenticationError):
            return AuthenticationFailed(
                f"{what}: the exchange refused the API key or signature ({self._clean(str(exc))}); check "
                "BINANCE_API_KEY / BINANCE_API_SECRET, the key's IP whitelist and permissions")
        if isinstance(status, int) and status >= 500:
            return TemporaryError(f"{what}: exchange error (HTTP {status})")
        if isinstance(exc, cx.InvalidNonce):
            return TemporaryError(f"{what}: the exchange rejected our timestamp even after re-syncing the clock "
                                  f"({self._clean(str(exc))}); check the system clock (timedatectl)")
        if isinstance(exc, cx.OrderNotFound):
            return OrderNotFound(f"{what}: unknown order")
        if isinstance(exc, (cx.InsufficientFunds, cx.InvalidOrder)):
            return OrderRejected(f"{what}: rejected by the exchange ({self._clean(str(exc))})")
        if isinstance(exc, cx.RequestTimeout):
            return TemporaryError(f"{what}: timed out")
        if isinstance(exc, (cx.NetworkError, cx.OperationFailed)):
            return TemporaryError(f"{what}: exchange unreachable or failing ({type(exc).__name__})")
        if isinstance(exc, cx.BaseError):
            msg = f"{what}: refused by the exchange ({self._clean(str(exc))})"
            return OrderRejected(msg) if rejects else GatewayError(msg)
        if isinstance(exc, (TypeError, KeyError, ValueError, AttributeError, IndexError, ArithmeticError)):
            return _Malformed(f"{what}: malformed reply ({type(exc).__name__})")
        raise exc

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
                    retries: int | None = None, rejects: bool = False) -> Any:
        """One request through the guard; ``fn(meta)`` does the ccxt call and the conversion."""

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

        return await self.guard.run(family, weight, attempt, what=what, retries=retries)

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
                    raise _Malformed("load markets: malformed reply")
                mode = ex.precisionMode
                out = {}
                for m in raw.values():
                    mk = to_market(m, mode)
                    if mk is not None:
                        out[mk.symbol] = mk
                if not out:
                    raise _Malformed("load markets: the exchange listed no spot markets")
                return out

            try:
                markets = await self._call(MARKET, binance_weight("exchangeInfo"), "load markets", fetch)
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
                raise _Malformed("tickers: malformed reply")
            now = self.clock.now_ms()
            out = {}
            for t in raw.values():
                tk = to_ticker(t, now)
                if tk is not None and (symbols is None or tk.symbol in symbols):
                    out[tk.symbol] = tk
            if raw and not out:
                raise _Malformed("tickers: no usable row in the reply")
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
            server = _num(await self.exchange.fetch_time())
            t1 = self.clock.now_ms()
            if server is None or server <= 0:
                raise _Malformed("server time: malformed reply")
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
                raise _Malformed("balance: malformed reply")
            out = {}
            for asset, v in free.items():
                d = _dec(v)
                if d is None:
                    continue
                if d < 0:
                    raise _Malformed(f"balance: negative free {asset}")
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
            return await self._call(ORDERS, binance_weight("order:POST"), what, send, retries=0, rejects=True)
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
            return await self._call(ORDERS, binance_weight("order:DELETE"), what, send)
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
                raise _Malformed("open orders: malformed reply")
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
                    raise _Malformed("trades: malformed reply")
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
