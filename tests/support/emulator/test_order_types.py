"""Stop, take-profit, trailing and OCO orders and cancelReplace in the emulator, through real ccxt.

Most tests run on a synthetic market (a flat 100 USDT ETH/USDT, then the candles each test
designs) with the real 2023 exchangeInfo, so every trigger and fill can be worked out by hand:
a candle's path is open, low, high, close when it rises and open, high, low, close when it falls.
Taker fills at a trigger are checked against ``emu.book_at`` (the book centred on the trigger).
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path

import ccxt.async_support as ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.emulator import DEFAULT_EXCHANGE_INFO, DEFAULT_OHLCV_DIR, Emulator, client
from tests.support.emulator.client import checked
from tests.support.emulator.rules import ApiError
from tests.support.emulator.test_emulator import assert_balances_follow_trades

H = 3_600_000
T0 = 1_672_531_200_000  # 2023-01-01T00:00:00Z: synthetic candles start here
WARM = 30  # flat candles at 100 before START (the last close is 100)
START = T0 + WARM * H
Q8 = Decimal("0.00000001")
FEE = Decimal("0.001")
D = Decimal


def run(coro):
    return asyncio.run(coro)


def binance(emu: Emulator):
    """Markets loaded; the currency and margin endpoints these tests do not need are skipped."""
    return client.binance(emu, load_markets=True, fetchCurrencies=False, fetchMargins=False)


def write_market(folder: Path, moves: list[tuple[float, float, float, float]], volume: float = 1000.0) -> None:
    """ETH_USDT.csv: WARM flat candles at 100, then ``moves`` (open, high, low, close) from START."""
    rows = [(T0 + i * H, 100.0, 100.0, 100.0, 100.0) for i in range(WARM)]
    rows += [(START + i * H, *m) for i, m in enumerate(moves)]
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{t},{o},{h},{low},{c},{volume}\n" for t, o, h, low, c in rows)
    (folder / "ETH_USDT.csv").write_text("timestamp_ms,open,high,low,close,volume\n" + text)


def patched_info(folder: Path, order_types: list[str] | None = None, filters: dict | None = None,
                 **flags) -> Path:
    """The real exchangeInfo with ETHUSDT's orderTypes, filters or flags changed."""
    with gzip.open(DEFAULT_EXCHANGE_INFO, "rt") as fh:
        info = json.load(fh)
    for s in info["symbols"]:
        if s["symbol"] == "ETHUSDT":
            if order_types is not None:
                s["orderTypes"] = order_types
            for f in s["filters"]:
                f.update((filters or {}).get(f["filterType"], {}))
            s.update(flags)
    path = folder / "exchange_info.json"
    path.write_text(json.dumps(info))
    return path


@contextlib.contextmanager
def market(tmp_path: Path, moves, balances=None, **kwargs):
    write_market(tmp_path / "ohlcv", moves)
    kwargs.setdefault("exchange_info", DEFAULT_EXCHANGE_INFO)
    with checked(ohlcv_dir=tmp_path / "ohlcv", start_ms=START, seed=3,
                 balances=balances or {"USDT": "1000", "ETH": "2"}, **kwargs) as emu:
        yield emu


def closed(i: int) -> int:
    """Trade/trigger time of synthetic candle ``i``: its close time."""
    return START + (i + 1) * H - 1


def taker_fills(emu, candle: int, trigger: str, side: str, qty: D, limit: D | None = None):
    """What a triggered order should get: the book centred on the trigger price, walked to ``limit``."""
    book = emu.book_at("ETHUSDT", START + candle * H, D(trigger))
    out, left = [], qty
    for p, q in book.levels("bids" if side == "SELL" else "asks", 200):
        if limit is not None and (p < limit if side == "SELL" else p > limit):
            break
        take = min(q, left)
        out.append((p, take))
        left -= take
        if left == 0:
            break
    return out


def trade_rows(emu, order_id):
    return [(t.price, t.qty) for t in emu.trades if t.order_id == order_id]


def q8(x: D) -> D:
    return x.quantize(Q8, ROUND_HALF_UP)


async def error_of(ex, coro) -> tuple[dict, Exception]:
    with pytest.raises(ccxt.BaseError) as info:
        await coro
    return json.loads(ex.last_http_response), info.value


# -- stop-loss / take-profit ----------------------------------------------------------------
def test_a_stop_limit_sell_triggers_at_its_stop_and_fills_as_taker(tmp_path):
    with market(tmp_path, [(100, 100.5, 95, 96)]) as emu:  # falling: 100 -> 100.5 -> 95 -> 96
        async def body():
            async with binance(emu) as ex:
                placed = await ex.create_order("ETH/USDT", "limit", "sell", 1, 97,
                                               {"stopLossPrice": 98, "newClientOrderId": "sl-1"})
                touch = await ex.create_order("ETH/USDT", "limit", "sell", 0.5, 94, {"stopLossPrice": 95})
                waiting = await ex.fetch_order(placed["id"], "ETH/USDT")
                locked = emu.locked["ETH"]
                emu.set_time(START + H)
                done = await ex.fetch_order(placed["id"], "ETH/USDT")
                touched = await ex.fetch_order(touch["id"], "ETH/USDT")
                trades = await ex.fetch_my_trades("ETH/USDT")
            return placed, waiting, locked, done, touched, trades

        placed, waiting, locked, done, touched, trades = run(body())
        expected = taker_fills(emu, 0, "98", "SELL", D(1), D(97))
        got = trade_rows(emu, int(placed["id"]))
        touch_fills = trade_rows(emu, int(touched["id"]))
        touch_expected = taker_fills(emu, 0, "95", "SELL", D("0.5"), D(94))
    info = placed["info"]
    assert info["type"] == "STOP_LOSS_LIMIT" and info["stopPrice"] == "98.00000000" and info["workingTime"] == -1
    assert placed["triggerPrice"] == 98 and placed["type"] == "limit" and placed["status"] == "open"
    assert waiting["info"]["isWorking"] is False and waiting["info"]["workingTime"] == -1 and locked == D("1.5")
    assert done["status"] == "closed" and done["filled"] == 1 and done["info"]["workingTime"] == closed(0)
    assert done["info"]["isWorking"] is True
    assert got == expected and all(D(97) <= p < D(98) for p, _ in got)
    assert touched["status"] == "closed" and touch_fills == touch_expected  # the low touches 95: a trigger
    assert all(t["takerOrMaker"] == "taker" and t["timestamp"] == closed(0) for t in trades)
    proceeds = sum((q8(p * q) for p, q in got + touch_fills), D(0))
    fee = sum((q8(q8(p * q) * FEE) for p, q in got + touch_fills), D(0))
    assert emu.balances == {"ETH": D("0.5"), "USDT": D(1000) + proceeds - fee} and emu.locked["ETH"] == 0


