"""ccxt structures -> core.models, offline: real recorded Binance replies (../shared/data/raw)
through ccxt's own parsers, then our validating conversions; odd replies must raise."""
import asyncio
from decimal import Decimal

import pytest

from core.exchange.ccxt_convert import (exact_decimal, finite_float, to_fill, to_market, to_ohlcv, to_order,
                                        to_order_book, to_ticker)
from core.exchange.ccxt_errors import MalformedReply
from core.exchange.gateway import TemporaryError
from core.models import Order, OrderStatus
from tests.support.binance_fixtures import (cassette_body, exchange_info, real_market_ids,
                                         real_markets_and_tickers)

H = 3_600_000


def parsed(fn):
    """``fn(ex)`` on a ccxt binance client whose markets are the recorded 2021 exchangeInfo."""
    from core.exchange.ccxt_client import ccxt_async

    async def go():
        ex = ccxt_async.binance({"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}})

        async def recorded(params={}):
            return exchange_info(2021)

        ex.publicGetExchangeInfo = recorded
        try:
            await ex.load_markets()
            return fn(ex)
        finally:
            await ex.close()

    return asyncio.run(go())


def test_recorded_order_book_converts_level_for_level():
    raw = cassette_body("depth_100.yml")  # BTCUSDT, limit 100, 2020-11-03
    book = to_order_book(parsed(lambda ex: ex.parse_order_book(raw, "BTC/USDT")), "BTC/USDT", 7)
    assert len(book.bids) == len(book.asks) == 100
    assert book.bids == tuple((float(p), float(a)) for p, a in raw["bids"])
    assert book.asks == tuple((float(p), float(a)) for p, a in raw["asks"])
    assert book.ts_ms == 7  # the reply has no timestamp: ours
    crossed = {**raw, "bids": [[raw["asks"][0][0], "1"]]}
    with pytest.raises(MalformedReply, match="crossed"):
        to_order_book(parsed(lambda ex: ex.parse_order_book(crossed, "BTC/USDT")), "BTC/USDT", 7)
    with pytest.raises(MalformedReply, match="out of order"):
        to_order_book({"bids": [[1.0, 1.0], [2.0, 1.0]], "asks": []}, "X/USDT", 0)


def test_recorded_klines_convert_exactly_and_the_open_candle_is_dropped():
    rows = cassette_body("klines_1h_5.yml")  # raw Binance rows: strings, 12 fields
    arr = to_ohlcv(rows, H, int(rows[-1][0]) + H, "candles BNB/USDT 1h")
    assert arr.shape == (5, 6)
    assert arr.tolist() == [[float(v) for v in r[:6]] for r in rows]
    assert len(to_ohlcv(rows, H, int(rows[-1][0]) + H - 1, "x")) == 4  # the last one had not closed


def test_recorded_24h_tickers_convert_and_dead_rows_are_left_out():
    markets, tickers = real_markets_and_tickers(2021)
    raw = {r["symbol"]: r for r in cassette_body("twenty_four_hour_all.yml")}
    ids = real_market_ids(2021)  # ccxt symbol -> exchange id (ccxt renames a few assets)
    dead = {s for s, i in ids.items() if i in raw and float(raw[i]["lastPrice"]) <= 0}
    assert dead and not dead & set(tickers)  # delisted rows (last price 0) are not guessed
    assert len(tickers) >= 400 and set(tickers) <= set(markets)
    for sym, t in tickers.items():
        r = raw[ids[sym]]
        assert t.last == float(r["lastPrice"]) and t.quote_volume == float(r["quoteVolume"])
        assert t.bid is None or t.ask is None or t.bid <= t.ask
        assert t.ts_ms == int(r["closeTime"])


def test_recorded_trades_convert_to_fills_without_fee():
    raw = cassette_body("trades_5.yml")
    fills = [to_fill(t) for t in parsed(lambda ex: ex.parse_trades(raw, ex.market("BNB/USDT")))]
    assert [f.trade_id for f in fills] == [str(t["id"]) for t in raw]
    assert [f.quantity for f in fills] == [Decimal(t["qty"]).normalize() for t in raw]
    assert [f.price for f in fills] == [Decimal(t["price"]).normalize() for t in raw]
    assert all(f.fee == 0 and f.fee_asset is None and f.side in ("buy", "sell") for f in fills)


def test_recorded_markets_keep_only_usable_spot_markets():
    info = exchange_info(2021)
    trading = parsed(lambda ex: list(ex.markets.values()))
    markets = [m for m in (to_market(x, 4) for x in trading) if m]
    assert len(markets) == len(info["symbols"])
    assert to_market({**trading[0], "spot": False}, 4) is None
    assert to_market({**trading[0], "symbol": None}, 4) is None
    halted = next(x for x in trading if x["info"]["status"] != "TRADING")
    assert to_market(halted, 4).active is False


def test_numbers_from_ccxt_are_exact_and_finite():
    assert exact_decimal(0.00001) == Decimal("0.00001") and str(exact_decimal("1.50000000")) == "1.5"
    assert str(exact_decimal(100.0)) == "100" and exact_decimal("NaN") is None and exact_decimal(True) is None
    assert finite_float("1e400") is None and finite_float("x") is None and finite_float("2.5") == 2.5


def test_2021_exchange_info_limits_convert_exactly():
    """The older filter set (MIN_NOTIONAL), all 1363 symbols, through ccxt's own parser."""
    from tests.support.binance_fixtures import exchange_info, real_market_ids, real_markets

    markets, ids = real_markets(2021), real_market_ids(2021)
    by_id = {s["symbol"]: s for s in exchange_info(2021)["symbols"]}
    assert len(markets) == len(by_id)
    for sym, m in markets.items():
        raw = by_id[ids[sym]]  # ccxt renames a few assets (YOYO -> YOYOW)
        f = {x["filterType"]: x for x in raw["filters"]}
        assert (m.amount_step, m.price_tick, m.min_cost) == (
            Decimal(f["LOT_SIZE"]["stepSize"]), Decimal(f["PRICE_FILTER"]["tickSize"]),
            Decimal(f["MIN_NOTIONAL"]["minNotional"]))


def test_odd_candle_replies_are_refused_and_open_candles_dropped():
    from core.exchange.ccxt_convert import to_ohlcv

    good = [[0, 1.0, 2.0, 0.5, 1.5, 10.0], [H, 1.5, 1.6, 1.4, 1.5, 0.0], [2 * H, 1.5, 1.5, 1.5, 1.5, 3.0]]
    assert to_ohlcv(good, H, 3 * H, "x").shape == (3, 6)
    assert to_ohlcv(good, H, 3 * H - 1, "x").shape == (2, 6)  # the last one is still open
    assert to_ohlcv([], H, 0, "x").shape == (0, 6)
    bad = {
        "none": [[0, 1.0, None, 0.5, 1.5, 1.0]],
        "text": "[[0,1.0,2.0",
        "order": [good[1], good[0]],
        "dup": [good[0], good[0]],
        "align": [[5, 1.0, 2.0, 0.5, 1.5, 1.0]],
        "high": [[0, 1.0, 1.2, 0.5, 1.5, 1.0]],
        "zero": [[0, 0.0, 2.0, 0.0, 1.5, 1.0]],
        "short": [[0, 1.0, 2.0]],
        "volume": [[0, 1.0, 2.0, 0.5, 1.5, -1.0]],
    }
    for name, rows in bad.items():
        with pytest.raises(TemporaryError, match="malformed"):
            to_ohlcv(rows, H, 10 * H, name)


def test_odd_order_replies_are_refused():
    from core.exchange.ccxt_convert import to_order

    mine = Order("cid-1", "BTC/USDT", "buy", "limit", Decimal("0.5"), Decimal("100"), "entry")
    ok = {"id": "42", "clientOrderId": "cid-1", "symbol": "BTC/USDT", "status": "open", "filled": 0.2,
          "average": 99.5, "info": {"status": "PARTIALLY_FILLED"}}
    got = to_order(ok, mine, 1)
    assert got.status == OrderStatus.PARTIALLY_FILLED and got.filled == Decimal("0.2") and got.exchange_id == "42"
    assert mine.status == OrderStatus.NEW  # the caller's object is not modified
    for change in ({"id": None}, {"clientOrderId": "someone-else"}, {"filled": 0.6}, {"status": "weird", "info": {}},
                   {"symbol": "ETH/USDT"}, {"status": "closed", "filled": 0, "info": {}}):
        with pytest.raises(TemporaryError, match="order"):
            to_order({**ok, **change}, mine, 1)
    with pytest.raises(TemporaryError):
        to_order("<html>", mine, 1)


def test_a_fee_without_its_asset_is_refused_not_guessed():
    from core.exchange.ccxt_convert import to_fill

    trade = {"id": "7", "symbol": "BTC/USDT", "side": "buy", "amount": 0.1, "price": 50000.0,
             "timestamp": 1_620_000_000_000, "order": "42", "fee": {"cost": 0.0001}}
    with pytest.raises(MalformedReply, match="without its asset"):
        to_fill(trade)
    ok = to_fill({**trade, "fee": {"cost": 0.0001, "currency": "BTC"}})
    assert ok.fee_asset == "BTC" and str(ok.fee) == "0.0001"
    assert to_fill({**trade, "fee": None}).fee == 0  # no fee charged: nothing to value


def test_weight_limit_is_read_from_the_recorded_exchange_info_heads():
    import gzip

    from core.exchange.ccxt_convert import header, weight_limit
    from tests.support.binance_fixtures import EXCHANGE_INFO

    bodies = {y: gzip.decompress(p.read_bytes()).decode() for y, p in EXCHANGE_INFO.items()}
    assert weight_limit(bodies[2021]) == 1200 and weight_limit(bodies[2023]) == 6000  # the limit was raised in 2023
    assert weight_limit('{"rateLimits":[{"rateLimitType":"ORDERS","interval":"SECOND","intervalNum":10,'
                        '"limit":50}]}') is None
    assert weight_limit('{"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT",') is None  # cut short
    assert header({"x-mbx-used-weight-1m": 12}, "X-MBX-USED-WEIGHT-1M") == "12" and header(None, "Date") is None
