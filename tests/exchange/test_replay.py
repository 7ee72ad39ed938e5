"""Replay gateway: no look-ahead, real gaps, bad files reported with their line."""
import asyncio
import gzip
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core.clock import VirtualClock
from core.exchange.day_tickers import day_windows
from core.exchange.replay import DataError, ReplayGateway, load_csv
from core.timeframes import DAY_MS
from tests.conftest import OHLCV_1H

H = 3_600_000


@pytest.fixture(scope="module")
def gw():
    clock = VirtualClock(0)
    return ReplayGateway(OHLCV_1H, clock, symbols=["BTC/USDT", "ETH/USDT", "COCOS/USDT", "BTCST/USDT"])


def test_only_closed_candles_are_visible(gw):
    btc = gw.data["1h"]["BTC/USDT"]
    rng = np.random.default_rng(7)
    for _ in range(200):
        t = int(rng.integers(gw.start_ms, gw.end_ms + 2 * H))
        gw.clock._now = t
        got = asyncio.run(gw.fetch_ohlcv("BTC/USDT", "1h"))
        assert (got[:, 0] + H <= t).all()  # every candle served had closed
        expected = btc[btc[:, 0] + H <= t]
        assert np.array_equal(got, expected)  # and none that had closed is missing
        tick = asyncio.run(gw.fetch_tickers(["BTC/USDT"])).get("BTC/USDT")
        if len(expected):
            assert tick.last == expected[-1, 4] and tick.ts_ms <= t
        else:
            assert tick is None


def test_since_and_limit(gw):
    gw.clock._now = gw.start_ms + 100 * H
    all_ = asyncio.run(gw.fetch_ohlcv("ETH/USDT", "1h"))
    assert len(asyncio.run(gw.fetch_ohlcv("ETH/USDT", "1h", limit=10))) == 10
    tail = asyncio.run(gw.fetch_ohlcv("ETH/USDT", "1h", since_ms=int(all_[-5, 0])))
    assert np.array_equal(tail, all_[-5:])
    head = asyncio.run(gw.fetch_ohlcv("ETH/USDT", "1h", since_ms=int(all_[3, 0]), limit=2))
    assert np.array_equal(head, all_[3:5])


def test_real_gaps_are_kept(gw):
    ts = gw.data["1h"]["BTC/USDT"][:, 0]
    gaps = np.flatnonzero(np.diff(ts) > H)
    assert len(gaps) == 6  # the documented Binance outages
    gw.clock._now = int(ts[gaps[0] + 1]) + H  # just after the first gap closed
    got = asyncio.run(gw.fetch_ohlcv("BTC/USDT", "1h", since_ms=int(ts[gaps[0]])))
    assert len(got) == 2 and got[1, 0] - got[0, 0] > H


def test_not_listed_yet_is_absent(gw):
    first = gw.data["1h"]["BTCST/USDT"][0, 0]
    gw.clock._now = int(first)  # its first candle has not closed yet
    assert "BTCST/USDT" not in asyncio.run(gw.fetch_tickers())
    assert len(asyncio.run(gw.fetch_ohlcv("BTCST/USDT", "1h"))) == 0


def test_bad_rows_are_reported_with_line(tmp_path):
    good = "timestamp_ms,open,high,low,close,volume\n0,1,2,0.5,1.5,10\n3600000,1.5,2,1,1.2,5\n"
    (tmp_path / "A_USDT.csv").write_text(good)
    assert load_csv(tmp_path / "A_USDT.csv", H).shape == (2, 6)
    cases = {
        "0,1,2,0.5,1.5,10\n3600000,1.5,x,1,1.2,5\n": ":3: high: expected a number",
        "0,1,2,0.5,1.5,10\n0,1.5,2,1,1.2,5\n": ":3: timestamp_ms: expected strictly increasing",
        "0,1,2,0.5,1.5,10\n3600000,1.5,1.1,1,1.2,5\n": ":3: high: expected high >= open",
        "0,1,2,0.5,1.5\n": ":2: row: expected 6",
    }
    for body, msg in cases.items():
        p = tmp_path / "B_USDT.csv"
        p.write_text("timestamp_ms,open,high,low,close,volume\n" + body)
        with pytest.raises(DataError, match=msg):
            load_csv(p, H)


def test_gzip_and_markets(sample_copy):
    gw = ReplayGateway(sample_copy, VirtualClock(0))
    assert len(gw.data["1h"]) >= 100
    markets = asyncio.run(gw.load_markets())
    btc = markets["BTC/USDT"]
    assert btc.min_cost == 10 and btc.price_tick == Decimal("0.01")
    raw = gzip.decompress((sample_copy / "1h" / "BTC_USDT.csv.gz").read_bytes()).decode().splitlines()
    assert len(raw) - 1 == len(gw.data["1h"]["BTC/USDT"])


# --- 24 h tickers (core.exchange.day_tickers): the old per-symbol formula is the oracle ------------

