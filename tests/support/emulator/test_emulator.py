"""The loopback Binance emulator, driven by the real ccxt client over real HTTP.

Expected values are computed here from the raw CSV / exchangeInfo files with the csv and json
modules, independently of the emulator's numpy code.
"""
from __future__ import annotations

import asyncio
import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.emulator import Emulator
from tests.support.emulator.candles import CandleBook
from tests.support.emulator.client import binance, checked

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
OHLCV = DATA / "ohlcv"
INFO_2023 = DATA / "raw" / "Binance_API" / "exchangeInfoCompact.json.gz"
INFO_2021 = DATA / "raw" / "ohlcv_import" / "exchange_info.json.gz"
H = 3_600_000
START = 1_614_556_800_000  # 2021-03-01T00:00:00Z
Q8 = Decimal("0.00000001")
CHECKOUT = Path(__file__).resolve().parents[3]


def candles(pair: str) -> list[tuple[int, float, float, float, float, float]]:
    with open(OHLCV / "1h" / f"{pair}.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return [(int(r[0]), *map(float, r[1:])) for r in rows]  # type: ignore[misc]


def exchange_info(path: Path) -> dict[str, dict]:
    with gzip.open(path, "rt") as fh:
        return {s["symbol"]: s for s in json.load(fh)["symbols"]}


def filters(entry: dict) -> dict[str, dict]:
    return {f["filterType"]: f for f in entry["filters"]}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def market():
    """A read-only emulator at START (tests using it must not trade, move time or set faults)."""
    with checked(start_ms=START, seed=7) as emu:
        yield emu


@pytest.fixture
def emu():
    with checked(start_ms=START, seed=1, balances={"USDT": "10000"}) as e:
        yield e


# -- markets ------------------------------------------------------------------------------
def test_load_markets_are_the_real_exchange_info_for_the_pairs_with_data(market):
    info = exchange_info(INFO_2023)
    pairs = {p.stem.replace("_", "") for p in (OHLCV / "1h").glob("*.csv")}

    async def body():
        before = len(market.requests)
        async with binance(market) as ex:
            markets = await ex.load_markets()
        paths = [r.path for r in market.request_log()[before:]]
        async with binance(market, fetchCurrencies=False, fetchMargins=False) as ex:
            before2 = len(market.requests)
            await ex.load_markets()
            paths2 = [r.path for r in market.request_log()[before2:]]
        return markets, paths, paths2, ex

    markets, paths, paths2, _ = run(body())
    assert {m["id"] for m in markets.values()} == pairs and len(pairs) == 126
    btc = markets["BTC/USDT"]
    f = filters(info["BTCUSDT"])
    assert btc["precision"]["price"] == float(f["PRICE_FILTER"]["tickSize"])
    assert btc["precision"]["amount"] == float(f["LOT_SIZE"]["stepSize"])
    assert btc["limits"]["amount"]["min"] == float(f["LOT_SIZE"]["minQty"])
    assert btc["limits"]["cost"]["min"] == float(f["NOTIONAL"]["minNotional"])
    inactive = {m["id"] for m in markets.values() if not m["active"]}
    assert inactive == {s for s in pairs if info[s]["status"] != "TRADING"}
    assert len(inactive) == 9 and "COCOSUSDT" in inactive
    # with keys, ccxt's load_markets asks the signed sapi endpoints too; they answer
    assert "/sapi/v1/capital/config/getall" in paths and "/sapi/v1/margin/allPairs" in paths
    assert "/api/v3/exchangeInfo" in paths
    assert paths2 == ["/api/v3/exchangeInfo"]


def test_the_2021_exchange_info_serves_its_115_pairs_with_min_notional():
    with checked(start_ms=START, exchange_info=INFO_2021) as e:
        async def body():
            async with binance(e) as ex:
                return await ex.load_markets()
        markets = run(body())
    info = exchange_info(INFO_2021)
    pairs = {p.stem.replace("_", "") for p in (OHLCV / "1h").glob("*.csv")}
    assert {m["id"] for m in markets.values()} == pairs & set(info)
    assert len(markets) == 115
    assert markets["BTC/USDT"]["limits"]["cost"]["min"] == float(filters(info["BTCUSDT"])["MIN_NOTIONAL"]["minNotional"])


def test_fetch_time_is_the_wall_clock_plus_the_skew_switch(market):
    async def body():
        async with binance(market) as ex:
            t0 = time.time() * 1000
            server = await ex.fetch_time()
            t1 = time.time() * 1000
        return t0, server, t1

    t0, server, t1 = run(body())
    assert t0 - 5 <= server <= t1 + 5


# -- klines -------------------------------------------------------------------------------
def test_klines_are_the_recorded_candles_and_only_closed_ones():
    eth = candles("ETH_USDT")
    with checked(start_ms=START - 1) as e:
        async def body():
            async with binance(e) as ex:
                before = await ex.fetch_ohlcv("ETH/USDT", "1h", limit=1)  # 1 ms before the close: not yet
                e.set_time(START + H // 2)  # mid-candle: the START candle is still open
                latest = await ex.fetch_ohlcv("ETH/USDT", "1h", limit=5)
                since = await ex.fetch_ohlcv("ETH/USDT", "1h", since=START - 10 * H, limit=3)
                future = await ex.fetch_ohlcv("ETH/USDT", "1h", since=START, limit=3)
                return before, latest, since, future
        before, latest, since, future = run(body())
    assert before[0][0] == START - 2 * H
    by_ts = {r[0]: list(r) for r in eth}
    assert [c[0] for c in latest] == [START - k * H for k in range(5, 0, -1)]
    assert all(c == by_ts[c[0]] for c in latest + since)
    assert [c[0] for c in since] == [START - 10 * H, START - 9 * H, START - 8 * H]
    assert future == []


def test_klines_keep_the_real_gaps():
    btc = candles("BTC_USDT")
    gap_start = 1_608_552_000_000  # 2020-12-21T12:00Z, two hours before the 14-18h outage
    with checked(start_ms=START) as e:
        async def body():
            async with binance(e) as ex:
                return await ex.fetch_ohlcv("BTC/USDT", "1h", since=gap_start, limit=8)
        got = run(body())
    expected = [list(r) for r in btc if r[0] >= gap_start][:8]
    assert got == expected
    assert any(b[0] - a[0] > H for a, b in zip(got, got[1:]))


def aggregate_4h(rows, now_ms):
    buckets: dict[int, list] = {}
    for r in rows:
        buckets.setdefault(r[0] - r[0] % (4 * H), []).append(r)
    out = []
    for ts in sorted(buckets):
        if ts + 4 * H > now_ms:
            continue
        b = buckets[ts]
        out.append([ts, b[0][1], max(x[2] for x in b), min(x[3] for x in b), b[-1][4], sum(x[5] for x in b)])
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offset_h=st.integers(min_value=-400, max_value=400),
       minute=st.sampled_from([0, 1, 59]) | st.integers(min_value=0, max_value=59), ms=st.sampled_from([0, -1, 1]),
       back_h=st.integers(min_value=0, max_value=300), limit=st.integers(min_value=1, max_value=60),
       tf=st.sampled_from(["1h", "4h"]), use_since=st.booleans())
def test_klines_never_show_a_candle_that_has_not_closed(offset_h, minute, ms, back_h, limit, tf, use_since):
    now = START + offset_h * H + minute * 60_000 + ms
    rows = [r for r in candles("DOGE_USDT") if r[0] < START + 500 * H]
    with checked(start_ms=now) as e:
        async def body():
            async with binance(e) as ex:
                since = now - back_h * H if use_since else None
                return since, await ex.fetch_ohlcv("DOGE/USDT", tf, since=since, limit=limit)
        since, got = run(body())
    tf_ms = H if tf == "1h" else 4 * H
    closed = [list(r) for r in rows if r[0] + H <= now] if tf == "1h" else aggregate_4h(rows, now)
    if since is None:
        expected = closed[-limit:]
    else:
        expected = [r for r in closed if r[0] >= since][:limit]
    assert all(c[0] + tf_ms <= now for c in got)
    assert [c[0] for c in got] == [c[0] for c in expected]
    for g, x in zip(got, expected):
        assert g[:5] == pytest.approx(x[:5], rel=1e-12) and g[5] == pytest.approx(x[5], rel=1e-9)
    if tf == "4h":
        assert all(c[0] % (4 * H) == 0 for c in got)


# -- tickers and book ---------------------------------------------------------------------
def test_tickers_are_computed_from_the_last_24_hourly_candles(market):
    async def body():
        async with binance(market) as ex:
            tickers = await ex.fetch_tickers()
            two = await ex.fetch_tickers(["BTC/USDT", "ETH/USDT"])
            book = await ex.fetch_order_book("BTC/USDT", 5)
        return tickers, two, book

    tickers, two, book = run(body())
    assert len(tickers) == 126 and set(two) == {"BTC/USDT", "ETH/USDT"}
    window = [r for r in candles("BTC_USDT") if START - 24 * H <= r[0] < START]
    t = tickers["BTC/USDT"]
    assert len(window) == 24
    assert t["last"] == window[-1][4]
    assert t["open"] == window[0][1]
    assert t["high"] == max(r[2] for r in window) and t["low"] == min(r[3] for r in window)
    assert t["baseVolume"] == pytest.approx(sum(r[5] for r in window), rel=1e-12)
    assert t["quoteVolume"] == pytest.approx(sum(r[4] * r[5] for r in window), rel=1e-12)
    assert t["bid"] == book["bids"][0][0] and t["ask"] == book["asks"][0][0]
    assert t["bid"] < t["last"] * 1.001 and t["ask"] > t["last"] * 0.999 and t["bid"] < t["ask"]


def test_order_book_is_plausible_on_the_grid_and_deterministic_per_seed(market):
    f = filters(exchange_info(INFO_2023)["ETHUSDT"])
    tick, step = Decimal(f["PRICE_FILTER"]["tickSize"]), Decimal(f["LOT_SIZE"]["stepSize"])
    last_close = [r for r in candles("ETH_USDT") if r[0] < START][-1][4]

    async def books(e):
        async with binance(e) as ex:
            return (await ex.fetch_order_book("ETH/USDT", 100), await ex.fetch_order_book("ETH/USDT", 5),
                    await ex.fetch_order_book("ETH/USDT", 1000))

    deep, shallow, thousand = run(books(market))
    with checked(start_ms=START, seed=7) as same, checked(start_ms=START, seed=8) as other:
        again, other_book = run(books(same))[0], run(books(other))[0]
    bids, asks = deep["bids"], deep["asks"]
    assert len(bids) == len(asks) == 100 and len(thousand["bids"]) == 1000
    assert all(a[0] > b[0] for a, b in zip(bids, bids[1:])) and all(a[0] < b[0] for a, b in zip(asks, asks[1:]))
    for price, qty in bids + asks:
        assert Decimal(str(price)) % tick == 0 and Decimal(str(qty)) % step == 0 and qty > 0
    assert bids[0][0] < asks[0][0]
    assert abs((bids[0][0] + asks[0][0]) / 2 / last_close - 1) < 0.002
    assert shallow["bids"] == bids[:5] and thousand["asks"][:100] == asks
    assert again["bids"] == bids and again["asks"] == asks
    assert other_book["bids"] != bids


# -- signing ------------------------------------------------------------------------------
def test_signed_calls_need_the_right_key_secret_and_clock():
    with checked(start_ms=START) as e:
        async def body():
            out = {}
            async with binance(e, fetchCurrencies=False, fetchMargins=False) as ex:
                await ex.load_markets()
                out["ok"] = (await ex.fetch_balance())["USDT"]["free"]
            for name, kwargs in (("key", {"key": "wrong-key"}), ("secret", {"secret": "wrong-secret"})):
                async with binance(e, **kwargs) as ex:
                    try:
                        await ex.fetch_balance()
                    except ccxt.AuthenticationError as exc:
                        out[name] = str(exc)
            e.faults.clock_skew_ms = 20_000  # server 20 s ahead: beyond ccxt's recvWindow of 10 s
            async with binance(e, fetchCurrencies=False, fetchMargins=False) as ex:
                out["public_ok"] = len(await ex.load_markets())
                with pytest.raises(ccxt.InvalidNonce, match="outside of the recvWindow"):
                    await ex.fetch_balance()
            async with binance(e, adjustForTimeDifference=True, fetchCurrencies=False, fetchMargins=False) as ex:
                out["adjusted"] = (await ex.fetch_balance())["USDT"]["free"]
            e.faults.clock_skew_ms = -5_000  # server behind: the client looks 5 s in the future
            async with binance(e) as ex:
                with pytest.raises(ccxt.InvalidNonce, match="ahead of the server"):
                    await ex.fetch_balance()
            e.faults.clock_skew_ms = 7_000  # inside ccxt's 10 s window, outside a 5 s one
            async with binance(e) as ex:
                out["window_ok"] = (await ex.fetch_balance())["USDT"]["free"]
                with pytest.raises(ccxt.InvalidNonce):
                    await ex.fetch_balance({"recvWindow": 5000})
            return out
        out = run(body())
    assert out["ok"] == out["adjusted"] == out["window_ok"] == 10_000
    assert "-2015" in out["key"] and "-1022" in out["secret"]
    assert out["public_ok"] == 126


# -- trading ------------------------------------------------------------------------------
def walk(levels, qty: Decimal):
    fills = []
    for price, size in levels:
        take = min(Decimal(str(size)), qty)
        fills.append((Decimal(str(price)), take))
        qty -= take
        if qty == 0:
            return fills
    raise AssertionError("book too thin for the test")


def test_market_orders_walk_the_book_and_charge_the_fee_in_the_received_asset():
    with checked(start_ms=START, seed=1, balances={"USDT": "1000000"}) as emu:
        _market_orders(emu)


def _market_orders(emu):
    async def body():
        async with binance(emu) as ex:
            await ex.load_markets()
            book = await ex.fetch_order_book("ETH/USDT", 100)
            buy = await ex.create_order("ETH/USDT", "market", "buy", 300, params={"newClientOrderId": "mkt-buy-1"})
            sell = await ex.create_order("ETH/USDT", "market", "sell", 20, params={"newClientOrderId": "mkt-sell-1"})
            by_cost = await ex.create_market_buy_order_with_cost("ETH/USDT", 100)
            trades = await ex.fetch_my_trades("ETH/USDT")
            balance = await ex.fetch_balance()
        return book, buy, sell, by_cost, trades, balance

    book, buy, sell, by_cost, trades, balance = run(body())
    buy_fills = walk(book["asks"], Decimal(300))
    sell_fills = walk(book["bids"], Decimal(20))
    assert len(buy_fills) > 1  # 300 ETH goes through several levels
    assert [(Decimal(f["price"]), Decimal(f["qty"])) for f in buy["info"]["fills"]] == buy_fills
    assert buy["status"] == "closed" and buy["clientOrderId"] == "mkt-buy-1"
    assert all(f["commissionAsset"] == "ETH" for f in buy["info"]["fills"])
    assert all(f["commissionAsset"] == "USDT" for f in sell["info"]["fills"])
    buy_cost = sum((p * q for p, q in buy_fills), Decimal(0))
    sell_proceeds = [(p * q).quantize(Q8, ROUND_HALF_UP) for p, q in sell_fills]
    sell_fee = sum(((x * Decimal("0.001")).quantize(Q8, ROUND_HALF_UP) for x in sell_proceeds), Decimal(0))
    eth_fee = sum(((q * Decimal("0.001")).quantize(Q8, ROUND_HALF_UP) for _, q in buy_fills), Decimal(0))
    cost_fills = [t for t in emu.trades if t.order_id == int(by_cost["id"])]
    spent = sum((t.quote_qty for t in cost_fills), Decimal(0))
    got_eth = sum((t.qty - t.commission for t in cost_fills), Decimal(0))
    assert Decimal(95) < spent <= Decimal(100)
    assert emu.balances["USDT"] == Decimal(1000000) - buy_cost + sum(sell_proceeds) - sell_fee - spent
    assert emu.balances["ETH"] == Decimal(300) - eth_fee - Decimal(20) + got_eth
    assert balance["USDT"]["total"] == float(emu.balances["USDT"])
    assert len(trades) == len(emu.trades)
    first = trades[0]["info"]
    assert set(first) >= {"orderId", "id", "price", "qty", "quoteQty", "commission", "commissionAsset", "time",
                          "isBuyer", "isMaker"}
    assert first["isBuyer"] is True and first["isMaker"] is False and first["time"] == START


def first_through(rows, after_ms, price, side):
    for r in rows:
        if r[0] >= after_ms and (r[3] < price if side == "buy" else r[2] > price):
            return r
    raise AssertionError("no candle trades through")


def test_a_resting_limit_order_fills_when_a_later_candle_trades_through():
    eth = candles("ETH_USDT")
    t0 = START + 3 * H
    window = [r for r in eth if t0 <= r[0] < t0 + 96 * H]
    price = float(Decimal(str(min(r[3] for r in window))) + Decimal("0.01"))  # the window's low trades through
    hit = first_through(eth, t0, price, "buy")
    assert hit[0] > t0  # the order has to wait a few candles
    with checked(start_ms=t0, seed=1, balances={"USDT": "10000"}) as emu:
        async def body():
            async with binance(emu) as ex:
                await ex.load_markets()
                order = await ex.create_order("ETH/USDT", "limit", "buy", 0.5, price, {"newClientOrderId": "lim-1"})
                # exactly at the window's low: touched, never traded through -> no fill
                await ex.create_order("ETH/USDT", "limit", "buy", 0.5, hit[3], {"newClientOrderId": "touch-1"})
                emu.set_time(hit[0] + H - 1)  # the candle that trades through has not closed yet
                waiting = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "lim-1"})
                locked = emu.locked["USDT"]
                emu.set_time(hit[0] + H)
                done = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "lim-1"})
                trades = await ex.fetch_my_trades("ETH/USDT", since=t0)
                touched = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "touch-1"})
                await ex.cancel_order(None, "ETH/USDT", {"origClientOrderId": "touch-1"})
            return order, waiting, locked, done, trades, touched

        order, waiting, locked, done, trades, touched = run(body())
        cost = Decimal(str(price)) * Decimal("0.5")
        assert order["status"] == "open" and waiting["status"] == "open" and waiting["filled"] == 0
        assert touched["status"] == "open" and touched["filled"] == 0
        assert locked == cost + Decimal(str(hit[3])) * Decimal("0.5")
        assert done["status"] == "closed" and done["filled"] == 0.5 and done["clientOrderId"] == "lim-1"
        (trade,) = trades
        assert trade["price"] == price and trade["info"]["isMaker"] is True
        assert trade["timestamp"] == hit[0] + H - 1
        assert emu.locked["USDT"] == 0 and emu.balances["USDT"] == Decimal(10000) - cost
        assert emu.balances["ETH"] == Decimal("0.5") - Decimal("0.0005")


