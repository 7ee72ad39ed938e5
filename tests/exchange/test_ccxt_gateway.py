"""CcxtGateway through the REAL ccxt client over loopback HTTP against the Binance emulator.

Covers: markets (precision/limits from the real exchangeInfo), universe from one tickers
request, backfill then incremental candles (checked on the wire), core.trading.rules.conform_order
against the exchange's own filters, orders by client id (incl. an ambiguous 5xx), clock
skew (-1021), bad keys, and every fault kind: the cycle completes with the healthy pairs,
backs off, honours Retry-After / 418, and never exceeds the weight budget.
"""
import asyncio
import contextlib
import gzip
import json
import random
import time
import urllib.request
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from core.scan.candles import CandleStore
from core.exchange.ccxt_gateway import CcxtGateway
from core.config import config_from_dict
from core.secrets import Secrets
from core.exchange.gateway import AuthenticationFailed, OrderRejected, TemporaryError
from core.scan.marketdata import MarketData
from core.models import Order, OrderStatus
from core.exchange.ratelimit import Backoff, RequestGuard, WeightBudget
from core.trading.rules import Refusal, ValidOrder, conform_order, round_step
from core.scan.universe import Universe, select_universe
from tests.support.emulator import DEFAULT_EXCHANGE_INFO, running_emulator
from tests.support.emulator.client import EmulatorClock
from tests.support.ohlcv import closed_before

H = 3_600_000
START = 1_622_505_600_000  # 2021-06-01 00:00 UTC
KEYS = Secrets("emu-key-0001", "emu-secret-0001")
PAIRS = ["BTC/USDT", "ETH/USDT", "UNI/USDT", "ADA/USDT", "XRP/USDT", "DOGE/USDT", "DOT/USDT", "LINK/USDT",
         "LTC/USDT", "SOL/USDT", "MATIC/USDT", "AAVE/USDT", "ATOM/USDT", "FIL/USDT", "TRX/USDT", "EOS/USDT"]
BAD = {"ADA/USDT", "LTC/USDT", "EOS/USDT"}
BUDGET = 3000  # 50 % of the emulator's 6000


@pytest.fixture(scope="module")
def emu():
    with running_emulator(start_ms=START, balances={"USDT": "100000"}) as e:
        yield e
        assert e.max_weight_1m <= BUDGET  # over the whole module: never above our budget


@pytest.fixture(autouse=True)
def healthy(request):
    if "emu" in request.fixturenames:
        e = request.getfixturevalue("emu")
        e.faults.clear()
        yield
        e.faults.clear()
    else:
        yield


def gateway(emu, secrets=KEYS, **exchange) -> CcxtGateway:
    cfg = config_from_dict({"exchange": {"api_url": emu.url, "timeout_s": 1, **exchange}})
    return CcxtGateway(cfg, secrets, EmulatorClock(emu))


def run(emu, fn, secrets=KEYS, **exchange):
    async def go():
        gw = gateway(emu, secrets, **exchange)
        try:
            return await fn(gw)
        finally:
            await gw.close()

    return asyncio.run(go())


def since(emu, mark: int) -> list:
    return list(emu.requests)[mark:]


def spy_urls(gw) -> list[str]:
    urls: list[str] = []
    inner = gw.exchange.fetch

    async def fetch(url, method="GET", headers=None, body=None):
        urls.append(url)
        return await inner(url, method, headers, body)

    gw.exchange.fetch = fetch
    return urls


def stored(store, sym, tf="1h"):
    v = store.view(tf)
    i = store.symbols.index(sym)
    n = int(v.counts[i])
    return np.stack([getattr(v, f)[i, v.capacity - n:] for f in ("ts", "open", "high", "low", "close", "volume")], 1)


# --- markets, universe --------------------------------------------------------------------------