def _ticker_by_hand(arr: np.ndarray, now: int, tf_ms: int = H):
    """What fetch_tickers returned before the kernel: bisects, np.sum, max and min per symbol."""
    import bisect

    n = bisect.bisect_right(arr[:, 0].tolist(), now - tf_ms)
    if n == 0:
        return None
    day = arr[bisect.bisect_right(arr[:, 0].tolist(), now - DAY_MS - 1, 0, n):n]
    return (int(arr[n - 1, 0]) + tf_ms, float(arr[n - 1, 4]),
            float(day[:, 2].max()) if len(day) else None, float(day[:, 3].min()) if len(day) else None,
            float(np.sum(day[:, 4] * day[:, 5])) if len(day) else 0.0)


def test_tickers_equal_the_per_symbol_formula_bit_for_bit(gw):
    """Random moments, plus every hour around COCOS's 97 h halt (an empty 24 h window while the
    pair is listed: no high/low, zero volume)."""
    rng = np.random.default_rng(11)
    cocos = gw.data["1h"]["COCOS/USDT"]
    k = int(np.argmax(np.diff(cocos[:, 0]))) + 1
    halt = range(int(cocos[k - 1, 0]), int(cocos[k, 0]) + 3 * H, H)
    moments = [int(t) for t in rng.integers(gw.start_ms - H, gw.end_ms + 30 * H, 300)] + list(halt)
    empty_windows = 0
    for t in moments:
        gw.clock._now = t
        got = asyncio.run(gw.fetch_tickers())
        for sym, arr in gw.data["1h"].items():
            want = _ticker_by_hand(arr, t)
            tick = got.get(sym)
            assert (None if tick is None else (tick.ts_ms, tick.last, tick.high, tick.low, tick.quote_volume)) == want
            empty_windows += want is not None and want[2] is None
    assert empty_windows > 0
    gw.clock._now = gw.end_ms
    assert list(asyncio.run(gw.fetch_tickers(["ETH/USDT", "NOPE/USDT", "BTC/USDT"]))) == ["ETH/USDT", "BTC/USDT"]


def test_tickers_of_a_few_symbols_equal_the_per_symbol_formula_bit_for_bit(gw):
    """The engine asks for its open positions' tickers every cycle (a few symbols: the per-symbol
    loop of ``DayTickers._few``); the same moments as above, including COCOS's empty 24 h window."""
    from core.exchange.day_tickers import FEW

    rng = np.random.default_rng(12)
    names = sorted(gw.data["1h"])
    cocos = gw.data["1h"]["COCOS/USDT"]
    k = int(np.argmax(np.diff(cocos[:, 0]))) + 1
    halt = range(int(cocos[k - 1, 0]), int(cocos[k, 0]) + 3 * H, H)
    moments = [int(t) for t in rng.integers(gw.start_ms - H, gw.end_ms + 30 * H, 200)] + list(halt)
    few = 0
    for j, t in enumerate(moments):
        gw.clock._now = t
        pick = ["COCOS/USDT"] if j >= 200 else [names[i] for i in rng.choice(len(names), min(len(names), 1 + j % FEW), replace=False)]
        got = asyncio.run(gw.fetch_tickers(pick + ["NOPE/USDT"]))
        for sym in pick:
            want = _ticker_by_hand(gw.data["1h"][sym], t)
            tick = got.get(sym)
            assert (None if tick is None else (tick.ts_ms, tick.last, tick.high, tick.low, tick.quote_volume)) == want
            few += want is not None
        assert "NOPE/USDT" not in got
    assert few > 100


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_day_windows_property(data):
    """Any candles (gaps, zero volumes, windows of 0..1440 candles: numpy's pairwise blocks and
    their split at 128, gathered by length) and any query times: count, span, high, low and the
    quote volume are exactly the direct computation's."""
    tf_ms = data.draw(st.sampled_from([60_000, 3_600_000]))
    n = data.draw(st.integers(0, 1600 if tf_ms == 60_000 else 60))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    steps = np.where(rng.random(n) < 0.05, rng.integers(2, 200, n), 1)
    arr = np.zeros((n, 6))
    arr[:, 0] = 1_600_000_000_000 // tf_ms * tf_ms + np.cumsum(steps) * tf_ms
    arr[:, 1:5] = rng.lognormal(0, 3, (n, 1)) * rng.uniform(0.9, 1.1, (n, 4))
    arr[:, 5] = rng.lognormal(5, 4, n) * (rng.random(n) < 0.9)
    lo_t = int(arr[0, 0]) - tf_ms if n else 0
    hi_t = int(arr[-1, 0]) + DAY_MS + 2 * tf_ms if n else 1
    now = np.array(data.draw(st.lists(st.integers(lo_t, hi_t), min_size=1, max_size=20)), dtype=np.int64)
    count, span, qv, high, low = day_windows(arr, now, tf_ms)
    for q, t in enumerate(now.tolist()):
        want = _ticker_by_hand(arr, t, tf_ms)
        c = int(np.searchsorted(arr[:, 0], t - tf_ms, side="right"))
        assert count[q] == c
        if want is None:
            continue
        assert (float(high[q]) if span[q] else None, float(low[q]) if span[q] else None, float(qv[q])) == want[2:]