def test_partial_fills_with_the_partial_fill_ratio():
    eth = candles("ETH_USDT")
    last = [r for r in eth if r[0] < START][-1][4]
    price = float((Decimal(str(last)) * Decimal("1.01")).quantize(Decimal("0.01")))
    first = first_through(eth, START, price, "sell")
    second = first_through(eth, first[0] + H, price, "sell")
    with checked(start_ms=START, balances={"ETH": "2", "USDT": "0"}, partial_fill_ratio=0.5) as e:
        async def body():
            async with binance(e) as ex:
                await ex.load_markets()
                await ex.create_order("ETH/USDT", "limit", "sell", 2, price, {"newClientOrderId": "part-1"})
                e.set_time(first[0] + H)
                half = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "part-1"})
                open_orders = await ex.fetch_open_orders("ETH/USDT")
                locked = e.locked["ETH"]
                e.set_time(second[0] + H)
                full = await ex.fetch_order(None, "ETH/USDT", {"origClientOrderId": "part-1"})
            return half, open_orders, locked, full
        half, open_orders, locked, full = run(body())
        trades = e.trades
    assert half["status"] == "open" and half["filled"] == 1 and half["info"]["status"] == "PARTIALLY_FILLED"
    assert [o["clientOrderId"] for o in open_orders] == ["part-1"] and locked == Decimal(1)
    assert full["status"] == "closed" and full["filled"] == 2
    assert [t.time for t in trades] == [first[0] + H - 1, second[0] + H - 1]
    proceeds = [Decimal(str(price)) * 1 for _ in trades]
    fees = [(p * Decimal("0.001")).quantize(Q8, ROUND_HALF_UP) for p in proceeds]
    assert [t.commission for t in trades] == fees and all(t.commission_asset == "USDT" for t in trades)