def test_markets_carry_the_exchange_filters_exactly(emu):
    info = json.loads(gzip.decompress(DEFAULT_EXCHANGE_INFO.read_bytes()))
    by_id = {s["symbol"]: s for s in info["symbols"]}
    mark = len(emu.requests)

    async def go(gw):
        first = await gw.load_markets()
        again = await gw.load_markets()  # cached: no request
        return first, again

    markets, again = run(emu, go)
    assert markets == again and len(markets) == len(emu.symbols) == 126
    paths = [r.path for r in since(emu, mark)]
    # with keys set: the clock is synced for signed calls; no sapi, no futures listings
    assert sorted(paths) == ["/api/v3/exchangeInfo", "/api/v3/time"]
    for sym, m in markets.items():
        raw = by_id[sym.replace("/", "")]
        f = {x["filterType"]: x for x in raw["filters"]}
        assert m.active == (raw["status"] == "TRADING")
        assert m.amount_step == Decimal(f["LOT_SIZE"]["stepSize"])
        assert m.price_tick == Decimal(f["PRICE_FILTER"]["tickSize"])
        assert m.min_amount == Decimal(f["LOT_SIZE"]["minQty"])
        assert m.max_amount == Decimal(f["LOT_SIZE"]["maxQty"])
        notional = f.get("NOTIONAL") or f.get("MIN_NOTIONAL")
        assert m.min_cost == Decimal(notional["minNotional"])
    assert sum(not m.active for m in markets.values()) == 9  # the BREAK pairs of that file


def test_markets_are_refreshed_on_schedule(emu):
    class Clock:
        t = START

        def now_ms(self):
            return self.t

    clock = Clock()

    async def go():
        cfg = config_from_dict({"exchange": {"api_url": emu.url, "markets_refresh_s": 600}})
        gw = CcxtGateway(cfg, Secrets(), clock)
        try:
            mark = len(emu.requests)
            await gw.load_markets()
            clock.t += 599_000
            await gw.fetch_ohlcv("BTC/USDT", "1h", None, 2)
            clock.t += 2_000
            await gw.fetch_ohlcv("BTC/USDT", "1h", None, 2)
            return [r.path for r in since(emu, mark)]
        finally:
            await gw.close()

    assert asyncio.run(go()) == ["/api/v3/exchangeInfo", "/api/v3/klines", "/api/v3/exchangeInfo", "/api/v3/klines"]


def test_universe_from_one_tickers_request(emu):
    mark = len(emu.requests)

    async def go(gw):
        cfg = config_from_dict({"exchange": {"api_url": emu.url}})
        uni = Universe(gw, cfg, EmulatorClock(emu))
        first = await uni.symbols()
        second = await uni.symbols()
        return first, second, await gw.load_markets(), uni.last_tickers

    first, second, markets, tickers = run(emu, go, Secrets())
    assert first == second
    assert [r.path for r in since(emu, mark)].count("/api/v3/ticker/24hr") == 1
    assert first == select_universe(markets, tickers, config_from_dict({}).universe)
    assert 50 < len(first) <= 126 and first[0] == "BTC/USDT"
    assert all(tickers[s].quote_volume >= 1e6 and tickers[s].bid < tickers[s].ask for s in first)


# --- candles: backfill, then only what is new -------------------------------------------------

def test_backfill_then_incremental_on_the_wire(emu):
    async def go(gw):
        urls = spy_urls(gw)
        cfg = config_from_dict({"exchange": {"api_url": emu.url}})
        store = CandleStore(["1h", "4h"], 60)
        md = MarketData(gw, store, cfg, EmulatorClock(emu))
        assert await md.refresh(PAIRS) == {}
        first = [u for u in urls if "/klines" in u]
        t1 = emu.now_ms
        for sym in PAIRS:
            assert np.array_equal(stored(store, sym), closed_before(sym, t1)[-60:])
        last = {s: store.last_ts(s, "1h") for s in PAIRS}
        emu.advance(H)
        urls.clear()
        assert await md.refresh(PAIRS) == {}
        second = [u for u in urls if "/klines" in u]
        for sym in PAIRS:
            assert np.array_equal(stored(store, sym), closed_before(sym, emu.now_ms)[-60:])
        emu.advance(20 * 60_000)  # the next 1h candle is still open: nothing to ask for
        urls.clear()
        assert await md.refresh(PAIRS) == {}
        return first, second, last, urls, store

    first, second, last, third, store = run(emu, go, Secrets())
    q1 = [parse_qs(urlsplit(u).query) for u in first]
    assert len(q1) == len(PAIRS) and all("startTime" not in q and q["limit"] == ["241"] for q in q1)
    assert all(q["interval"] == ["1h"] for q in q1)  # 4h is derived, never asked for
    q2 = {q["symbol"][0]: q for q in (parse_qs(urlsplit(u).query) for u in second)}
    assert len(q2) == len(PAIRS)
    for sym in PAIRS:
        q = q2[sym.replace("/", "")]
        assert q["startTime"] == [str(last[sym] + H)] and q["limit"] == ["2"]
    assert third == []
    assert all(store.count(s, "4h") >= 58 for s in PAIRS)


# --- exchange rules -------------------------------------------------------------------------------

