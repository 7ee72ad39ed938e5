"""Replay gateway: no look-ahead, real gaps, bad files reported with their line."""
import asyncio
import gzip
from decimal import Decimal

import numpy as np
import pytest

from core.clock import VirtualClock
from core.exchange.replay import DataError, ReplayGateway, load_csv
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