def test_cancel_and_client_order_ids_behave_like_binance(emu):
    async def body():
        out = {}
        async with binance(emu) as ex:
            await ex.load_markets()
            await ex.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"newClientOrderId": "dup-1"})
            with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
                await ex.create_order("BTC/USDT", "limit", "buy", 0.01, 39000, {"newClientOrderId": "dup-1"})
            out["locked"] = emu.locked["USDT"]
            cancelled = await ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "dup-1"})
            out["cancel_status"] = cancelled["status"]
            out["free_after_cancel"] = emu.free["USDT"]
            with pytest.raises(ccxt.OrderNotFound):
                await ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "dup-1"})
            with pytest.raises(ccxt.OrderNotFound):
                await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "never-sent"})
            # like Binance, an id is only unique among *open* orders
            again = await ex.create_order("BTC/USDT", "limit", "buy", 0.01, 39000, {"newClientOrderId": "dup-1"})
            out["again"] = again["id"]
            ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
            out["open"] = [o["id"] for o in await ex.fetch_open_orders()]
        return out

    out = run(body())
    assert out["locked"] == Decimal(400) and out["cancel_status"] == "canceled"
    assert out["free_after_cancel"] == Decimal(10000)
    assert [o.status for o in emu.order_list] == ["CANCELED", "NEW"]
    assert emu.orders["dup-1"].order_id == int(out["again"]) and out["open"] == [out["again"]]