def test_conform_order_agrees_with_the_exchange_filters(emu):
    """Whatever core.trading.rules accepts, the exchange accepts; whatever it refuses (below minimum
    amount or notional after rounding), the exchange rejects too."""
    rng = random.Random(11)

    async def go(gw):
        markets = await gw.load_markets()
        tickers = await gw.fetch_tickers()
        syms = sorted(s for s, m in markets.items() if m.active and s in tickers)
        accepted = refused = 0
        for i, sym in enumerate(rng.sample(syms, 30)):
            m = markets[sym]
            for j in range(3):
                price = Decimal(repr(tickers[sym].last)) * Decimal(str(rng.uniform(0.9, 0.99)))
                amount = m.min_cost * Decimal(str(rng.uniform(0.3, 3))) / price
                res = conform_order(m, "buy", amount, price)
                cid = f"conform-{i}-{j}"
                if isinstance(res, ValidOrder):
                    o = await gw.create_order(Order(cid, sym, "buy", "limit", res.amount, res.price, "entry"))
                    assert o.status == OrderStatus.SUBMITTED and o.exchange_id
                    assert (await gw.cancel_order(o)).status == OrderStatus.CANCELLED
                    accepted += 1
                else:
                    assert isinstance(res, Refusal) and "minimum" in res.reason
                    a, p = round_step(amount, m.amount_step), round_step(price, m.price_tick)
                    if a <= 0:
                        continue
                    with pytest.raises(OrderRejected, match="rejected by the exchange|refused by the exchange"):
                        await gw.create_order(Order(cid, sym, "buy", "limit", a, p, "entry"))
                    refused += 1
        return accepted, refused

    accepted, refused = run(emu, go)
    assert accepted >= 15 and refused >= 10


def test_orders_by_client_id_and_precision_guard(emu):
    async def go(gw):
        markets = await gw.load_markets()
        price = Decimal(repr((await gw.fetch_tickers(["BTC/USDT"]))["BTC/USDT"].last))
        m = markets["BTC/USDT"]
        lim = Order("pt-lim-1", "BTC/USDT", "buy", "limit", Decimal("0.001"),
                    round_step(price * Decimal("0.9"), m.price_tick), "entry")
        placed = await gw.create_order(lim)
        assert placed.status == OrderStatus.SUBMITTED and placed.client_id == "pt-lim-1"
        assert [o.client_id for o in await gw.fetch_open_orders("BTC/USDT")] == ["pt-lim-1"]
        assert (await gw.fetch_order(lim)).exchange_id == placed.exchange_id
        assert (await gw.cancel_order(lim)).status == OrderStatus.CANCELLED
        assert (await gw.cancel_order(lim)).status == OrderStatus.CANCELLED  # already gone: looked up
        assert await gw.fetch_order(Order("never-sent", "BTC/USDT", "buy", "limit", Decimal("0.001"),
                                          lim.price, "entry")) is None
        mark = len(emu.requests)
        off_tick = Order("pt-bad-1", "BTC/USDT", "buy", "limit", Decimal("0.001"), lim.price + m.price_tick / 3,
                         "entry")
        with pytest.raises(OrderRejected, match="tick size"):
            await gw.create_order(off_tick)
        with pytest.raises(OrderRejected, match="lot step"):
            await gw.create_order(Order("pt-bad-2", "BTC/USDT", "buy", "market", Decimal("0.0012345"), None,
                                        "entry"))
        assert len(emu.requests) == mark  # refused before anything was sent
        with pytest.raises(OrderRejected):  # more than the account holds
            await gw.create_order(Order("pt-big-1", "BTC/USDT", "buy", "market", Decimal("100"), None, "entry"))
        filled = await gw.create_order(Order("pt-mkt-1", "BTC/USDT", "buy", "market", Decimal("0.001"), None,
                                             "entry"))
        assert filled.status == OrderStatus.FILLED and filled.filled == Decimal("0.001") and filled.average > 0
        fills = await gw.fetch_my_trades("BTC/USDT")
        assert [f.order_id for f in fills if f.order_id == filled.exchange_id]
        assert sum(f.quantity for f in fills if f.order_id == filled.exchange_id) == Decimal("0.001")
        return (await gw.fetch_balance())["BTC"]

    assert run(emu, go) >= Decimal("0.000999")


