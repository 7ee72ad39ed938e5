"""Exchange-side protection (core/trading/protection.py) through real ccxt against the loopback emulator.

A synthetic ETH/USDT market (flat at 100, then the candles each test designs; the real 2023
exchangeInfo) makes every trigger computable by hand: a candle's path is open, low, high, close
when it rises and open, high, low, close when it falls (see tests/support/emulator/test_order_types.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import VirtualClock, WallClock
from core.exchange.ccxt_gateway import CcxtGateway
from core.exchange.ccxt_orders import SymbolRules
from core.models import BUY
from core.secrets import Secrets
from core.store import protections as pdb
from core.store.state import Store
from core.trading.live import LiveExecutor
from core.trading.risk import Approval
from core.trading.rules import Protective, Refusal, conform_protection
from tests.support.emulator import DEFAULT_EXCHANGE_INFO, running_emulator
from tests.support.trading import make_cfg, opp

D = Decimal
H = 3_600_000
T0 = 1_672_531_200_000
WARM = 30
START = T0 + WARM * H
ETH = "ETH/USDT"


def write_market(folder: Path, moves) -> Path:
    rows = [(T0 + i * H, 100.0, 100.0, 100.0, 100.0) for i in range(WARM)]
    rows += [(START + i * H, *m) for i, m in enumerate(moves)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ETH_USDT.csv").write_text("timestamp_ms,open,high,low,close,volume\n" + "".join(
        f"{t},{o},{h},{low},{c},1000.0\n" for t, o, h, low, c in rows))
    return folder


@contextlib.contextmanager
def market(tmp_path: Path, moves, balances=None):
    with running_emulator(ohlcv_dir=write_market(tmp_path / "ohlcv", moves), exchange_info=DEFAULT_EXCHANGE_INFO,
                         start_ms=START, seed=3, balances=balances or {"USDT": "1000"}) as emu:
        yield emu
    assert emu.internal_errors == []


def cfg_for(url: str, **trading):
    cfg = make_cfg("live", trading={"exchange_stops": "oco", "monitor_interval_s": 0.5, **trading})
    return replace(cfg, exchange=replace(cfg.exchange, api_url=url, timeout_s=3.0),
                   universe=replace(cfg.universe, quote="USDT"))


@contextlib.asynccontextmanager
async def session(emu, db: Path, cfg):
    gw = CcxtGateway(cfg, Secrets(emu.api_key, emu.api_secret), WallClock())
    try:
        async with Store.open(db) as store:
            ex = LiveExecutor(cfg, store, gw, VirtualClock(emu.now_ms))
            await ex.start()
            yield ex, store
    finally:
        await gw.close()


async def buy(ex, amount="1", stop="97", target="106", px="100"):
    ex.update_marks({ETH: float(px)})
    return await ex.open_position(opp(ETH, price=float(px)), Approval(D(amount), D(px), D(stop), D(target), "t"))


def resting(emu):
    return sorted((o.client_id, o.type, o.status, o.order_list_id) for o in emu.order_list
                  if o.status in ("NEW", "PARTIALLY_FILLED"))


async def store_fills(store):
    return sorted((f.trade_id, f.side, f.quantity) for f in await store.fills())


def test_an_oco_rests_right_after_the_entry_fill(tmp_path):
    with market(tmp_path, [(100, 100.5, 99.5, 100)]) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                pos = await buy(ex)
                before = resting(emu)  # placed right after the fill, before the next monitor check
                await ex.poll()
                rows = await pdb.live(store.db)
                return pos, before, resting(emu), rows, ex.resting(pos.id)

        pos, before, after, rows, mine = asyncio.run(main())
    assert before == after and pos.amount == D("0.999")  # 0.1 % fee taken in ETH
    tag = after[0][0].split("-")[0]
    assert after == [(f"{tag}-1-s1", "STOP_LOSS_LIMIT", "NEW", 0), (f"{tag}-1-t1", "LIMIT_MAKER", "NEW", 0)]
    (row,) = rows
    assert (row.kind, row.status, row.amount, row.stop, row.limit, row.target) == (
        "oco", "active", D("0.999"), D("97"), D("96.51"), D("106"))  # limit 0.5 % under the stop, tick-rounded
    assert mine == rows
    assert emu.locked["ETH"] == D("0.999")
    from core.commands.status import collect
    (shown,) = collect(tmp_path / "live.db", "live")["open_positions"]
    assert shown["resting_orders"] == [{"kind": "oco", "status": "active", "list_id": f"{tag}-1-l1",
                                        "stop_id": f"{tag}-1-s1", "target_id": f"{tag}-1-t1", "amount": 0.999,
                                        "stop": 97.0, "limit": 96.51, "target": 106.0}]


def test_an_entry_whose_stop_a_cycle_old_mark_shows_crossed_is_protected_right_after_its_fill(tmp_path):
    # the last cycle's marks say 100; the next candle closes at 101 and the entry fills there with its stop at
    # 100.7 (set from the fresher book): judged by the old mark the stop looks crossed, by the market it is not
    with market(tmp_path, [(100, 100.5, 99.5, 100), (100, 101.5, 100, 101)]) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                ex.update_marks({ETH: 100.0})
                emu.set_time(START + 2 * H)
                pos = await ex.open_position(opp(ETH, price=101.0),
                                             Approval(D("1"), D("101"), D("100.7"), D("102"), "t"))
                right_after = resting(emu)
                await ex.poll()  # the marks are still the cycle's: only a fresh price can tell
                return pos, right_after, resting(emu), await pdb.live(store.db), ex.tag

        pos, right_after, after_poll, rows, tag = asyncio.run(main())
    assert pos.status == "open" and pos.amount == D("0.999")
    assert right_after == [(f"pt{tag}-1-s1", "STOP_LOSS_LIMIT", "NEW", 0), (f"pt{tag}-1-t1", "LIMIT_MAKER", "NEW", 0)]
    assert after_poll == right_after
    (row,) = rows
    assert (row.kind, row.stop, row.target, row.amount) == ("oco", D("100.7"), D("102"), D("0.999"))


def test_a_stop_that_fills_while_pitrader_is_down_closes_the_position_once(tmp_path):
    # candle 1 falls through the stop at 97 and keeps well above its limit: the stop-limit fills
    with market(tmp_path, [(100, 100.5, 99.5, 100), (100, 100.2, 96.8, 97.2)]) as emu:
        async def first():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                await buy(ex)
                await ex.poll()

        async def restart():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                positions = await store.positions()
                fills = await store_fills(store)
                orders = {o.client_id[-2:]: o.status.value for o in await store.orders_of(1)}
                await ex.poll()
                return positions, fills, orders, await store_fills(store), await pdb.live(store.db)

        asyncio.run(first())
        emu.set_time(START + 2 * H)  # the process is down while the market falls
        positions, fills, orders, fills_after, live_rows = asyncio.run(restart())
        trades = emu.trades
    (pos,) = positions
    assert pos.status == "closed" and pos.exit_reason == "stop_loss" and pos.pnl < 0
    assert orders == {"e1": "filled", "s1": "filled", "t1": "expired"}
    assert fills == fills_after and len(fills) == len(trades)  # every exchange fill recorded, once
    assert sum(q for _, side, q in fills if side == "sell") == D("0.999")
    assert live_rows == [] and resting(emu) == []


def test_a_take_profit_fill_closes_the_position_and_the_stop_leg_expires(tmp_path):
    with market(tmp_path, [(100, 100.5, 99.5, 100), (100, 107, 99.8, 106.5)]) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                pos = await buy(ex)
                await ex.poll()
                emu.set_time(START + 2 * H)
                await ex.poll()  # the list left the book: its legs are looked up and settled
                return pos, {o.client_id[-2:]: o.status.value for o in await store.orders_of(pos.id)}

        pos, orders = asyncio.run(main())
    assert pos.status == "closed" and pos.exit_reason == "take_profit"
    assert pos.exit_price == D("106") and pos.pnl > 0
    assert orders == {"e1": "filled", "s1": "expired", "t1": "filled"}


class Killed(BaseException):
    """The process dies at this point (SIGKILL): nothing after it runs, every committed write stays."""


def test_a_leg_fill_whose_close_a_kill_interrupted_is_settled_at_restart_like_without_the_kill(tmp_path, caplog):
    # candle 1 reaches the take-profit at 106. 1.0001 ETH bought, 0.0010001 fee: 0.9990999 held, the OCO sells
    # 0.9990 (lot step 0.0001) and 0.0000999 ETH is left, below the 0.0001 minimum: dust nobody can sell
    moves = [(100, 100.5, 99.5, 100), (100, 107, 99.8, 106.5)]

    def run(folder: Path, kill: bool):
        with market(folder, moves) as emu:
            async def first():
                async with session(emu, folder / "live.db", cfg_for(emu.url)) as (ex, store):
                    await buy(ex, amount="1.0001")
                    if kill:  # dies once the leg's fill and the finished protection are saved, before the close
                        async def die(*args, **kwargs):
                            raise Killed
                        ex._exchange_exit = die
                    emu.set_time(START + 2 * H)
                    with contextlib.suppress(Killed):
                        await ex.poll()  # the list left the book: its legs are looked up and settled
                    return [p.status.value for p in await store.positions()]

            async def restart():
                async with session(emu, folder / "live.db", cfg_for(emu.url)) as (ex, store):
                    started = (await store.positions(), await store_fills(store), ex.positions)
                    await ex.poll()
                    return (*started, await store_fills(store))

            before = asyncio.run(first())
            sells = sum(1 for r in emu.request_log() if r.method == "POST" and r.path == "/api/v3/order")
            positions, fills, in_memory, fills_after = asyncio.run(restart())
            sells = sum(1 for r in emu.request_log() if r.method == "POST" and r.path == "/api/v3/order") - sells
            return before, positions, fills, in_memory, fills_after, sells, emu.trades, emu.balances, resting(emu)

    with caplog.at_level(logging.INFO, logger="core.trading.live"):
        plain = run(tmp_path / "plain", kill=False)
        caplog.clear()
        before, positions, fills, in_memory, fills_after, sells, trades, balances, left = run(tmp_path / "kill", True)
    messages = [r.getMessage() for r in caplog.records]
    assert before == ["open"]  # the kill landed after the fill was saved and before the position closed
    (pos,) = positions
    assert (pos.status, pos.exit_reason, pos.exit_price) == ("closed", "take_profit", D("106"))
    (plain_pos,) = plain[1]
    assert (pos.amount, pos.entry_price, pos.exit_price, pos.exit_fees, pos.pnl) == (
        plain_pos.amount, plain_pos.entry_price, plain_pos.exit_price, plain_pos.exit_fees, plain_pos.pnl)
    assert pos.pnl == balances["USDT"] - D(1000)  # exact: the dust is not counted as sold
    assert in_memory == [] and sells == 0 and left == []  # not open, not counted, nothing sent for the dust
    assert fills == fills_after and len(fills) == len(trades) == 2  # the entry and the leg, each once
    assert balances["ETH"] == D("0.0000999")  # the dust stays on the account
    assert sum("0.0000999 ETH left on the account" in m for m in messages) == 1
    assert not any("no exchange-side stop" in m or "cannot sell" in m for m in messages)


def test_a_gap_through_the_stop_limit_is_sold_by_the_emergency_path(tmp_path, caplog):
    # candle 1 opens far below the stop's limit: the stop triggers and rests unfilled (Binance behaviour)
    with market(tmp_path, [(100, 100.5, 99.5, 100), (90, 90.5, 89, 90)]) as emu:
        async def main():
            cfg = cfg_for(emu.url)
            async with session(emu, tmp_path / "live.db", cfg) as (ex, store):
                pos = await buy(ex)
                await ex.poll()
                emu.set_time(START + 2 * H)
                stuck = resting(emu)
                for _ in range(40):  # the monitor sees the price through the stop on every check
                    await ex.close_position(pos, "stop_loss", 90.0)
                    await ex.poll()
                    if pos.status == "closed":
                        break
                    await asyncio.sleep(cfg.trading.monitor_interval_s)
                return pos, stuck, ex.stop_misses, await store.get_state("stop_limit_misses")

        with caplog.at_level(logging.WARNING, logger="core.trading.live"):
            pos, stuck, misses, stored = asyncio.run(main())
    assert [s for _, t, s, _ in stuck if t == "STOP_LOSS_LIMIT"] == ["NEW"]  # triggered, unfilled
    assert pos.status == "closed"
    assert pos.exit_reason == "stop_limit_missed: stop_loss at 97, limit 96.51; sold at market"
    assert pos.exit_price < D("91") and pos.pnl < D("-8")  # the loss of the gap is reported
    assert misses == stored == 1
    assert any("did not fill" in r.getMessage() for r in caplog.records)


def test_a_stop_the_market_is_already_through_sells_at_market_at_once(tmp_path, caplog):
    with market(tmp_path, [(100, 100.5, 99.5, 100), (100, 100.1, 95, 95.5)]) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                emu.set_time(START + 2 * H)  # the market is at ~95.5; our mark still says 100
                assert await buy(ex) is None  # bought, then sold at once: no open position comes back
                (pos,) = await store.positions()
                return pos, [o.client_id[-2:] + ":" + o.status.value for o in await store.orders_of(pos.id)]

        with caplog.at_level(logging.WARNING, logger="core.trading.live"):
            pos, orders = asyncio.run(main())
    assert pos.status == "closed" and pos.exit_reason == "stop_loss"
    assert orders == ["e1:filled", "s1:rejected", "t1:rejected", "x3:filled"]  # x<n>: n counts every exit order
    assert any("already through it" in r.getMessage() for r in caplog.records)


def test_trailing_moves_the_stop_with_one_cancel_replace_and_never_leaves_it_unprotected(tmp_path):
    with market(tmp_path, [(100, 100.5, 99.5, 100), (100, 110, 99.9, 109.5)]) as emu:
        async def main():
            cfg = cfg_for(emu.url, trail_update_s=1)  # the position's strategy trails 2 % (its own exit rule)
            trail = {"trend_following": {"trailing_stop_pct": 0.02}}
            cfg = replace(cfg, strategies=replace(cfg.strategies, params=trail))
            async with session(emu, tmp_path / "live.db", cfg) as (ex, store):
                await buy(ex, target="150")
                await ex.poll()
                first = resting(emu)
                emu.set_time(START + 2 * H)
                ex.update_marks({ETH: 109.5})  # the high rises: trail 2 % under it
                await ex.poll()
                paths = [r.path for r in emu.request_log()]
                return first, resting(emu), await pdb.live(store.db), paths

        first, after, rows, paths = asyncio.run(main())
    assert [t for _, t, _, _ in first] == ["STOP_LOSS_LIMIT", "LIMIT_MAKER"]
    (row,) = rows
    assert (row.kind, row.stop) == ("stop", D("107.31"))  # 109.5 * 0.98
    assert [(t, s, lst) for _, t, s, lst in after] == [("STOP_LOSS_LIMIT", "NEW", -1)]
    assert paths.count("/api/v3/order/cancelReplace") == 1
    assert "/api/v3/orderList" not in paths  # the OCO was never cancelled by a separate request


def test_an_exit_pitrader_makes_cancels_the_list_first_then_sells_what_the_account_holds(tmp_path):
    with market(tmp_path, [(100, 100.5, 99.5, 100)]) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                pos = await buy(ex)
                await ex.poll()
                await ex.close_position(pos, "manual: test", 100.0)
                return pos, [r.method + " " + r.path for r in emu.request_log()
                             if r.method in ("POST", "DELETE")]

        pos, writes = asyncio.run(main())
        balances = emu.balances
    assert pos.status == "closed" and pos.exit_reason == "manual: test"
    assert writes == ["POST /api/v3/order", "POST /api/v3/orderList/oco", "DELETE /api/v3/orderList",
                      "POST /api/v3/order"]
    assert balances.get("ETH", D(0)) == 0 and resting(emu) == []


def test_a_list_cancelled_by_hand_is_replaced(tmp_path):
    with market(tmp_path, [(100, 100.5, 99.5, 100)]) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db", cfg_for(emu.url)) as (ex, store):
                await buy(ex)
                await ex.poll()
                await ex.gateway.exchange.private_delete_openorders({"symbol": "ETHUSDT"})  # someone, by hand
                await ex.poll()
                await ex.poll()
                return resting(emu)

        after = asyncio.run(main())
    assert [(cid[-2:], t) for cid, t, _, _ in after] == [("s2", "STOP_LOSS_LIMIT"), ("t2", "LIMIT_MAKER")]


# --- the filters, without a server -----------------------------------------------------------------
RULES = SymbolRules("ETH/USDT", frozenset({"LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"}), True, True,
                    D("0.01"), D("0.01"), D("1000000"), D("0.0001"), D("0.0001"), D("9000"), D("5"), D("9000000"),
                    D("5"), D("0.2"), 200, 5)


def test_conform_protection_applies_each_filter():
    ok = conform_protection(RULES, D("0.99999"), D("97.001"), D("0.005"), D("106.004"), D("100"))
    assert ok == Protective(D("0.9999"), D("97.01"), D("96.51"), D("106.01"))
    no_oco = conform_protection(replace(RULES, oco_allowed=False), D("1"), D("97"), D("0.005"), D("106"), D("100"))
    assert no_oco.target is None and "OCO" in no_oco.note
    assert isinstance(conform_protection(replace(RULES, order_types=frozenset({"LIMIT"})), D(1), D(97), D("0.005"),
                                         None, D(100)), Refusal)
    assert "notional" in conform_protection(RULES, D("0.05"), D("97"), D("0.005"), None, D(100)).reason
    assert "MAX_NUM_ALGO" in conform_protection(RULES, D(1), D(97), D("0.005"), None, D(100), 5, 5).reason
    deep = conform_protection(RULES, D(1), D("20.05"), D("0.005"), None, D(100))  # limit 19.94 < 100 * 0.2
    assert deep.limit == D("20.00") and deep.stop == D("20.05")
    assert "PERCENT_PRICE" in conform_protection(RULES, D(1), D("19.9"), D("0.005"), None, D(100)).reason
    high = conform_protection(RULES, D(1), D(97), D("0.005"), D("600"), D(100))
    assert high.target is None and "PERCENT_PRICE" in high.note


@settings(max_examples=200, deadline=None)
@given(amount=st.decimals("0.001", "50", places=6), stop=st.decimals("1", "99", places=5),
       offset=st.decimals("0.001", "0.1", places=4), up=st.decimals("1.01", "3", places=3),
       avg=st.decimals("50", "200", places=2))
def test_a_protection_that_passes_is_one_the_exchange_accepts(amount, stop, offset, up, avg):
    p = conform_protection(RULES, amount, stop, offset, stop * up, avg)
    if isinstance(p, Refusal):
        return
    tick, step = RULES.tick, RULES.step
    assert p.amount <= amount and p.amount % step == 0 and p.amount >= RULES.min_qty
    assert p.stop >= stop and p.stop % tick == 0 and p.limit % tick == 0 and p.limit <= p.stop
    assert p.limit >= avg * RULES.ask_down and p.amount * p.limit >= RULES.min_notional
    if p.target is not None:
        assert p.target > p.stop and p.target % tick == 0 and p.target <= avg * RULES.ask_up


@pytest.mark.parametrize("cid, kind", [("ptab12cd-3-s7", "stop"), ("ptab12cd-3-t7", "target"),
                                       ("ptab12cd-3-x1", None), ("ptab12cd-3-e1", None)])
def test_leg_kinds_come_from_the_client_id(cid, kind):
    from core.trading.protection_placement import leg_kind
    assert leg_kind(cid) == kind


def test_store_counts_are_read_only_safe(tmp_path):
    from core.store.schema import connect_sync
    conn = connect_sync(tmp_path / "x.db")
    assert pdb.resting_sync(conn) == {} and pdb.count_sync(conn, "active") == 0
    assert BUY == "buy"


# --- the paper / backtest model of a resting stop-limit --------------------------------------------
@pytest.mark.parametrize("candle, outcome", [
    ((100, 101, 99, 100.5), (False, None)),  # never reaches the stop
    ((100, 100.5, 96, 96.5), (True, D(97))),  # falls through the stop: fills at it
    ((96.8, 98, 96, 97.5), (True, D("96.8"))),  # opens between stop and limit: sells at the open
    ((90, 97, 89, 96), (True, D("96.51"))),  # gaps through the limit, comes back up to it: fills at the limit
    ((90, 90.5, 89, 90), (True, None)),  # gaps through the limit and stays below: missed
])
def test_a_resting_stop_limit_over_one_candle(candle, outcome):
    from core.trading.stop_fill import stop_limit_outcome
    r = stop_limit_outcome(tuple(D(str(x)) for x in candle), D(97), D("96.51"))
    assert (r.triggered, r.price) == outcome and r.missed == (outcome == (True, None))


@settings(max_examples=300, deadline=None)
@given(o=st.decimals("50", "150", places=2), a=st.decimals("50", "150", places=2),
       b=st.decimals("50", "150", places=2), c=st.decimals("50", "150", places=2))
def test_a_stop_limit_never_fills_below_its_limit_nor_outside_the_candle(o, a, b, c):
    from core.trading.stop_fill import stop_limit_outcome
    h, low = max(o, a, b, c), min(o, a, b, c)
    r = stop_limit_outcome((o, h, low, c), D(97), D("96.51"))
    assert r.triggered == (low <= 97)
    if r.price is not None:
        assert D("96.51") <= r.price <= max(o, D(97)) and low <= r.price <= h


def _pos(stop="97", target="106", trail="0", highest="100"):
    from core.models import Position
    return Position(symbol=ETH, strategy="t", amount=D(1), entry_price=D(100), stop=D(stop), target=D(target),
                    opened_ms=0, trail_pct=D(trail), highest=D(highest))


@pytest.mark.parametrize("mode, candle, expect", [
    ("oco", (100, 100.5, 96, 96.5), ("stop_loss", D(97))),
    ("oco", (90, 97, 89, 96), ("stop_loss", D("96.515"))),  # back up to the (unrounded) limit: filled there
    ("oco", (90, 90.5, 89, 90), ("stop_limit_missed: stop_loss at 97, limit 96.515; sold at market", D(90))),
    ("oco", (107, 108, 106.5, 107.5), ("take_profit", D(106))),  # a resting maker sell fills at its price
    ("stop", (107, 108, 106.5, 107.5), ("take_profit", D(107))),  # the monitor's market sell: at the open
    ("off", (90, 90.5, 89, 90), ("stop_loss", D(90))),  # as before exchange-side stops
])
def test_replays_exit_as_the_resting_exchange_orders_would(mode, candle, expect):
    from core.trading.exits import candle_exit
    from core.trading.stop_fill import resting_exit
    cfg = make_cfg("paper", trading={"exchange_stops": mode}).trading
    pos = _pos()
    c = tuple(D(str(x)) for x in candle)
    assert resting_exit(pos, c, candle_exit(pos, c, 0, cfg), cfg) == expect


def test_a_trailing_stop_rests_at_the_trail(tmp_path):
    from core.trading.exits import candle_exit
    from core.trading.stop_fill import resting_exit
    cfg = make_cfg("paper", trading={"exchange_stops": "oco", "trailing_stop_pct": 0.02}).trading
    pos = _pos(highest="110")  # trail at 107.8
    c = (D(105), D("105.5"), D(104), D(104.5))
    assert resting_exit(pos, c, candle_exit(pos, c, 0, cfg), cfg)[0].startswith("stop_limit_missed: trailing_stop at 107.8")


def test_paper_counts_a_stop_below_its_limit_as_a_missed_stop_limit(tmp_path):
    from core.clock import VirtualClock
    from core.trading.paper import PaperExecutor

    class NoBook:
        async def load_markets(self):
            return {}

        async def fetch_order_book(self, symbol, limit=20):
            from core.exchange.gateway import NotSupported
            raise NotSupported("none")

    async def main():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(make_cfg("paper"), store, NoBook(), VirtualClock(START))
            await ex.start()
            pos = await ex.open_position(opp(ETH, price=100.0), Approval(D(1), D(100), D(97), D(106), "t"))
            await ex.close_position(pos, "stop_loss", 90.0)
            pos2 = await ex.open_position(opp(ETH, price=100.0), Approval(D(1), D(100), D(97), D(106), "t"))
            await ex.close_position(pos2, "stop_loss", 96.8)
            return pos, pos2

    pos, pos2 = asyncio.run(main())
    assert pos.exit_reason.startswith("stop_limit_missed: stop_loss at 97, limit 96.515")
    assert pos2.exit_reason == "stop_loss"
    from core.backtest.runner import exit_reasons
    assert exit_reasons([pos, pos2]) == {"stop_limit_missed": 1, "stop_loss": 1}