def test_filter_violations_get_binances_codes_and_change_nothing(emu):
    async def place(ex, **params):
        return await ex.privatePostOrder({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT",
                                          "timeInForce": "GTC", **params})

    async def body():
        errors = {}
        async with binance(emu) as ex:
            await ex.load_markets()
            cases = {
                "lot": dict(quantity="0.00001", price="1400.00"),
                "step": dict(quantity="0.00015", price="1400.00"),
                "tick": dict(quantity="0.01", price="1400.005"),
                "notional": dict(quantity="0.001", price="1400.00"),
                "percent": dict(quantity="0.01", price="9000.00"),
                "funds": dict(quantity="10", price="1400.00"),
            }
            for name, params in cases.items():
                try:
                    await place(ex, **params)
                except ccxt.BaseError as exc:
                    errors[name] = exc
                    replies[name] = json.loads(ex.last_http_response)
            for name, request in {
                "market_lot": {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "5000"},
                "closed": {"symbol": "COCOSUSDT", "side": "BUY", "type": "MARKET", "quantity": "100"},
                "symbol": {"symbol": "NOPEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"},
            }.items():
                try:
                    await ex.privatePostOrder(request)
                except ccxt.BaseError as exc:
                    errors[name] = exc
                    replies[name] = json.loads(ex.last_http_response)
        return errors

    replies: dict[str, dict] = {}
    errors = run(body())
    for name, filt in (("lot", "LOT_SIZE"), ("step", "LOT_SIZE"), ("tick", "PRICE_FILTER"),
                       ("notional", "NOTIONAL"), ("percent", "PERCENT_PRICE_BY_SIDE"),
                       ("market_lot", "MARKET_LOT_SIZE")):
        assert replies[name] == {"code": -1013, "msg": f"Filter failure: {filt}"}
    assert isinstance(errors["lot"], ccxt.InvalidOrder) and isinstance(errors["tick"], ccxt.InvalidOrder)
    assert isinstance(errors["notional"], ccxt.BadRequest)
    assert isinstance(errors["funds"], ccxt.InsufficientFunds)
    assert replies["funds"] == {"code": -2010, "msg": "Account has insufficient balance for requested action."}
    assert replies["closed"] == {"code": -2010, "msg": "Market is closed."}
    assert isinstance(errors["closed"], ccxt.MarketClosed)
    assert isinstance(errors["symbol"], ccxt.BadSymbol) and "-1121" in str(errors["symbol"])
    assert emu.order_list == [] and emu.balances["USDT"] == Decimal(10000) and emu.locked["USDT"] == 0