@pytest.mark.parametrize("applied", [True, False])
def test_5xx_on_create_order_is_resolved_by_client_id(emu, applied):
    """A 5xx on placement is not proof of anything: the gateway looks the order up by client id
    and returns it when it exists; otherwise it says the outcome is unknown, and a resend with
    the same client id places exactly one order."""
    cid = f"pt-amb-{int(applied)}-{time.time_ns() % 10**9}"

    async def go(gw):
        await gw.load_markets()
        emu.faults.symbols = {"ETH/USDT"}
        emu.faults.error_5xx_rate = 1.0
        emu.faults.after_rate = 1.0 if applied else 0.0
        lookup = gw.fetch_order

        async def fetch_order_after_the_storm(order):
            emu.faults.clear()
            return await lookup(order)

        gw.fetch_order = fetch_order_after_the_storm
        order = Order(cid, "ETH/USDT", "buy", "market", Decimal("0.01"), None, "entry")
        if applied:
            got = await gw.create_order(order)
            assert got.status == OrderStatus.FILLED and got.client_id == cid
        else:
            with pytest.raises(TemporaryError, match="outcome unknown"):
                await gw.create_order(order)
            assert cid not in emu.orders
            got = await gw.create_order(order)  # the executor's resend, same client id
        return got

    run(emu, go)
    assert [o.client_id for o in emu.order_list].count(cid) == 1


# --- keys and clock -------------------------------------------------------------------------------

def test_bad_key_is_a_clear_error_without_secrets_and_not_retried(emu):
    secret = "wrong-secret-0123456789"
    mark = len(emu.requests)
    with pytest.raises(AuthenticationFailed) as ei:
        run(emu, lambda gw: gw.fetch_balance(), Secrets("emu-key-0001", secret))
    msg = str(ei.value)
    assert "BINANCE_API_KEY" in msg and secret not in msg and "emu-key-0001" not in msg and "signature=" not in msg
    assert [r.path for r in since(emu, mark)].count("/api/v3/account") == 1
    assert not ei.value.retryable


@pytest.mark.parametrize("skew_ms", [15_000, -5_000])
def test_clock_skew_is_corrected_on_1021(emu, skew_ms):
    async def go(gw):
        await gw.load_markets()  # synced at start; then the exchange's clock jumps
        emu.faults.clock_skew_ms = skew_ms
        mark = len(emu.requests)
        balance = await gw.fetch_balance()
        statuses = [r.status for r in since(emu, mark) if r.path == "/api/v3/account"]
        return balance, statuses, gw.time_offset_ms

    balance, statuses, offset = run(emu, go)
    assert balance["USDT"] > 0
    assert statuses == [400, 200]  # -1021 once, then accepted after the re-sync
    assert abs(offset - skew_ms) < 500


# --- faults: the cycle completes with the healthy pairs -----------------------------------------

def cycle(emu, secrets=Secrets(), then=None, **exchange):
    """A backfill cycle over PAIRS with a fresh gateway + store (``then()`` runs once the markets
    are loaded); returns what the tests check."""

    async def go(gw):
        await gw.load_markets()
        if then:
            then()
        store = CandleStore(["1h", "4h"], 60)
        md = MarketData(gw, store, config_from_dict({}), EmulatorClock(emu))
        mark = len(emu.requests)
        t0 = time.perf_counter()
        skipped = await md.refresh(PAIRS)
        return skipped, store, time.perf_counter() - t0, since(emu, mark), gw

    return run(emu, go, secrets, **exchange)


def assert_healthy_pairs_complete(emu, skipped, store):
    for sym in PAIRS:
        if sym not in skipped:
            assert np.array_equal(stored(store, sym), closed_before(sym, emu.now_ms)[-60:])
    assert emu.max_weight_1m <= BUDGET