def test_a_stop_limit_the_market_gapped_through_rests_unfilled_until_traded_through(tmp_path):
    moves = [(94, 96, 93, 95),  # opens below stop 98 and limit 97: triggered at 94, nothing to sell to at 97
             (95, 97, 94, 96.5),  # touches 97: a touch is no fill
             (96.5, 97.5, 96, 97)]  # trades through 97
    with market(tmp_path, moves) as emu:
        async def body():
            async with binance(emu) as ex:
                o = await ex.create_order("ETH/USDT", "limit", "sell", 1, 97, {"stopLossPrice": 98})
                # same trigger at the open, but the rest of that candle (up to 96) trades through 95.5
                rebound = await ex.create_order("ETH/USDT", "limit", "sell", 0.5, 95.5, {"stopLossPrice": 98})
                out = []
                for i in range(3):
                    emu.set_time(START + (i + 1) * H)
                    out.append(await ex.fetch_order(o["id"], "ETH/USDT"))
            return out, int(o["id"]), int(rebound["id"])

        after, oid, rid = run(body())
        trades = [(t.order_id, t.price, t.qty, t.is_maker, t.time) for t in emu.trades]
    assert [a["info"]["status"] for a in after] == ["NEW", "NEW", "FILLED"]
    assert all(a["info"]["workingTime"] == closed(0) and a["info"]["isWorking"] for a in after)
    assert trades == [(rid, D("95.5"), D("0.5"), True, closed(0)), (oid, D(97), D(1), True, closed(2))]


def test_market_stop_loss_and_take_profit_where_the_symbol_allows_them(tmp_path):
    info = patched_info(tmp_path, ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                                   "TAKE_PROFIT_LIMIT"])
    moves = [(100, 100.2, 96, 96.5), (96.5, 104, 96.4, 103.8)]
    with market(tmp_path, moves, exchange_info=info) as emu:
        async def body():
            async with binance(emu) as ex:
                sl = await ex.create_order("ETH/USDT", "market", "sell", 1, None, {"stopLossPrice": 97})
                tp = await ex.create_order("ETH/USDT", "market", "sell", 1, None, {"takeProfitPrice": 103})
                buy = await ex.create_order("ETH/USDT", "market", "buy", 0.5, None, {"stopLossPrice": 101})
                locked = emu.locked["USDT"]
                emu.set_time(START + 2 * H)
                return sl, tp, buy, locked, [await ex.fetch_order(o["id"], "ETH/USDT") for o in (sl, tp, buy)]

        sl, tp, buy, locked, after = run(body())
        want = {"sl": taker_fills(emu, 0, "97", "SELL", D(1)), "tp": taker_fills(emu, 1, "103", "SELL", D(1)),
                "buy": taker_fills(emu, 1, "101", "BUY", D("0.5"))}
        got = {k: trade_rows(emu, int(o["id"])) for k, o in (("sl", sl), ("tp", tp), ("buy", buy))}
    assert [o["info"]["type"] for o in (sl, tp, buy)] == ["STOP_LOSS", "TAKE_PROFIT", "STOP_LOSS"]
    assert sl["type"] == "market" and tp["takeProfitPrice"] == 103 and sl["triggerPrice"] == 97
    assert locked == D("50.5")  # a buy stop-market locks stopPrice x quantity
    assert got == want and [a["status"] for a in after] == ["closed"] * 3
    assert [a["info"]["workingTime"] for a in after] == [closed(0), closed(1), closed(1)]
    assert emu.locked == {"USDT": 0, "ETH": 0}