def test_min_notional_filter_of_the_2021_file():
    with checked(start_ms=START, exchange_info=INFO_2021) as e:
        async def body():
            async with binance(e) as ex:
                await ex.load_markets()
                with pytest.raises(ccxt.BadRequest, match="Filter failure: MIN_NOTIONAL"):
                    await ex.create_order("ETH/USDT", "limit", "buy", 0.005, 1400)  # 7 USDT < 10
                with pytest.raises(ccxt.BadRequest, match="Filter failure: PERCENT_PRICE"):
                    await ex.create_order("ETH/USDT", "limit", "buy", 0.01, 100)
        run(body())


# -- weights and faults -------------------------------------------------------------------
def test_weight_limit_gives_429_with_retry_after_then_a_418_ban():
    with checked(start_ms=START, weight_limit=100) as e:
        e.meter.ban_grace_ms = 0

        async def body():
            statuses, used, retry = [], [], []
            async with aiohttp.ClientSession() as s:
                for _ in range(40):
                    async with s.get(e.url + "/api/v3/exchangeInfo", params={"symbol": "BTCUSDT"}) as r:
                        statuses.append(r.status)
                        used.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
                        retry.append(r.headers.get("Retry-After"))
                        if r.status == 418:
                            break
            async with binance(e) as ex:
                with pytest.raises(ccxt.DDoSProtection, match="418"):
                    await ex.fetch_time()
            return statuses, used, retry
        statuses, used, retry = run(body())
    first_429 = statuses.index(429)
    assert all(u <= 100 for s, u in zip(statuses, used) if s == 200)
    assert used[first_429] > 100 and 1 <= int(retry[first_429]) <= 60
    assert statuses[-1] == 418 and 60 < int(retry[-1]) <= 120
    assert e.max_weight_1m >= 120