@pytest.mark.parametrize("kind,switch,words", [
    ("5xx", "error_5xx_rate", "exchange error (HTTP 50"),
    ("timeout", "timeout_rate", "timed out"),
    ("reset", "reset_rate", "unreachable or failing"),
    ("malformed", "malformed_rate", "malformed"),
    ("429", "rate_429", "too many requests"),
])
def test_each_fault_kind_skips_only_the_broken_pairs(emu, kind, switch, words):
    emu.faults.symbols = set(BAD)
    setattr(emu.faults, switch, 1.0)
    emu.faults.hang_s = 5
    skipped, store, took, log, gw = cycle(emu)
    assert set(skipped) == BAD, skipped
    assert all(words in why for why in skipped.values()), skipped
    assert_healthy_pairs_complete(emu, skipped, store)
    tries = {s: [r for r in log if r.path == "/api/v3/klines" and r.symbol == s.replace("/", "")] for s in BAD}
    if kind == "reset":  # aiohttp itself re-sends a GET once when a kept-alive connection is reset
        assert all(3 <= len(t) <= 6 for t in tries.values()), {s: len(t) for s, t in tries.items()}
        tries = {}
    else:  # first try + 2 retries, then the pair is skipped; a try without a reply also sends its twins
        # (a twin is not sent once the try has failed: 2 or 3 requests per try)
        lo, hi = (2 * 3, (1 + RequestGuard.MAX_HEDGES) * 3) if kind == "timeout" else (3, 3)
        assert all(lo <= len(t) <= hi for t in tries.values()), {s: len(t) for s, t in tries.items()}
    for t in tries.values():
        gaps = [(b.wall_ms - a.wall_ms) / 1000 for a, b in zip(t, t[1:])]
        # backoff (>= 0.1 s), a timeout (1 s) or Retry-After (1 s) between tries: never a hammering loop
        assert all(g >= 0.09 for g in gaps), gaps
    if kind == "429":
        first = min(r.wall_ms for r in log if r.status == 429)
        # Retry-After: 1 -> nothing at all was sent in the second after the first 429
        assert not [r for r in log if first + 50 < r.wall_ms < first + 950], "requests during Retry-After"
    assert took < 12


def test_latency_slows_the_cycle_but_changes_nothing(emu):
    emu.faults.latency_s = 0.15
    skipped, store, took, log, gw = cycle(emu, max_concurrency=8)
    assert skipped == {}
    assert took >= 0.15 * 2  # 16 pairs at 8 in flight: at least two round trips
    assert_healthy_pairs_complete(emu, skipped, store)


def test_random_faults_everywhere_are_absorbed_by_retries(emu):
    """30 % of all requests fail in assorted ways over a backfill and an incremental cycle:
    retries with backoff absorb nearly all of it; the rare pair that fails 3 times is skipped."""

    async def go(gw):
        await gw.load_markets()
        f = emu.faults
        f.error_5xx_rate, f.reset_rate, f.malformed_rate, f.timeout_rate, f.hang_s = 0.14, 0.05, 0.09, 0.02, 3
        store = CandleStore(["1h", "4h"], 60)
        md = MarketData(gw, store, config_from_dict({}), EmulatorClock(emu))
        mark = len(emu.requests)
        first = await md.refresh(PAIRS)
        emu.advance(H)
        second = await md.refresh(PAIRS)
        return first, second, store, since(emu, mark), gw

    first, second, store, log, gw = run(emu, go, Secrets())
    faulted = [r for r in log if r.fault and r.fault != "reset"]  # aiohttp may absorb a reset itself
    # every faulted request was retried, or (hung) answered by a twin sent meanwhile
    assert len(faulted) >= 3 and gw.guard.retried + gw.guard.hedged >= len(faulted) - 2 * (len(first) + len(second))
    assert len(first) <= 4 and len(second) <= 4, (first, second)  # ~3 % of pairs are lost per cycle
    for r in faulted:  # every failed request of a pair that made it was tried again later
        sym = r.symbol[:-4] + "/USDT" if r.symbol else None
        if sym and sym not in first and sym not in second:
            assert any(o.symbol == r.symbol and o.wall_ms > r.wall_ms and not o.fault for o in log)
    for sym in PAIRS:
        if sym not in second:
            assert np.array_equal(stored(store, sym), closed_before(sym, emu.now_ms)[-60:])
    assert emu.max_weight_1m <= BUDGET


def test_418_is_a_hard_stop(emu):
    def ban():
        emu.faults.ban_418 = True
        emu.faults.retry_after_s = 2

    skipped, store, took, log, gw = cycle(emu, then=ban, max_concurrency=4)
    assert set(skipped) == set(PAIRS) and all("banned" in why for why in skipped.values())
    assert 1 <= len(log) <= 4  # only what was in flight when the ban arrived
    assert gw.budget.banned or gw.budget.pause_remaining() == 0
    assert took < 2  # refused at once, not waited out
    emu.faults.ban_418 = False
    time.sleep(2.1)
    skipped, store, *_ = cycle(emu)  # after the ban: back to normal
    assert skipped == {}


def test_a_full_outage_opens_the_breaker_and_fails_fast(emu):
    emu.faults.error_5xx_rate = 1.0
    emu.faults.symbols = set(PAIRS)
    skipped, store, took, log, gw = cycle(emu)
    assert set(skipped) == set(PAIRS)
    assert gw.guard.breaker("market").opened >= 1
    assert any("paused" in why for why in skipped.values())
    assert len([r for r in log if r.path == "/api/v3/klines"]) < 3 * len(PAIRS)  # not every pair tried 3 times


