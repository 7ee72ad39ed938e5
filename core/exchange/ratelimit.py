"""Being a polite API client: request-weight budget, 429/418 pauses, backoff, circuit breakers.

Binance meters REST use in *request weight* per minute (6000 on spot) and answers with 429
(`Retry-After`) when it is exceeded, then 418 (an IP ban of minutes to days) if the client
keeps going. We never want to get there: every request reserves its weight against a budget
(``exchange.weight_budget_pct`` of the limit) before it is sent, and the server's own count
(``X-MBX-USED-WEIGHT-1M``) corrects our estimate whenever a reply carries it.

Each unit takes its clocks and ``sleep`` as arguments so tests drive them without waiting.
ccxt-specific error translation lives in ``core/exchange/ccxt_errors.py``; this module only sees
``core.exchange.gateway`` errors.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from core.exchange.activity import NETWORK, NetworkWaits
from core.exchange.gateway import GatewayError, RateLimited, TemporaryError

log = logging.getLogger(__name__)
T = TypeVar("T")

BINANCE_SPOT_WEIGHT_LIMIT = 6000  # REQUEST_WEIGHT per minute (exchangeInfo rateLimits, 2023+)

# Endpoint families, each with its own circuit breaker: a broken order endpoint must not stop
# market data, and a market-data outage must not hide that orders still work.
MARKET, ORDERS, ACCOUNT = "market", "orders", "account"


def binance_weight(endpoint: str, *, limit: int | None = None, symbol: bool = False,
                   symbols: int | None = None) -> int:
    """Request weight of a Binance spot REST endpoint (``endpoint`` as in ``GET /api/v3/<endpoint>``).

    From the Binance spot API docs (2023+ weights). Used before sending, when no header tells us yet.
    """
    if endpoint == "depth":
        n = limit or 100
        return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250
    if endpoint == "ticker/24hr":
        if symbol:
            return 2
        if symbols is not None:
            return 2 if symbols <= 20 else 40 if symbols <= 100 else 80
        return 80
    if endpoint == "ticker/bookTicker":
        return 2 if symbol else 4
    if endpoint == "openOrders":
        return 6 if symbol else 80
    return _FIXED_WEIGHTS.get(endpoint, 1)


_FIXED_WEIGHTS = {
    "ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2, "account": 20,
    "order:POST": 1, "order:DELETE": 1, "order:GET": 4, "myTrades": 20, "capital/config/getall": 10,
}


class WeightBudget:
    """Request weight used in the last minute vs. our share of the exchange's limit.

    Our own estimate is a sliding 60 s window of the weight we reserved, which is never below
    what a fixed calendar-minute counter (Binance's) can show for the same requests. When a
    reply carries the server's counter, we trust it for the rest of that wall-clock minute,
    plus whatever we sent after it: other processes on the same IP spend the same limit.
    """

    MINUTE_GRACE_S = 1.0  # trust the server's count a little past our minute: clocks differ

    def __init__(self, limit: int = BINANCE_SPOT_WEIGHT_LIMIT, pct: float = 0.5, *, window_s: float = 60.0,
                 max_pause_wait_s: float = 10.0, now: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not 0 < pct <= 1:
            raise ValueError("pct must be in (0, 1]")
        self.limit = int(limit)
        self.pct = pct
        self.window_s = window_s
        self.max_pause_wait_s = max_pause_wait_s
        self._now, self._wall, self._sleep = now, wall, sleep
        self._sent: deque[tuple[float, int]] = deque()
        self._local = 0
        self._total_sent = 0
        self._server: tuple[int, int, int] | None = None  # (minute, used, total_sent it covers)
        self.inflight = 0  # weight of requests sent and not answered yet
        self.paused_until = 0.0
        self.banned = False
        self.max_used = 0  # highest estimate right after a reservation
        self.max_server_used = 0  # highest counter the server reported
        self.waits = 0  # times a request had to wait for room in the budget
        self.requests = 0

    @property
    def budget(self) -> int:
        return max(1, int(self.limit * self.pct))

    def set_limit(self, limit: int) -> None:
        """The exchange announced its limit (exchangeInfo ``rateLimits``)."""
        if limit > 0 and limit != self.limit:
            log.info("exchange request-weight limit is %d/min; our budget is %d", limit, int(limit * self.pct))
            self.limit = int(limit)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._sent and self._sent[0][0] <= cutoff:
            self._local -= self._sent.popleft()[1]

    def _server_part(self) -> int:
        if self._server is None:
            return 0
        minute, used, at_total = self._server
        if int((self._wall() - self.MINUTE_GRACE_S) // 60) > minute:
            self._server = None
            return 0
        return used + (self._total_sent - at_total)

    def used(self) -> int:
        """Best estimate of the weight counted against us right now."""
        self._prune(self._now())
        return max(self._local, self._server_part())

    def observe(self, used: int) -> None:
        """A reply said ``X-MBX-USED-WEIGHT-1M: used``."""
        if used < 0:
            return
        minute = int(self._wall() // 60)
        self.max_server_used = max(self.max_server_used, used)
        cur = self._server
        # Replies can arrive out of order; within one minute the server's counter only grows.
        if cur is None or cur[0] != minute or used >= cur[1]:
            # Requests still in flight may not have reached the server's counter yet: count them
            # on top (this reply's own weight twice, at worst: an over-estimate, never an under-).
            self._server = (minute, used, self._total_sent - self.inflight)

    def pause(self, seconds: float, banned: bool = False) -> None:
        """Stop sending for ``seconds`` (429 Retry-After, or a 418 ban: ``banned``).

        Logged once per event: the 429s of requests that were already in flight extend the
        pause silently, and a ban is announced once, with its end."""
        now = self._now()
        until = now + max(0.0, seconds)
        if until <= self.paused_until and (self.banned or not banned):
            return
        new_event = self.paused_until <= now or (banned and not self.banned)
        self.paused_until = max(until, self.paused_until)
        self.banned = self.banned or banned
        left = self.paused_until - now
        if not new_event:
            log.debug("exchange pause extended: %.0f s left", left)
        elif self.banned:
            end = time.strftime("%H:%M:%S UTC", time.gmtime(self._wall() + left))
            log.warning("exchange banned this IP (418) until %s: no requests for %.0f s", end, left)
        else:
            log.warning("exchange rate limit hit (429): no requests for %.0f s", left)

    def pause_remaining(self) -> float:
        left = self.paused_until - self._now()
        if left <= 0:
            if self.banned:
                log.info("exchange ban over: requests resume")
            self.banned = False
            return 0.0
        return left

    def _wait_for_room(self, weight: int) -> float:
        now = self._now()
        need_local = self._local + weight - self.budget
        wait = 0.0
        if need_local > 0:
            freed = 0
            for t, w in self._sent:
                freed += w
                if freed >= need_local:
                    wait = t + self.window_s - now
                    break
        if self._server_part() + weight > self.budget:
            wait = max(wait, 60.0 - (self._wall() - self.MINUTE_GRACE_S) % 60.0)
        return max(wait, 0.01)

    def release(self, weight: int) -> None:
        """The request reserved with ``acquire(weight)`` got its answer (or failed)."""
        self.inflight = max(0, self.inflight - max(0, int(weight)))

    async def acquire(self, weight: int) -> None:
        """Reserve ``weight``; waits while the budget is spent. Raises ``RateLimited`` during a
        ban, or a 429 pause longer than ``max_pause_wait_s`` (the caller skips, not hangs).
        Call ``release(weight)`` once the request is answered."""
        weight = max(0, int(weight))
        while True:
            left = self.pause_remaining()
            if left > 0:
                if self.banned or left > self.max_pause_wait_s:
                    raise RateLimited(f"exchange rate limit: no requests for another {left:.0f} s"
                                      + (" (IP banned, 418)" if self.banned else ""), left, self.banned, local=True)
                await self._sleep(left)
                continue
            used = self.used()
            if used + weight <= self.budget or used == 0:
                now = self._now()
                self._sent.append((now, weight))
                self._local += weight
                self._total_sent += weight
                self.inflight += weight
                self.requests += 1
                self.max_used = max(self.max_used, used + weight)
                return
            self.waits += 1
            wait = self._wait_for_room(weight)
            log.debug("weight budget spent (%d of %d used): waiting %.2f s", used, self.budget, wait)
            await self._sleep(wait)


@dataclass
class Backoff:
    """Exponential backoff with jitter: attempt n waits uniformly in [d/2, d], d = min(cap, base * 2^n).

    The jitter keeps many failed requests from coming back in lockstep.
    """

    base_s: float = 0.2
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        d = min(self.cap_s, self.base_s * (2 ** max(0, attempt)))
        return self.rng.uniform(d / 2, d)


class CircuitOpen(TemporaryError):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CircuitBreaker:
    """Fails fast while an endpoint family keeps failing, then lets one probe through.

    Opens on the *share* of failed attempts among the last ``window`` (not a run of
    consecutive failures): a handful of pairs with bad data must not cut off the healthy
    ones, while a real outage is recognised within ``min_calls`` attempts. Each re-open after
    a failed probe doubles the cool-down, up to ``max_cooldown_s``.
    """

    def __init__(self, name: str, *, window: int = 20, min_calls: int = 8, failure_ratio: float = 0.6,
                 cooldown_s: float = 5.0, max_cooldown_s: float = 120.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.window, self.min_calls, self.failure_ratio = window, min_calls, failure_ratio
        self.base_cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self._now = now
        self._results: deque[bool] = deque(maxlen=window)
        self.state = "closed"
        self.open_until = 0.0
        self._cooldown = cooldown_s
        self._probe_out = False
        self.opened = 0  # how many times it opened (for reports)

    def before_call(self) -> None:
        if self.state == "closed":
            return
        now = self._now()
        if self.state == "open":
            if now < self.open_until:
                raise CircuitOpen(f"{self.name} requests paused for {self.open_until - now:.1f} s after repeated "
                                  f"failures", self.open_until - now)
            self.state = "half_open"
            self._probe_out = False
        if self._probe_out:  # half open: exactly one probe at a time
            raise CircuitOpen(f"{self.name} requests paused while a probe request runs", self._cooldown)
        self._probe_out = True

    def record(self, ok: bool) -> None:
        if self.state == "half_open":
            self._probe_out = False
            if ok:
                log.info("%s requests work again: circuit closed", self.name)
                self.state, self._cooldown = "closed", self.base_cooldown_s
                self._results.clear()
            else:
                self._cooldown = min(self.max_cooldown_s, self._cooldown * 2)
                self._open()
            return
        if self.state == "open":
            return  # a straggler from before the breaker opened
        self._results.append(ok)
        fails = self._results.count(False)
        if len(self._results) >= self.min_calls and fails >= self.failure_ratio * len(self._results):
            self._open()

    def release(self) -> None:
        """The call ended without an answer either way (cancelled): let another probe run."""
        self._probe_out = False

    def _open(self) -> None:
        self.state = "open"
        self.open_until = self._now() + self._cooldown
        self.opened += 1
        self._results.clear()
        log.warning("%s requests keep failing: pausing them for %.0f s (circuit open)", self.name, self._cooldown)


class RequestGuard:
    """Runs one exchange request with everything around it: circuit breaker, bounded
    concurrency, weight reservation, a timeout, hedging, and retries with backoff for
    temporary errors.

    ``call`` must raise ``core.exchange.gateway`` errors (the gateway translates its client's exceptions).
    ``retries=0`` for requests that must not be repeated blindly (order placement).

    Hedging (``hedge=True``, for idempotent reads, when ``hedge_min_s`` is set): a request with
    no reply after a few times the recent median latency (between ``hedge_min_s`` and
    ``hedge_max_s``) gets a twin, and another after as long again; the first answer wins and the
    others are cancelled. A hung
    connection then costs one extra request instead of a concurrency slot for the whole
    timeout: with 10 % of requests hanging, the hung ones held all slots at once and their
    simultaneous timeouts opened the circuit breaker for every pair (issue 15).
    """

    HEDGE_FACTOR = 4.0  # hedge after this many median latencies
    HEDGE_SAMPLES = 8  # latencies needed before the median is trusted (until then: hedge_max_s)
    MAX_HEDGES = 2  # twins per request at most: all three hang with 10 % hung requests: 1 in 1000

    def __init__(self, budget: WeightBudget, *, concurrency: int = 8, timeout_s: float = 10.0, retries: int = 2,
                 backoff: Backoff | None = None, breaker: Callable[[str], CircuitBreaker] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, hedge_min_s: float | None = None,
                 hedge_max_s: float | None = None, network: NetworkWaits = NETWORK) -> None:
        self.budget = budget
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._make_breaker = breaker or (lambda name: CircuitBreaker(name))
        self.breakers: dict[str, CircuitBreaker] = {}
        self._sleep = sleep
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self.hedge_min_s = hedge_min_s
        self.hedge_max_s = max(hedge_min_s or 0.0, hedge_max_s if hedge_max_s is not None else timeout_s / 2)
        self._latencies: deque[float] = deque(maxlen=64)
        self.network = network  # what the watchdog sees of our waits
        self.retried = 0
        self.failures = 0
        self.hedged = 0  # twins sent
        self.hedge_wins = 0  # twins that answered first

    def breaker(self, family: str) -> CircuitBreaker:
        if family not in self.breakers:
            self.breakers[family] = self._make_breaker(family)
        return self.breakers[family]

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    def hedge_delay(self) -> float:
        """Seconds without a reply after which a read gets its twin."""
        assert self.hedge_min_s is not None
        if len(self._latencies) < self.HEDGE_SAMPLES:
            return self.hedge_max_s
        median = sorted(self._latencies)[len(self._latencies) // 2]
        return min(self.hedge_max_s, max(self.hedge_min_s, self.HEDGE_FACTOR * median))

    async def _once(self, call: Callable[[], Awaitable[T]], weight: int, what: str,
                    sent: asyncio.Event | None = None) -> T:
        self.network.begin()  # waiting for room in the budget is waiting on the exchange too (bounded)
        try:
            await self.budget.acquire(weight)
            if sent is not None:
                sent.set()
            t0 = time.monotonic()
            try:
                result = await asyncio.wait_for(call(), self.timeout_s)
            except asyncio.TimeoutError:
                raise TemporaryError(f"{what}: no reply within {self.timeout_s:g} s") from None
            finally:
                self.budget.release(weight)
        finally:
            self.network.end()
        self._latencies.append(time.monotonic() - t0)
        return result

    async def _hedged(self, call: Callable[[], Awaitable[T]], weight: int, what: str) -> T:
        """The first answer of the request and, while none comes, up to ``MAX_HEDGES`` twins, one
        per hedge delay. A result or a definite refusal ends the race; a temporary error waits
        for the others."""
        sent = asyncio.Event()
        tasks = [asyncio.ensure_future(self._once(call, weight, what, sent))]
        pending: set[asyncio.Future] = set(tasks)
        error: BaseException | None = None
        try:
            # the clock starts when it is sent: waiting out a pause or the budget is no slow reply
            on_its_way = asyncio.ensure_future(sent.wait())
            try:
                await asyncio.wait([tasks[0], on_its_way], return_when=asyncio.FIRST_COMPLETED)
            finally:
                on_its_way.cancel()
            while pending:
                can_hedge = len(tasks) <= self.MAX_HEDGES
                delay = self.hedge_delay() if can_hedge else None
                done, pending = await asyncio.wait(pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = t.exception()
                    if exc is None or not getattr(exc, "retryable", False):
                        if exc is None and t is not tasks[0]:
                            self.hedge_wins += 1
                        return t.result()
                    error = error or exc
                if not done and can_hedge:
                    self.hedged += 1
                    log.debug("%s: no reply after %.2f s: sending it again", what, delay)
                    twin = asyncio.ensure_future(self._once(call, weight, what))
                    tasks.append(twin)
                    pending.add(twin)
            raise error  # type: ignore[misc]  # all failed temporarily
        finally:
            for t in tasks:
                t.cancel()  # the losers (a no-op for what is done); their weight is released as they end
            await asyncio.gather(*tasks, return_exceptions=True)  # also retrieves the losers' errors

    async def run(self, family: str, weight: int, call: Callable[[], Awaitable[T]], *, what: str = "request",
                  retries: int | None = None, hedge: bool = False) -> T:
        retries = self.retries if retries is None else retries
        hedge = hedge and self.hedge_min_s is not None
        breaker = self.breaker(family)
        attempt = 0
        while True:
            breaker.before_call()
            try:
                async with self._semaphore():
                    if hedge:
                        result = await self._hedged(call, weight, what)
                    else:
                        result = await self._once(call, weight, what)
            except RateLimited as exc:
                breaker.release()  # says nothing about the endpoint's health
                if not exc.local:  # refused locally: the pause is known and was announced
                    self.budget.pause(exc.retry_after_s, exc.banned)
                if exc.banned or attempt >= retries or exc.retry_after_s > self.budget.max_pause_wait_s:
                    raise
                attempt += 1
                self.retried += 1
                continue  # acquire() sits the pause out
            except CircuitOpen:
                raise
            except TemporaryError as exc:
                breaker.record(False)
                self.failures += 1
                if attempt >= retries:
                    raise
                delay = self.backoff.delay(attempt)
                attempt += 1
                self.retried += 1
                log.debug("%s failed (%s); retry %d in %.2f s", what, exc, attempt, delay)
                await self._sleep(delay)
                continue
            except GatewayError:
                breaker.record(True)  # a definite answer (rejection, unknown order): the service works
                raise
            except BaseException:  # cancelled, or a bug: free the probe slot, count nothing
                breaker.release()
                raise
            breaker.record(True)
            return result