def test_every_fault_switch_through_ccxt():
    with checked(start_ms=START, seed=3) as e:
        async def body():
            out = {}
            async with binance(e, fetchCurrencies=False, fetchMargins=False) as ex:
                await ex.load_markets()
                e.faults.latency_s = 0.2
                t0 = time.perf_counter()
                await ex.fetch_time()
                out["latency"] = time.perf_counter() - t0
                e.faults.clear()
                e.faults.error_5xx_rate = 1.0
                out["5xx"] = []
                for _ in range(8):
                    with pytest.raises(ccxt.OperationFailed) as info:
                        await ex.fetch_ticker("BTC/USDT")
                    out["5xx"].append(type(info.value))
                e.faults.clear()
                e.faults.rate_429 = 1.0
                with pytest.raises(ccxt.DDoSProtection, match="429"):
                    await ex.fetch_time()
                e.faults.clear()
                e.faults.reset_rate = 1.0
                with pytest.raises(ccxt.NetworkError):
                    await ex.fetch_time()
                e.faults.clear()
                e.faults.ban_418 = True
                with pytest.raises(ccxt.DDoSProtection, match="418"):
                    await ex.fetch_time()
                e.faults.clear()
                e.faults.malformed_rate = 1.0
                out["malformed"] = await ex.fetch_time()
                e.faults.clear()
                e.faults.error_5xx_rate = 1.0
                e.faults.symbols = {"ETH/USDT"}
                out["btc"] = len(await ex.fetch_ohlcv("BTC/USDT", "1h", limit=3))
                with pytest.raises(ccxt.OperationFailed):
                    await ex.fetch_ohlcv("ETH/USDT", "1h", limit=3)
                out["time_ok"] = await ex.fetch_time() is not None
                e.faults.clear()
            async with binance(e, timeout_ms=300, fetchCurrencies=False, fetchMargins=False) as ex:
                await ex.load_markets()
                e.faults.timeout_rate, e.faults.hang_s = 1.0, 5.0
                with pytest.raises(ccxt.RequestTimeout):
                    await ex.fetch_time()
                e.faults.clear()
            async with aiohttp.ClientSession() as s:
                e.faults.reset_rate = 1.0
                with pytest.raises(aiohttp.ClientOSError, match="reset"):
                    async with s.get(e.url + "/api/v3/ping") as r:
                        await r.text()
                e.faults.clear()
                e.faults.malformed_rate = 1.0
                async with s.get(e.url + "/api/v3/ticker/24hr", params={"symbol": "BTCUSDT"}) as r:
                    raw = await r.text()
                e.faults.clear()
            with pytest.raises(ValueError):
                json.loads(raw)
            return out
        out = run(body())
    assert out["latency"] >= 0.2
    # 500/503 carry Binance JSON (-1000/-1001 -> OperationFailed), 502 -> ExchangeNotAvailable, 504 -> RequestTimeout
    assert set(out["5xx"]) <= {ccxt.ExchangeNotAvailable, ccxt.OperationFailed, ccxt.RequestTimeout}
    assert len(set(out["5xx"])) >= 2
    assert out["malformed"] is None
    assert out["btc"] == 3 and out["time_ok"]