def test_malformed_replies_never_become_objects(emu):
    """A 200 whose JSON is cut short must not reach ccxt's parsers (they would turn it into an
    empty book, an empty balance...)."""

    async def books(gw):
        await gw.load_markets()
        emu.faults.malformed_rate = 1.0
        with pytest.raises(TemporaryError, match="malformed"):
            await gw.fetch_tickers()
        emu.faults.symbols = {"BTC/USDT"}
        with pytest.raises(TemporaryError, match="malformed"):
            await gw.fetch_order_book("BTC/USDT", 20)
        emu.faults.symbols = None
        for call in (gw.fetch_balance, gw.fetch_open_orders):  # other families: their breakers are closed
            with pytest.raises(TemporaryError, match="malformed"):
                await call()
        emu.faults.clear()
        book = await gw.fetch_order_book("BTC/USDT", 20)
        assert len(book.bids) == len(book.asks) == 20 and book.bids[0][0] < book.asks[0][0]
        return True

    assert run(emu, books)


# --- the budget holds against weight spent by someone else on the same IP ------------------------

def test_budget_counts_other_clients_and_waits_for_the_next_minute():
    with running_emulator(start_ms=START) as emu:
        # Move the emulator's weight window so it rolls over ~8 s from now, and give our budget the
        # same wall clock (what a synced clock gives in production).
        now = time.time()
        skew_s = (60 - now % 60) - 8
        emu.faults.clock_skew_ms = int(skew_s * 1000)
        wall = lambda: time.time() + skew_s  # noqa: E731
        for _ in range(37):  # another program: 37 x 80 = 2960 weight
            urllib.request.urlopen(emu.url + "/api/v3/ticker/24hr").read()
        assert emu.weight_used >= 2960

        async def go():
            cfg = config_from_dict({"exchange": {"api_url": emu.url, "timeout_s": 2}})
            budget = WeightBudget(6000, 0.5, wall=wall)
            guard = RequestGuard(budget, concurrency=8, timeout_s=4, backoff=Backoff())
            gw = CcxtGateway(cfg, Secrets(), EmulatorClock(emu), guard=guard)
            try:
                store = CandleStore(["1h", "4h"], 60)
                md = MarketData(gw, store, cfg, EmulatorClock(emu))
                t0 = time.perf_counter()
                skipped = await md.refresh(PAIRS)
                return skipped, budget, time.perf_counter() - t0
            finally:
                await gw.close()

        skipped, budget, took = asyncio.run(go())
        assert skipped == {}
        assert budget.waits > 0 and took > 1.0  # it waited for the window instead of pushing on
        assert emu.max_weight_1m <= 3000  # the IP's total stayed within our budget
        assert all(r.status == 200 for r in emu.requests)


def test_keys_refused_at_start_or_three_times_in_a_row_are_a_configuration_error(emu):
    """-2015 forever is no outage: the gateway says so (``credentials_refused``) and the engine
    stops on it, although the live executor logs and swallows each refusal (issue 15 item 7)."""

    async def at_start(gw):
        with pytest.raises(AuthenticationFailed):
            await gw.fetch_balance()
        return gw.credentials_refused

    refused = run(emu, at_start, Secrets("wrong-key-0001", "emu-secret-0001"))
    assert isinstance(refused, AuthenticationFailed) and "code -2015" in str(refused)
    assert "wrong-key-0001" not in str(refused) and "emu-secret-0001" not in str(refused)

    async def revoked_later(gw):
        await gw.fetch_balance()  # the keys worked once: a refusal may be a short block
        seen = []
        try:
            for good in (False, False, True, False, False, False, False):
                emu.api_key = "emu-key-0001" if good else "revoked-key"
                with pytest.raises(AuthenticationFailed) if not good else contextlib.nullcontext():
                    await gw.fetch_open_orders()  # ccxt calls this -2015 a "temporary ban" (DDoSProtection)
                seen.append(gw.credentials_refused is not None)
                emu.advance(150_000)  # a refusal every 2.5 minutes
        finally:
            emu.api_key = "emu-key-0001"
        return seen

    # refused at 0 and 2.5 min, accepted, then refused at 7.5, 10, 12.5 (3 in 5 min: for good)
    assert run(emu, revoked_later) == [False, False, False, False, False, True, True]
