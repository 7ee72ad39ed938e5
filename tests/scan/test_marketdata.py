"""MarketData: backfill, incremental refresh, derived timeframes, failures, concurrency.

Unit part: the real ReplayGateway over the real 1h data (../shared/data/ohlcv/1h) behind a
spy. The loopback-emulator part (real ccxt over HTTP) is in tests/exchange/test_ccxt_gateway.py.
"""
import asyncio
from dataclasses import replace

import numpy as np

from core.scan.candles import CandleStore
from core.clock import VirtualClock
from core.config import Config, ExchangeConfig, ScannerConfig
from core.exchange.gateway import TemporaryError
from core.scan.marketdata import MarketData
from core.exchange.replay import ReplayGateway
from tests.support.ohlcv import OHLCV, closed_before

H = 3_600_000
PAIRS = ["BTC/USDT", "ETH/USDT", "ADA/USDT", "COCOS/USDT", "AAVE/USDT", "DOGE/USDT", "XRP/USDT", "SOL/USDT"]
START = 1_616_000_000_000 - 1_616_000_000_000 % H + 20 * 60_000  # 2021-03-17 17:20 UTC, mid-candle


class Spy:
    """Wraps a gateway: records every OHLCV request, injects failures, measures concurrency."""

    def __init__(self, inner, delay_s: float = 0.0):
        self.inner = inner
        self.calls: list[tuple[str, str, int | None, int | None]] = []
        self.fail: dict[str, BaseException] = {}
        self.delay_s = delay_s
        self.live = self.peak = 0

    async def fetch_ohlcv(self, symbol, timeframe, since_ms=None, limit=None):
        self.calls.append((symbol, timeframe, since_ms, limit))
        self.live += 1
        self.peak = max(self.peak, self.live)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if symbol in self.fail:
                raise self.fail[symbol]
            return await self.inner.fetch_ohlcv(symbol, timeframe, since_ms, limit)
        finally:
            self.live -= 1


def setup(capacity=60, timeframes=("1h", "4h"), concurrency=8, start=START, delay_s=0.0):
    clock = VirtualClock(start)
    gw = Spy(ReplayGateway(OHLCV / "1h", clock, symbols=PAIRS), delay_s)
    cfg = Config(exchange=ExchangeConfig(max_concurrency=concurrency),
                 scanner=replace(ScannerConfig(), timeframes=tuple(timeframes), candles=max(60, capacity)))
    store = CandleStore(list(timeframes), capacity)
    return clock, gw, store, MarketData(gw, store, cfg, clock)


def stored(store: CandleStore, sym: str, tf: str) -> np.ndarray:
    v = store.view(tf)
    i = store.symbols.index(sym)
    n = int(v.counts[i])
    return np.stack([getattr(v, f)[i, v.capacity - n:] for f in ("ts", "open", "high", "low", "close", "volume")],
                    axis=1)


def test_backfill_then_only_new_candles():
    clock, gw, store, md = setup()
    assert md.history_needed("1h") == 240  # 60 4h candles are built from 240 1h candles

    skipped = asyncio.run(md.refresh(PAIRS))
    assert skipped == {}
    assert {c[1] for c in gw.calls} == {"1h"}  # 4h is derived by the store, never fetched
    assert all(c[2] is None and c[3] == 241 for c in gw.calls) and len(gw.calls) == len(PAIRS)
    for sym in PAIRS:
        expect = closed_before(sym, START)[-60:]
        assert np.array_equal(stored(store, sym, "1h"), expect)
        assert store.last_ts(sym, "4h") is not None and store.count(sym, "4h") >= 55
    assert md.last.requests == len(PAIRS) and md.last.candles > 0

    # 10 minutes later the next 1h candle has not closed: nothing is requested at all
    gw.calls.clear()
    clock.advance_to(START + 10 * 60_000)
    assert asyncio.run(md.refresh(PAIRS)) == {} and gw.calls == []

    # after the close: one small request per pair, starting right after the stored candle
    clock.advance_to(START + H)
    last = {s: store.last_ts(s, "1h") for s in PAIRS}
    asyncio.run(md.refresh(PAIRS))
    assert sorted(gw.calls) == sorted((s, "1h", last[s] + H, 2) for s in PAIRS)
    for sym in PAIRS:
        assert np.array_equal(stored(store, sym, "1h"), closed_before(sym, START + H)[-60:])
    assert md.last.candles == len(PAIRS) + sum(1 for s in PAIRS if store.last_ts(s, "4h") > last[s] - 3 * H)