def test_an_order_fault_may_strike_after_the_order_was_placed():
    with checked(start_ms=START, seed=5) as e:
        async def body():
            async with binance(e, timeout_ms=500, fetchCurrencies=False, fetchMargins=False) as ex:
                await ex.load_markets()
                e.faults.error_5xx_rate, e.faults.after_rate = 1.0, 1.0
                with pytest.raises(ccxt.OperationFailed):
                    await ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"newClientOrderId": "after-1"})
                e.faults.error_5xx_rate, e.faults.after_rate = 0.0, 0.0
                e.faults.timeout_rate, e.faults.hang_s = 1.0, 5.0
                with pytest.raises(ccxt.RequestTimeout):
                    await ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"newClientOrderId": "before-1"})
                e.faults.clear()
                found = await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "after-1"})
                with pytest.raises(ccxt.OrderNotFound):
                    await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "before-1"})
                return found
        found = run(body())
    assert found["status"] == "closed" and found["filled"] == 0.01
    assert list(e.orders) == ["after-1"]


def test_random_faults_are_reproducible_per_seed():
    def statuses(seed):
        with checked(start_ms=START, seed=seed) as e:
            e.faults.error_5xx_rate = e.faults.rate_429 = 0.3

            async def body():
                out = []
                async with aiohttp.ClientSession() as s:
                    for _ in range(30):
                        async with s.get(e.url + "/api/v3/ping") as r:
                            out.append(r.status)
                return out
            first = run(body())
            e.reseed(seed)
            assert run(body()) == first
            return first

    a, b, c = statuses(11), statuses(11), statuses(12)
    assert a == b and a != c and {200, 429} <= set(a)


# -- persistence, CLI, data directories ---------------------------------------------------
def test_state_file_survives_a_restart(tmp_path):
    state = tmp_path / "emu.json"
    with checked(start_ms=START, state_file=state) as e:
        async def body():
            async with binance(e) as ex:
                await ex.load_markets()
                await ex.create_order("ETH/USDT", "market", "buy", 1, params={"newClientOrderId": "s-1"})
                await ex.create_order("ETH/USDT", "limit", "buy", 1, 1300, {"newClientOrderId": "s-2"})
        run(body())
        before = (e.balances, e.locked, [(o.client_id, o.status) for o in e.order_list], e.trades, e.now_ms)
    again = Emulator(OHLCV, INFO_2023, START, state_file=state)
    after = (again.balances, again.locked, [(o.client_id, o.status) for o in again.order_list], again.trades,
             again.now_ms)
    assert after == before and again.orders["s-2"].locked == Decimal(1300)


def test_flat_directories_and_the_4h_alignment(tmp_path):
    flat = tmp_path / "sample"
    flat.mkdir()
    for name in ("BTC_USDT.csv", "ETH_USDT.csv"):
        shutil.copy(OHLCV / "1h" / name, flat / name)
    book = CandleBook(flat)
    assert book.primary_tf == H and book.symbols == {"BTCUSDT", "ETHUSDT"}
    four = book.series("ETHUSDT", 4 * H)
    assert four is not None and all(int(t) % (4 * H) == 0 for t in four.ts)