def test_market_stops_are_refused_where_the_exchange_info_lacks_them(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                with pytest.raises(ccxt.InvalidOrder, match="triggerPrice parameter is not allowed"):
                    await ex.create_order("ETH/USDT", "market", "sell", 1, None, {"stopLossPrice": 97})
                before = emu.request_count("/api/v3/order")
                reply, exc = await error_of(ex, ex.private_post_order(
                    {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "1", "stopPrice": "97"}))
                return before, reply, exc
        before, reply, exc = run(body())
    assert before == 0  # ccxt itself refused: the real orderTypes have no STOP_LOSS
    assert reply == {"code": -1013, "msg": "Stop loss orders are not supported for this symbol."}
    assert emu.order_list == []


def test_stops_that_would_trigger_at_once_are_rejected(tmp_path):
    cases = {  # (side, type, stopPrice) at a last price of 100
        ("SELL", "STOP_LOSS_LIMIT", "100.00"): False, ("SELL", "STOP_LOSS_LIMIT", "101.00"): False,
        ("SELL", "STOP_LOSS_LIMIT", "99.99"): True, ("BUY", "STOP_LOSS_LIMIT", "100.00"): False,
        ("BUY", "STOP_LOSS_LIMIT", "100.01"): True, ("SELL", "TAKE_PROFIT_LIMIT", "100.00"): False,
        ("SELL", "TAKE_PROFIT_LIMIT", "100.01"): True, ("BUY", "TAKE_PROFIT_LIMIT", "100.00"): False,
        ("BUY", "TAKE_PROFIT_LIMIT", "99.99"): True,
    }
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            out = {}
            async with binance(emu) as ex:
                for (side, otype, stop), ok in cases.items():
                    params = {"symbol": "ETHUSDT", "side": side, "type": otype, "quantity": "0.1", "price": stop,
                              "stopPrice": stop, "timeInForce": "GTC", "newOrderRespType": "RESULT"}
                    if ok:
                        out[side, otype, stop] = (await ex.private_post_order(params))["status"]
                    else:
                        out[side, otype, stop] = await error_of(ex, ex.private_post_order(params))
                with pytest.raises(ccxt.OrderImmediatelyFillable):
                    await ex.create_order("ETH/USDT", "limit", "sell", 0.1, 100, {"stopLossPrice": 100})
            return out

        out = run(body())
        n_orders = len(emu.order_list)
    for key, ok in cases.items():
        if ok:
            assert out[key] == "NEW"
        else:
            reply, exc = out[key]
            assert reply == {"code": -2010, "msg": "Stop price would trigger immediately."}, key
            assert isinstance(exc, ccxt.OrderImmediatelyFillable)
    assert n_orders == sum(cases.values())


def test_stop_order_parameter_and_filter_errors_change_nothing(tmp_path):
    base = {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "quantity": "0.1", "price": "97",
            "stopPrice": "98", "timeInForce": "GTC"}
    cases = {
        "no stop": ({"stopPrice": None}, -1102, "Param 'stopPrice' or 'trailingDelta' must be sent, but both were "
                                               "empty/null!"),
        "no tif": ({"timeInForce": None}, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, "
                                                 "or malformed."),
        "no price": ({"price": None}, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or "
                                             "malformed."),
        "limit+stop": ({"type": "LIMIT"}, -1106, "Parameter 'stopPrice' sent when not required."),
        "maker+tif": ({"type": "LIMIT_MAKER", "stopPrice": None, "price": "101"}, -1106,
                      "Parameter 'timeInForce' sent when not required."),
        "limit+trail": ({"type": "LIMIT", "stopPrice": None, "trailingDelta": "100"}, -1106,
                        "Parameter 'trailingDelta' sent when not required."),
        "bad type": ({"type": "STOP"}, -1116, "Invalid orderType."),
        "stop tick": ({"stopPrice": "98.005"}, -1013, "Filter failure: PRICE_FILTER"),
        "lot": ({"quantity": "0.00001"}, -1013, "Filter failure: LOT_SIZE"),
        "notional": ({"quantity": "0.01"}, -1013, "Filter failure: NOTIONAL"),
        "percent": ({"price": "600"}, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE"),
        "trail low": ({"trailingDelta": "5"}, -1013, "Filter failure: TRAILING_DELTA"),
        "trail high": ({"trailingDelta": "2001"}, -1013, "Filter failure: TRAILING_DELTA"),
        "trail frac": ({"trailingDelta": "1.5"}, -1100, "Illegal characters found in parameter 'trailingDelta'; "
                                                        "legal range is '^[0-9]{1,20}$'."),
        "funds": ({"quantity": "3"}, -2010, "Account has insufficient balance for requested action."),
    }
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            out = {}
            async with binance(emu) as ex:
                for name, (change, _, _) in cases.items():
                    params = {k: v for k, v in {**base, **change}.items() if v is not None}
                    out[name] = (await error_of(ex, ex.private_post_order(params)))[0]
                accepted = [await ex.private_post_order({**base, "newOrderRespType": "RESULT"}) for _ in range(5)]
                out["algo cap"] = (await error_of(ex, ex.private_post_order(base)))[0]
                plain = await ex.private_post_order({"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT",
                                                     "quantity": "0.1", "price": "101", "timeInForce": "GTC"})
            return out, accepted, plain

        out, accepted, plain = run(body())
        orders = emu.order_list
    for name, (_, code, msg) in cases.items():
        assert out[name] == {"code": code, "msg": msg}, name
    assert [a["status"] for a in accepted] == ["NEW"] * 5 and accepted[0]["type"] == "STOP_LOSS_LIMIT"
    assert out["algo cap"] == {"code": -1013, "msg": "Filter failure: MAX_NUM_ALGO_ORDERS"}  # maxNumAlgoOrders 5
    assert plain["status"] == "NEW" and len(orders) == 6  # the cap is for algo orders only


def test_order_test_endpoint_validates_stop_orders_without_placing_them(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                ok = await ex.private_post_order_test({"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT",
                                                       "quantity": "0.1", "price": "97", "stopPrice": "98",
                                                       "timeInForce": "GTC"})
                bad = await error_of(ex, ex.private_post_order_test(
                    {"symbol": "ETHUSDT", "side": "SELL", "type": "TAKE_PROFIT_LIMIT", "quantity": "0.1",
                     "price": "97", "stopPrice": "98", "timeInForce": "GTC"}))
            return ok, bad
        ok, (bad, _) = run(body())
        assert ok == {} and bad["msg"] == "Stop price would trigger immediately." and emu.order_list == []


# -- trailing stops -------------------------------------------------------------------------
def test_trailing_stops_follow_the_best_price_and_trigger_on_the_pullback(tmp_path):
    moves = [(100, 110, 100, 108),  # rising: 100 -> 100 -> 110 -> 108 (a 1.8 % dip from the high)
             (108, 109, 103, 104),  # falling: 108 -> 109 -> 103: 5 % below 110 is 104.5
             (104, 105, 90, 91)]  # falling: 104 -> 105 -> 90: through 95, then 5 % below 95 is 90.25
    with market(tmp_path, moves, balances={"USDT": "1000", "ETH": "2"}) as emu:
        async def body():
            async with binance(emu) as ex:
                plain = await ex.create_order("ETH/USDT", "limit", "sell", 0.5, 100,
                                              {"trailingPercent": 5, "stopLossOrTakeProfit": "stopLoss"})
                act = await ex.create_order("ETH/USDT", "limit", "sell", 0.5, 100,
                                            {"trailingPercent": 5, "trailingTriggerPrice": 105,
                                             "stopLossOrTakeProfit": "takeProfit"})
                below = await ex.private_post_order({"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT",
                                                     "quantity": "0.5", "price": "85", "stopPrice": "95",
                                                     "trailingDelta": "500", "timeInForce": "GTC"})
                buy = await ex.private_post_order({"symbol": "ETHUSDT", "side": "BUY", "type": "STOP_LOSS_LIMIT",
                                                   "quantity": "0.5", "price": "120", "trailingDelta": "300",
                                                   "timeInForce": "GTC", "newOrderRespType": "RESULT"})
                ids = [plain["id"], act["id"], below["orderId"], buy["orderId"]]
                emu.set_time(START + H)
                first = [(await ex.fetch_order(i, "ETH/USDT"))["info"] for i in ids]
                emu.set_time(START + 3 * H)
                last = [(await ex.fetch_order(i, "ETH/USDT"))["info"] for i in ids]
            return plain, act, below, buy, first, last

        plain, act, below, buy, first, last = run(body())
        expect = [taker_fills(emu, 1, "104.5", "SELL", D("0.5"), D(100)),
                  taker_fills(emu, 1, "104.5", "SELL", D("0.5"), D(100)),
                  taker_fills(emu, 2, "90.25", "SELL", D("0.5"), D(85)),
                  taker_fills(emu, 0, "103", "BUY", D("0.5"), D(120))]
        got = [trade_rows(emu, int(i["orderId"])) for i in last]
    assert plain["info"]["type"] == "STOP_LOSS_LIMIT" and plain["info"]["trailingDelta"] == 500
    assert act["info"]["type"] == "TAKE_PROFIT_LIMIT" and act["info"]["stopPrice"] == "105.00000000"
    assert [f["status"] for f in first] == ["NEW", "NEW", "NEW", "FILLED"]
    assert [f["trailingTime"] for f in first[:3]] == [START, closed(0), -1]  # 105 reached on candle 0
    assert [x["status"] for x in last] == ["FILLED"] * 4
    assert [x["workingTime"] for x in last] == [closed(1), closed(1), closed(2), closed(0)]
    assert last[2]["trailingTime"] == closed(2)  # activated and triggered on the same fall
    assert got == expect


# -- OCO --------------------------------------------------------------------------------------
def oco(**changes) -> dict:
    params = {"symbol": "ETHUSDT", "side": "SELL", "quantity": "1", "aboveType": "LIMIT_MAKER", "abovePrice": "105",
              "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "96", "belowPrice": "95.5",
              "belowTimeInForce": "GTC", "listClientOrderId": "list-1", "aboveClientOrderId": "tp-1",
              "belowClientOrderId": "sl-1"}
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


def test_a_sell_oco_take_profit_fills_and_the_stop_leg_expires(tmp_path):
    with market(tmp_path, [(100, 101, 99.5, 100.5), (100.5, 106, 100.4, 105.5)], {"ETH": "1", "USDT": "0"}) as emu:
        async def body():
            async with binance(emu) as ex:
                placed = await ex.private_post_orderlist_oco(oco())
                locked = emu.locked["ETH"]
                open_lists = await ex.private_get_openorderlist()
                open_orders = await ex.fetch_open_orders("ETH/USDT")
                emu.set_time(START + 2 * H)
                return (placed, locked, open_lists, open_orders, await ex.private_get_openorderlist(),
                        await ex.private_get_orderlist({"origClientOrderId": "list-1"}),
                        await ex.fetch_orders("ETH/USDT"), await ex.fetch_my_trades("ETH/USDT"))

        placed, locked, open_lists, open_orders, open_after, listed, orders, trades = run(body())
    assert {k: placed[k] for k in ("orderListId", "contingencyType", "listStatusType", "listOrderStatus",
                                   "listClientOrderId", "transactionTime", "symbol")} == {
        "orderListId": 0, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
        "listOrderStatus": "EXECUTING", "listClientOrderId": "list-1", "transactionTime": START, "symbol": "ETHUSDT"}
    assert placed["orders"] == [{"symbol": "ETHUSDT", "orderId": 1, "clientOrderId": "sl-1"},
                                {"symbol": "ETHUSDT", "orderId": 2, "clientOrderId": "tp-1"}]
    stop, maker = placed["orderReports"]
    assert (stop["type"], stop["stopPrice"], stop["price"], stop["workingTime"], stop["orderListId"]) == (
        "STOP_LOSS_LIMIT", "96.00000000", "95.50000000", -1, 0)
    assert (maker["type"], maker["price"], maker["workingTime"], maker["status"]) == (
        "LIMIT_MAKER", "105.00000000", START, "NEW")
    assert locked == 1  # one lock for both legs
    assert [x["orderListId"] for x in open_lists] == [0] and "orderReports" not in open_lists[0]
    assert sorted((o["clientOrderId"], o["info"]["orderListId"]) for o in open_orders) == [("sl-1", 0), ("tp-1", 0)]
    assert open_after == [] and listed["listStatusType"] == "ALL_DONE" and listed["listOrderStatus"] == "ALL_DONE"
    status = {o["clientOrderId"]: (o["info"]["status"], o["info"]["updateTime"]) for o in orders}
    assert status == {"sl-1": ("EXPIRED", closed(1)), "tp-1": ("FILLED", closed(1))}
    (trade,) = trades
    assert (trade["price"], trade["amount"], trade["takerOrMaker"], trade["info"]["orderListId"]) == (
        105, 1, "maker", 0)
    assert emu.balances == {"ETH": 0, "USDT": D(105) - q8(D(105) * FEE)} and emu.locked == {"ETH": 0, "USDT": 0}


@pytest.mark.parametrize("candle, winner", [((100, 106, 94, 105), "sl-1"),  # rising: the low (stop) comes first
                                            ((100, 106, 94, 95), "tp-1")])  # falling: the high (limit) first
def test_within_one_candle_the_oco_leg_the_path_reaches_first_wins(tmp_path, candle, winner):
    with market(tmp_path, [candle]) as emu:
        async def body():
            async with binance(emu) as ex:
                await ex.private_post_orderlist_oco(oco(abovePrice="105.5"))
                emu.set_time(START + H)
                return {o["clientOrderId"]: o["info"]["status"] for o in await ex.fetch_orders("ETH/USDT")}

        status = run(body())
        trades = emu.trades
    loser = ({"sl-1", "tp-1"} - {winner}).pop()
    assert status == {winner: "FILLED", loser: "EXPIRED"}
    if winner == "tp-1":
        assert [(t.price, t.is_maker) for t in trades] == [(D("105.5"), True)]
    else:
        assert [(t.price, t.qty) for t in trades] == taker_fills(emu, 0, "96", "SELL", D(1), D("95.5"))


def test_a_buy_oco_locks_the_dearer_leg_and_releases_the_rest(tmp_path):
    with market(tmp_path, [(100, 100.2, 94, 94.5)], {"USDT": "200", "ETH": "0"}) as emu:
        async def body():
            async with binance(emu) as ex:
                placed = await ex.private_post_orderlist_oco(oco(
                    side="BUY", aboveType="STOP_LOSS_LIMIT", aboveStopPrice="104", abovePrice="105",
                    aboveTimeInForce="GTC", belowType="LIMIT_MAKER", belowPrice="95", belowStopPrice=None,
                    belowTimeInForce=None))
                locked = emu.locked["USDT"]
                emu.set_time(START + H)
                return placed, locked
        placed, locked = run(body())
    assert [r["type"] for r in placed["orderReports"]] == ["STOP_LOSS_LIMIT", "LIMIT_MAKER"]
    assert locked == 105
    assert emu.balances == {"USDT": D(105), "ETH": D(1) - q8(FEE)} and emu.locked["USDT"] == 0


def test_oco_validation_gives_binances_codes_and_changes_nothing(tmp_path):
    sell, buy = {}, {"side": "BUY", "aboveType": "STOP_LOSS_LIMIT", "aboveStopPrice": "104", "abovePrice": "105",
                     "aboveTimeInForce": "GTC", "belowType": "LIMIT_MAKER", "belowPrice": "95",
                     "belowStopPrice": None, "belowTimeInForce": None}
    bad_prices = (-2010, "The relationship of the prices for the orders is not correct.")
    cases = {
        "limit at last": ({**sell, "abovePrice": "100"}, *bad_prices),
        "stop at last": ({**sell, "belowStopPrice": "100"}, *bad_prices),
        "tp stop under last": ({"aboveType": "TAKE_PROFIT_LIMIT", "abovePrice": "101", "aboveStopPrice": "99",
                                "aboveTimeInForce": "GTC"}, *bad_prices),
        "no take profit": ({"aboveType": "TAKE_PROFIT", "abovePrice": None, "aboveStopPrice": "101"}, -1013,
                           "Take profit orders are not supported for this symbol."),
        "buy limit above": ({**buy, "belowPrice": "101"}, *bad_prices),
        "sell stop above": ({"aboveType": "STOP_LOSS_LIMIT", "aboveStopPrice": "104", "aboveTimeInForce": "GTC"},
                            -1197, "A stop loss order in a sell OCO must be below."),
        "sell tp below": ({"belowType": "TAKE_PROFIT_LIMIT"}, -1199,
                          "A take profit order in a sell OCO must be above."),
        "sell limit below": ({"belowType": "LIMIT_MAKER", "aboveType": "TAKE_PROFIT"}, -1166,
                             "A limit order in a sell OCO must be above."),
        "buy limit above_": ({**buy, "aboveType": "LIMIT_MAKER", "belowType": "TAKE_PROFIT"}, -1165,
                             "A limit order in a buy OCO must be below."),
        "buy stop below": ({**buy, "belowType": "STOP_LOSS"}, -1196, "A stop loss order in a buy OCO must be above."),
        "buy tp above": ({**buy, "aboveType": "TAKE_PROFIT"}, -1198, "A take profit order in a buy OCO must be below."),
        "two limits": ({"belowType": "LIMIT_MAKER"}, -1168, "At least one OCO order must be contingent."),
        "plain limit": ({"aboveType": "LIMIT"}, -1158, "Order type not supported in OCO."),
        "no price": ({"abovePrice": None}, -1102, "Mandatory parameter 'abovePrice' was not sent, was empty/null, "
                                                  "or malformed."),
        "no tif": ({"belowTimeInForce": None}, -1102, "Mandatory parameter 'belowTimeInForce' was not sent, was "
                                                      "empty/null, or malformed."),
        "maker tif": ({"aboveTimeInForce": "GTC"}, -1106, "Parameter 'aboveTimeInForce' sent when not required."),
        "stop tick": ({"belowStopPrice": "96.005"}, -1013, "Filter failure: PRICE_FILTER"),
        "funds": ({"quantity": "3"}, -2010, "Account has insufficient balance for requested action."),
        "same ids": ({"belowClientOrderId": "tp-1"}, -2010, "Duplicate order sent."),
    }
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                return {name: (await error_of(ex, ex.private_post_orderlist_oco(oco(**change))))[0]
                        for name, (change, _, _) in cases.items()}
        out = run(body())
        assert emu.order_list == [] and emu.order_lists == [] and emu.locked == {"USDT": 0, "ETH": 0}
    for name, (_, code, msg) in cases.items():
        assert out[name] == {"code": code, "msg": msg}, name


def test_oco_is_refused_by_the_symbols_flags_and_order_caps(tmp_path):
    info = patched_info(tmp_path, filters={"MAX_NUM_ORDERS": {"maxNumOrders": 3},
                                           "MAX_NUM_ALGO_ORDERS": {"maxNumAlgoOrders": 1}})
    (tmp_path / "b").mkdir()
    no_oco = patched_info(tmp_path / "b", ocoAllowed=False)
    limit = {"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT", "quantity": "0.1", "price": "101",
             "timeInForce": "GTC"}
    with market(tmp_path, [(100, 100, 100, 100)], exchange_info=info) as emu:
        async def body():
            async with binance(emu) as ex:
                await ex.private_post_order(limit)
                await ex.private_post_order(limit)
                caps = [(await error_of(ex, ex.private_post_orderlist_oco(oco(quantity="0.1"))))[0]]
                await ex.private_delete_openorders({"symbol": "ETHUSDT"})
                await ex.private_post_order({**limit, "type": "STOP_LOSS_LIMIT", "price": "97", "stopPrice": "98"})
                caps.append((await error_of(ex, ex.private_post_orderlist_oco(oco(quantity="0.1"))))[0])
                return caps
        caps = run(body())
    assert caps == [{"code": -1013, "msg": "Filter failure: MAX_NUM_ORDERS"},  # 2 open + a list of 2 > 3
                    {"code": -1013, "msg": "Filter failure: MAX_NUM_ALGO_ORDERS"}]
    with market(tmp_path / "c", [(100, 100, 100, 100)], exchange_info=no_oco) as emu:
        async def refused():
            async with binance(emu) as ex:
                return (await error_of(ex, ex.private_post_orderlist_oco(oco())))[0]
        assert run(refused()) == {"code": -2010, "msg": "OCO orders are not supported for this symbol"}


def test_cancelling_an_oco_or_one_of_its_legs_cancels_both(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)], {"ETH": "3", "USDT": "0"}) as emu:
        async def body():
            async with binance(emu) as ex:
                await ex.private_post_orderlist_oco(oco())
                cancelled = await ex.private_delete_orderlist({"symbol": "ETHUSDT", "listClientOrderId": "list-1",
                                                               "newClientOrderId": "cx-1"})
                again = (await error_of(ex, ex.private_delete_orderlist({"symbol": "ETHUSDT", "orderListId": 0})))[0]
                missing = (await error_of(ex, ex.private_get_orderlist({"orderListId": 7})))[0]
                await ex.private_post_orderlist_oco(oco(listClientOrderId="list-2"))
                leg = await ex.cancel_order(None, "ETH/USDT", {"origClientOrderId": "tp-1"})
                await ex.private_post_orderlist_oco(oco(listClientOrderId="list-3"))
                await ex.create_order("ETH/USDT", "limit", "sell", 0.5, 110, {"newClientOrderId": "plain"})
                everything = await ex.private_delete_openorders({"symbol": "ETHUSDT"})
                all_lists = await ex.private_get_allorderlist()
                return cancelled, again, missing, leg, everything, all_lists
        cancelled, again, missing, leg, everything, all_lists = run(body())
        statuses = [(o.client_id, o.order_list_id, o.status) for o in emu.order_list]
    assert cancelled["listStatusType"] == "ALL_DONE" and cancelled["listOrderStatus"] == "ALL_DONE"
    assert [(r["origClientOrderId"], r["clientOrderId"], r["status"], r["orderListId"])
            for r in cancelled["orderReports"]] == [("sl-1", "cx-1", "CANCELED", 0), ("tp-1", "cx-1", "CANCELED", 0)]
    assert cancelled["orderReports"][0]["stopPrice"] == "96.00000000"
    assert again == {"code": -2011, "msg": "Unknown order sent."}
    assert missing == {"code": -2013, "msg": "Order list does not exist."}
    assert leg["status"] == "canceled" and leg["info"]["orderListId"] == 1
    assert [e.get("orderListId") for e in everything] == [-1, 2]  # plain orders first, then each list
    assert everything[1]["contingencyType"] == "OCO" and len(everything[1]["orderReports"]) == 2
    assert [x["listClientOrderId"] for x in all_lists] == ["list-3", "list-2", "list-1"]
    assert all(s == "CANCELED" for _, _, s in statuses) and emu.locked["ETH"] == 0


def test_the_deprecated_oco_endpoint_places_the_same_list(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                placed = await ex.private_post_order_oco({"symbol": "ETHUSDT", "side": "SELL", "quantity": "1",
                                                          "price": "105", "stopPrice": "96", "stopLimitPrice": "95.5",
                                                          "stopLimitTimeInForce": "GTC"})
                missing = (await error_of(ex, ex.private_post_order_oco(
                    {"symbol": "ETHUSDT", "side": "SELL", "quantity": "1", "price": "105", "stopPrice": "96",
                     "stopLimitPrice": "95.5"})))[0]
                return placed, missing
        placed, missing = run(body())
    assert placed["contingencyType"] == "OCO" and placed["listStatusType"] == "EXEC_STARTED"
    assert [(r["type"], r["price"]) for r in placed["orderReports"]] == [("STOP_LOSS_LIMIT", "95.50000000"),
                                                                        ("LIMIT_MAKER", "105.00000000")]
    assert missing["code"] == -1102 and "'stopLimitTimeInForce'" in missing["msg"]


# -- cancelReplace ----------------------------------------------------------------------------
def replace(**changes) -> dict:
    params = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.6",
              "price": "94", "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrigClientOrderId": "buy-1",
              "newClientOrderId": "buy-2"}
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


def test_edit_order_is_a_cancel_replace(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                first = await ex.create_order("ETH/USDT", "limit", "buy", 0.5, 95, {"newClientOrderId": "buy-1"})
                edited = await ex.edit_order(first["id"], "ETH/USDT", "limit", "buy", 0.6, 94)
                stop = await ex.create_order("ETH/USDT", "limit", "sell", 1, 97, {"stopLossPrice": 98})
                stop2 = await ex.edit_order(stop["id"], "ETH/USDT", "limit", "sell", 1, 96, {"stopPrice": 97})
                return first, edited, stop2, await ex.fetch_order(first["id"], "ETH/USDT")
        first, edited, stop2, old = run(body())
        paths = [r.path for r in emu.request_log()]
    assert edited["status"] == "open" and edited["price"] == 94 and edited["amount"] == 0.6
    assert old["status"] == "canceled" and emu.locked["USDT"] == D("56.4")
    assert (stop2["info"]["type"], stop2["triggerPrice"], stop2["price"]) == ("STOP_LOSS_LIMIT", 97, 96)
    assert paths.count("/api/v3/order/cancelReplace") == 2


def test_cancel_replace_failures_have_binances_status_codes_and_data(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            out = {}
            async with binance(emu) as ex:
                async def fail(name, **change):
                    out[name] = ((await error_of(ex, ex.private_post_order_cancelreplace(replace(**change))))[0],
                                 emu.request_log()[-1].status)

                await ex.create_order("ETH/USDT", "limit", "buy", 0.5, 95, {"newClientOrderId": "buy-1"})
                await fail("filter", price="94.001")
                await fail("restricted", cancelRestrictions="ONLY_PARTIALLY_FILLED")
                await fail("bad restriction", cancelRestrictions="NEVER")
                await fail("unknown", cancelOrigClientOrderId="nope")
                await fail("would take", type="LIMIT_MAKER", timeInForce=None, price="101")
                await fail("allow", cancelReplaceMode="ALLOW_FAILURE", cancelOrigClientOrderId="nope",
                           newClientOrderId="buy-3", price="101", type="LIMIT_MAKER", timeInForce=None)
            return out

        out = run(body())
        orders = {o.client_id: o.status for o in emu.order_list}
    assert out["filter"] == ({"code": -1013, "msg": "Filter failure: PRICE_FILTER"}, 400)
    restricted, status = out["restricted"]
    assert status == 400 and restricted == {"code": -2022, "msg": "Order cancel-replace failed.", "data": {
        "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
        "cancelResponse": {"code": -2011, "msg": "Order was not canceled due to cancel restrictions."},
        "newOrderResponse": None}}
    assert out["bad restriction"] == ({"code": -1145, "msg": "Invalid cancelRestrictions"}, 400)
    assert out["unknown"][1] == 400 and out["unknown"][0]["data"]["cancelResponse"] == {
        "code": -2011, "msg": "Unknown order sent."}
    take, status = out["would take"]  # the cancel went through, the new order did not
    assert status == 409 and take["code"] == -2021 and take["msg"] == "Order cancel-replace partially failed."
    assert take["data"]["cancelResult"] == "SUCCESS" and take["data"]["newOrderResult"] == "FAILURE"
    assert take["data"]["cancelResponse"]["status"] == "CANCELED"
    assert take["data"]["cancelResponse"]["origClientOrderId"] == "buy-1"
    assert take["data"]["newOrderResponse"] == {"code": -2010, "msg": "Order would immediately match and take."}
    both, status = out["allow"]
    assert status == 400 and both["code"] == -2022 and both["data"]["newOrderResult"] == "FAILURE"
    assert orders == {"buy-1": "CANCELED"}  # no rejected request left an order behind


def test_cancel_replace_with_allow_failure_places_the_new_order_anyway(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                return (await error_of(ex, ex.private_post_order_cancelreplace(
                    replace(cancelReplaceMode="ALLOW_FAILURE", cancelOrigClientOrderId="nope")))), \
                    emu.request_log()[-1].status
        ((reply, _), status) = run(body())
        orders = {o.client_id: o.status for o in emu.order_list}
    assert status == 409 and reply["code"] == -2021 and reply["data"]["cancelResult"] == "FAILURE"
    assert reply["data"]["newOrderResult"] == "SUCCESS"
    assert reply["data"]["newOrderResponse"]["clientOrderId"] == "buy-2"
    assert orders == {"buy-2": "NEW"}


# -- route table ------------------------------------------------------------------------------
def test_new_endpoints_are_signed_weighted_and_counted(tmp_path):
    with market(tmp_path, [(100, 100, 100, 100)]) as emu:
        async def body():
            async with binance(emu) as ex:
                await ex.private_post_order({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.1",
                                             "price": "90", "timeInForce": "GTC"})
                one = int(ex.last_response_headers["X-MBX-ORDER-COUNT-10S"])
                await ex.private_post_orderlist_oco(oco())
                two = int(ex.last_response_headers["X-MBX-ORDER-COUNT-10S"])
                await ex.private_get_orderlist({"orderListId": 0})
                await ex.private_get_openorderlist()
                await ex.private_get_allorderlist()
                await ex.private_delete_orderlist({"symbol": "ETHUSDT", "orderListId": 0})
                await ex.private_post_order_cancelreplace(replace(cancelOrigClientOrderId=None, cancelOrderId="1"))
                async with ex.session.get(emu.url + "/api/v3/openOrderList") as r:
                    unsigned = (r.status, await r.json())
            return one, two, unsigned
        one, two, unsigned = run(body())
        weights = {(r.method, r.path): r.weight for r in emu.request_log()}
    assert two - one == 2  # an OCO adds two orders to the order count
    assert {k: weights[k] for k in [("POST", "/api/v3/orderList/oco"), ("GET", "/api/v3/orderList"),
                                    ("GET", "/api/v3/openOrderList"), ("GET", "/api/v3/allOrderList"),
                                    ("DELETE", "/api/v3/orderList"), ("POST", "/api/v3/order/cancelReplace")]} == {
        ("POST", "/api/v3/orderList/oco"): 1, ("GET", "/api/v3/orderList"): 4, ("GET", "/api/v3/openOrderList"): 6,
        ("GET", "/api/v3/allOrderList"): 20, ("DELETE", "/api/v3/orderList"): 1,
        ("POST", "/api/v3/order/cancelReplace"): 1}
    assert unsigned == (401, {"code": -2014, "msg": "API-key format invalid."})


def test_stop_orders_and_lists_survive_a_restart(tmp_path):
    write_market(tmp_path / "ohlcv", [(100, 110, 100, 108), (108, 109, 103, 104)])
    state = tmp_path / "state.json"
    kw = dict(ohlcv_dir=tmp_path / "ohlcv", exchange_info=DEFAULT_EXCHANGE_INFO, start_ms=START, seed=3,
              balances={"USDT": "1000", "ETH": "2"}, state_file=state)
    with checked(**kw) as emu:
        async def body():
            async with binance(emu) as ex:
                await ex.private_post_order({"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT",
                                             "quantity": "0.5", "price": "100", "trailingDelta": "500",
                                             "timeInForce": "GTC"})
                await ex.private_post_orderlist_oco(oco(quantity="1", abovePrice="120"))
        run(body())
        emu.set_time(START + H)  # the trailing stop has seen 110
    again = Emulator(tmp_path / "ohlcv", DEFAULT_EXCHANGE_INFO, START, state_file=state, seed=3)
    trailing = again.account.by_id[1]
    assert (trailing.trail_extreme, trailing.trailing_time, trailing.working_time) == (D(110), START, -1)
    assert [(lst.list_client_id, lst.order_ids, lst.is_open) for lst in again.order_lists] == [("list-1", [2, 3], True)]
    again.set_time(START + 2 * H)
    assert trailing.status == "FILLED" and trailing.working_time == closed(1)
    assert again.locked["ETH"] == 1 and again.account.lists[0].is_open


# -- invariants on real data -----------------------------------------------------------------
REAL_START = 1_614_556_800_000  # 2021-03-01
step = st.tuples(
    st.sampled_from(["market", "limit", "stop", "trail", "oco", "cancel", "advance"]),
    st.sampled_from(["BUY", "SELL"]),
    st.sampled_from(["ETHUSDT", "DOGEUSDT"]),
    st.floats(min_value=0.05, max_value=0.6),  # share of the available balance
    st.floats(min_value=0.002, max_value=0.04),  # distance of stops / limits from the last price
    st.integers(min_value=1, max_value=12),  # hours to advance
)


def tick(x: D, unit: D) -> D:
    return (x / unit).to_integral_value(ROUND_DOWN) * unit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=20), ratio=st.sampled_from([1.0, 0.5]))
def test_balances_locks_and_lists_stay_consistent_with_stops_and_ocos(steps, ratio):
    start = {"USDT": D(5000), "ETH": D(2), "DOGE": D(20000)}
    emu = Emulator(DEFAULT_OHLCV_DIR, DEFAULT_EXCHANGE_INFO, REAL_START, seed=2,
                   balances={k: str(v) for k, v in start.items()}, partial_fill_ratio=ratio)
    acc = emu.account
    for n, (kind, side, symbol, share, dist, hours) in enumerate(steps):
        rules = emu.exchange.rules[symbol]
        if kind == "advance":
            emu.advance(hours * H)
            continue
        if kind == "cancel":
            if acc.open_orders(symbol):
                acc.cancel(rules, acc.open_orders(symbol)[0], emu.now_ms)
            continue
        last = emu.avg_price(symbol)
        spend = emu.free.get(rules.quote, D(0)) * D(repr(share)) / last / D(1 + 2 * dist)
        have = emu.free.get(rules.base, D(0)) * D(repr(share))
        qty = f"{tick(spend if side == 'BUY' else have, rules.step):f}"
        sgn = 1 if side == "BUY" else -1
        near = {k: f"{tick(last * D(repr(1 + sgn * f * dist)), rules.tick):f}" for k, f in
                (("stop", 1), ("limit", 1.5), ("far", -1))}
        try:
            if kind == "oco":
                legs = {"above": {"Type": "LIMIT_MAKER", "Price": near["far"]},
                        "below": {"Type": "STOP_LOSS_LIMIT", "StopPrice": near["stop"], "Price": near["limit"],
                                  "TimeInForce": "GTC"}}
                if side == "BUY":
                    legs = {"above": legs["below"], "below": legs["above"]}
                params = {"side": side, "quantity": qty,
                          **{p + k: v for p, leg in legs.items() for k, v in leg.items()}}
                acc.place_oco(rules, emu, params, emu.now_ms, f"l{n}", {"above": f"a{n}", "below": f"b{n}"})
                continue
            params = {"side": side, "quantity": qty}
            if kind == "limit":
                params.update(type="LIMIT", timeInForce="GTC", price=near["far"])
            elif kind == "stop":
                params.update(type="STOP_LOSS_LIMIT", timeInForce="GTC", price=near["limit"], stopPrice=near["stop"])
            elif kind == "trail":
                params.update(type="STOP_LOSS_LIMIT", timeInForce="IOC", price=near["limit"],
                              trailingDelta=str(int(dist * 10000)))
            else:
                params.update(type="MARKET")
            acc.place(rules, emu, params, emu.now_ms, f"o{n}")
        except ApiError as err:
            assert err.code in (-1013, -2010), err.msg  # filters, caps, funds, would trigger: nothing else
    emu.advance(24 * H)

    assert_balances_follow_trades(emu, start)
    for asset in acc.locked:
        held = sum((o.locked for o in acc.open_orders() if (emu.exchange.rules[o.symbol].quote if o.side == "BUY"
                                                            else emu.exchange.rules[o.symbol].base) == asset), D(0))
        assert acc.locked[asset] == held
    for o in acc.orders:
        trades = acc.order_trades(o)
        assert o.executed_qty == sum((t.qty for t in trades), D(0)) <= o.orig_qty
        assert (o.status == "FILLED") == (o.executed_qty == o.orig_qty and o.executed_qty > 0)
        if o.price:
            assert all(t.price <= o.price if o.side == "BUY" else t.price >= o.price for t in trades)
        if trades and o.type.startswith("STOP"):
            assert o.working_time != -1 and all(t.time >= o.working_time for t in trades)
        assert all(t.order_list_id == o.order_list_id for t in trades)
    for lst in acc.lists:
        legs = acc.list_orders(lst)
        acted = [leg for leg in legs if leg.executed_qty or leg.working_time not in (-1, leg.time)]
        assert len(acted) <= 1
        if acted:
            assert not lst.is_open and all(leg.status in ("EXPIRED", "CANCELED") for leg in legs if leg not in acted)
        if lst.is_open:
            assert all(leg.is_open for leg in legs)