def test_catch_up_after_downtime_and_paged_backfill():
    clock, gw, store, md = setup(capacity=300)  # 300 4h candles need 1200 1h: two pages
    asyncio.run(md.refresh(PAIRS[:3]))
    assert len(gw.calls) == 6
    for sym in PAIRS[:3]:
        rows = closed_before(sym, START)
        assert np.array_equal(stored(store, sym, "1h"), rows[-300:])
        assert store.count(sym, "4h") >= 290  # filled from the whole 1200-candle block
    gw.calls.clear()
    clock.advance_to(START + 30 * H)  # down for 30 hours
    asyncio.run(md.refresh(PAIRS[:3]))
    assert len(gw.calls) == 3 and all(c[3] == 31 for c in gw.calls)
    for sym in PAIRS[:3]:
        assert np.array_equal(stored(store, sym, "1h"), closed_before(sym, START + 30 * H)[-300:])


def test_failing_pairs_are_skipped_and_reported_not_fatal():
    clock, gw, store, md = setup()
    gw.fail = {"ETH/USDT": TemporaryError("candles ETH/USDT 1h: timed out"),
               "DOGE/USDT": RuntimeError("a bug somewhere")}
    skipped = asyncio.run(md.refresh(PAIRS))
    assert set(skipped) == {"ETH/USDT", "DOGE/USDT"}
    assert "timed out" in skipped["ETH/USDT"] and "1h" in skipped["ETH/USDT"]
    assert "RuntimeError" in skipped["DOGE/USDT"]
    assert store.last_ts("ETH/USDT", "1h") is None
    assert all(store.last_ts(s, "1h") is not None for s in PAIRS if s not in skipped)
    # next cycle the exchange is fine again: the skipped pairs are backfilled, the others untouched
    gw.fail = {}
    gw.calls.clear()
    assert asyncio.run(md.refresh(PAIRS)) == {}
    assert sorted(c[0] for c in gw.calls) == ["DOGE/USDT", "ETH/USDT"]


def test_concurrency_is_bounded():
    clock, gw, store, md = setup(concurrency=3, delay_s=0.005)
    asyncio.run(md.refresh(PAIRS))
    assert gw.peak == 3


def test_both_timeframes_fetched_when_nothing_derives():
    clock, gw, store, md = setup(timeframes=("1h",))
    asyncio.run(md.refresh(PAIRS[:2]))
    assert [c[3] for c in gw.calls] == [61, 61]  # capacity only, no 4h ratio


def test_universe_change_keeps_rows_of_kept_pairs():
    clock, gw, store, md = setup()
    asyncio.run(md.refresh(PAIRS[:4]))
    gw.calls.clear()
    asyncio.run(md.refresh(PAIRS[2:6]))  # two kept, two new
    assert sorted(c[0] for c in gw.calls) == sorted(PAIRS[4:6])
    assert store.symbols == PAIRS[2:6]


def test_a_clock_ahead_of_the_exchange_costs_requests_not_data():
    """If our clock runs far ahead of the data (an emulator on 2021 time, say), every cycle asks
    from the newest stored candle and gets nothing new: the store stays exact."""
    clock, gw, store, md = setup()
    asyncio.run(md.refresh(PAIRS[:2]))
    before = {s: stored(store, s, "1h").copy() for s in PAIRS[:2]}
    inner_clock = gw.inner.clock
    md.clock = VirtualClock(START + 1000 * H)  # our clock jumps; the exchange's (replay) does not
    gw.calls.clear()
    assert asyncio.run(md.refresh(PAIRS[:2])) == {}
    assert len(gw.calls) == 2 and all(c[3] == 1000 for c in gw.calls)
    for s in PAIRS[:2]:
        assert np.array_equal(stored(store, s, "1h"), before[s])
    assert inner_clock.now_ms() == START


def test_backfill_stops_at_the_listing_start():
    """TKO was listed 2021-04-07 and AR 2021-05-14: at 2021-05-26 both have less history than a
    full 1200-candle backfill; each pair costs the pages its history needs plus, when a page starts
    late, one empty page that tells the listing start from an outage gap (a gap must not end the
    window: a redenomination across it would go unseen)."""
    start = 1_622_000_000_000 - 1_622_000_000_000 % H
    clock = VirtualClock(start)
    pairs = ["TKO/USDT", "AR/USDT"]
    gw = Spy(ReplayGateway(OHLCV / "1h", clock, symbols=pairs))
    store = CandleStore(["1h", "4h"], 300)
    md = MarketData(gw, store, Config(), clock)
    assert asyncio.run(md.refresh(pairs)) == {}
    assert sorted(c[0] for c in gw.calls) == ["AR/USDT", "TKO/USDT", "TKO/USDT", "TKO/USDT"]
    for sym in pairs:
        assert np.array_equal(stored(store, sym, "1h"), closed_before(sym, start)[-300:])
    assert store.count("AR/USDT", "1h") < 300  # its whole history