def test_command_line_serves_until_interrupted():
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.emulator", "--port", "0",
                             "--data", str(OHLCV / "1h"), "--start", "2021-03-01T00:00:00Z",
                             "--balance", "USDT=500"], cwd=CHECKOUT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/api/v3/ping", timeout=10) as r:
            assert r.status == 200 and json.load(r) == {}
        with urllib.request.urlopen(url + "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1", timeout=10) as r:
            (row,) = json.load(r)
        assert row[0] == START - H
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


# -- matching engine invariants ----------------------------------------------------------
order_step = st.tuples(
    st.sampled_from(["market", "limit", "cancel", "advance"]),
    st.sampled_from(["BUY", "SELL"]),
    st.sampled_from(["ETHUSDT", "DOGEUSDT"]),
    st.floats(min_value=0.02, max_value=0.6),  # share of the available balance
    st.floats(min_value=0.97, max_value=1.03),  # limit price relative to the last close
    st.integers(min_value=1, max_value=12),  # hours to advance
)


def assert_balances_follow_trades(emu, start: dict) -> None:
    """Every asset's total is its starting amount moved by every trade and its commission, and
    nothing is negative (the emulator's own books, whatever orders produced the trades)."""
    acc = emu.account
    expected = dict(start)
    for t in acc.trades:
        r = emu.exchange.rules[t.symbol]
        sign = 1 if t.is_buyer else -1
        expected[r.base] = expected.get(r.base, Decimal(0)) + sign * t.qty
        expected[r.quote] = expected.get(r.quote, Decimal(0)) - sign * t.quote_qty
        expected[t.commission_asset] -= t.commission
    totals = acc.totals()
    for asset in set(expected) | set(totals):
        assert totals.get(asset, Decimal(0)) == expected.get(asset, Decimal(0)), asset
    assert all(v >= 0 for v in acc.free.values()) and all(v >= 0 for v in acc.locked.values())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(order_step, min_size=1, max_size=25), ratio=st.sampled_from([1.0, 0.5, 0.3]))
def test_balances_always_equal_the_start_plus_the_trades(steps, ratio):
    from tests.support.emulator.rules import ApiError

    emu = Emulator(OHLCV, INFO_2023, START, seed=2, balances={"USDT": "5000", "ETH": "2", "DOGE": "20000"},
                   partial_fill_ratio=ratio)
    start = {a: Decimal(v) for a, v in {"USDT": "5000", "ETH": "2", "DOGE": "20000"}.items()}
    for n, (kind, side, symbol, share, rel, hours) in enumerate(steps):
        rules = emu.exchange.rules[symbol]
        if kind == "advance":
            emu.advance(hours * H)
            continue
        if kind == "cancel":
            open_ = emu.account.open_orders(symbol)
            if open_:
                emu.account.cancel(rules, open_[0], emu.now_ms)
            continue
        last = emu.avg_price(symbol)
        spend = emu.free.get(rules.quote, Decimal(0)) * Decimal(repr(share)) / last
        have = emu.free.get(rules.base, Decimal(0)) * Decimal(repr(share))
        qty = ((spend if side == "BUY" else have) / rules.step).to_integral_value(ROUND_DOWN) * rules.step
        price = ((last * Decimal(repr(rel))) / rules.tick).to_integral_value(ROUND_DOWN) * rules.tick
        params = {"side": side, "type": kind.upper(), "quantity": f"{qty:f}"}
        if kind == "limit":
            params.update(price=f"{price:f}", timeInForce="GTC")
        try:
            emu.account.place(rules, emu, params, emu.now_ms, f"h{n}")
        except ApiError as err:
            assert err.code in (-1013, -2010), err.msg  # filters / balance, never anything else

    acc = emu.account
    for t in acc.trades:
        r = emu.exchange.rules[t.symbol]
        received = t.qty if t.is_buyer else t.quote_qty
        assert t.commission == (received * Decimal("0.001")).quantize(Q8, ROUND_HALF_UP)
        assert t.commission_asset == (r.base if t.is_buyer else r.quote)
    assert_balances_follow_trades(emu, start)
    for asset in acc.locked:
        held = sum((o.locked for o in acc.open_orders()
                    if (emu.exchange.rules[o.symbol].quote if o.side == "BUY" else emu.exchange.rules[o.symbol].base)
                    == asset), Decimal(0))
        assert acc.locked[asset] == held
    for o in acc.orders:
        assert o.executed_qty == sum((acc.trades[i - 1].qty for i in o.trade_ids), Decimal(0)) <= o.orig_qty
        assert (o.status == "FILLED") == (o.executed_qty == o.orig_qty and o.executed_qty > 0)
        if o.type != "MARKET":
            assert all(acc.trades[i - 1].price <= o.price if o.side == "BUY" else acc.trades[i - 1].price >= o.price
                       for i in o.trade_ids)
