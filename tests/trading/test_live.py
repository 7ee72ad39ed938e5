"""Live executor through real ccxt against the loopback Binance emulator.

Entries and every kind of exit, partial fills, exchange rejections, entry timeouts, faults on
order placement, restarts in the middle of an order, and start-up reconciliation. Each test
checks the store against the emulator's own books: every emulator trade recorded once, no
client id accepted twice, balances equal to what the fills say.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path


from core.exchange.ccxt_gateway import CcxtGateway
from core.clock import VirtualClock, WallClock
from core.secrets import Secrets
from core.trading.exits import exit_reason
from core.trading.live import LiveExecutor
from core.models import BUY, Order, OrderStatus, Position
from core.trading.risk import Approval
from core.store.state import Store
from tests.support.emulator import running_emulator
from tests.support.trading import make_cfg, opp

D = Decimal
ETH = "ETH/USDT"


def live_cfg(url: str, **sections):
    """Exchange-side stops off unless asked for: these tests count every order (tests/trading/test_protection.py
    covers them)."""
    sections["trading"] = {"exchange_stops": "off", **sections.get("trading", {})}
    cfg = make_cfg("live", **sections)
    return replace(cfg, exchange=replace(cfg.exchange, api_url=url, timeout_s=3.0))


@asynccontextmanager
async def session(emu, db: Path, cfg=None, clock=None):
    """A gateway + store + started executor, like one run of the service."""
    cfg = cfg or live_cfg(emu.url)
    gw = CcxtGateway(cfg, Secrets(emu.api_key, emu.api_secret), WallClock())
    try:
        async with Store.open(db) as store:
            ex = LiveExecutor(cfg, store, gw, clock or VirtualClock(WallClock().now_ms()))
            await ex.start()
            yield ex, store, gw
    finally:
        await gw.close()


async def price(gw, symbol=ETH) -> D:
    return D(str((await gw.fetch_tickers([symbol]))[symbol].last))


async def enter(ex, gw, amount: str, symbol=ETH, px: D | None = None) -> object:
    px = px or await price(gw, symbol)
    return await ex.open_position(opp(symbol, price=float(px)),
                                  Approval(D(amount), px, px * D("0.97"), px * D("1.06"), "test"))


async def check_books(emu, store, start_usdt: D) -> None:
    """The store agrees with the exchange: every trade once, ids unique, balances from fills."""
    fills = await store.fills()
    emu_trades = emu.trades
    assert sorted((f.symbol, f.trade_id) for f in fills) == sorted(
        (f"{t.symbol[:-4]}/USDT", str(t.id)) for t in emu_trades)
    ids = [o.client_id for o in emu.order_list]
    assert len(ids) == len(set(ids)), "a client order id was accepted twice"
    async with store.db.execute("SELECT client_id FROM orders") as cur:
        ours = {r[0] for r in await cur.fetchall()}
    assert set(ids) <= ours  # nothing on the exchange that the store does not know
    posts = sum(1 for r in emu.request_log() if r.method == "POST" and r.path == "/api/v3/order")
    assert posts <= len(ours)  # each stored order sent at most once
    usdt, base = start_usdt, {}
    for f in fills:
        value = f.quantity * f.price
        a = f.symbol.split("/")[0]
        if f.side == BUY:
            usdt -= value
            base[a] = base.get(a, D(0)) + f.quantity - (f.fee if f.fee_asset == a else 0)
        else:
            usdt += value - (f.fee if f.fee_asset == "USDT" else 0)
            base[a] = base.get(a, D(0)) - f.quantity
    bal = emu.balances
    assert bal.get("USDT", D(0)) == usdt.quantize(D("0.00000001"))
    for a, q in base.items():
        assert bal.get(a, D(0)) == q


def test_entry_and_every_kind_of_exit(tmp_path):
    with running_emulator(balances={"USDT": "2000"}) as emu:
        async def main():
            cfg = live_cfg(emu.url, trading={"max_hold_hours": 48})
            t = cfg.trading
            async with session(emu, tmp_path / "live.db", cfg) as (ex, store, gw):
                closed = {}
                for kind in ("stop_loss", "take_profit", "trailing_stop", "time_exit", "emergency"):
                    pos = await enter(ex, gw, "0.1")
                    assert pos is not None and pos.status == "open" and pos.amount == D("0.0999")  # 0.1 % fee in ETH
                    emu.advance(3_600_000)
                    px = await price(gw)
                    tick = D("0.01")
                    if kind == "stop_loss":
                        pos.stop = px + tick
                    elif kind == "take_profit":
                        pos.target = px - tick
                    elif kind == "trailing_stop":
                        pos.stop, pos.target = px * D("0.5"), px * 2
                        pos.trail_pct, pos.highest = D("0.01"), px * D("1.02")  # trail 1 % under a high 2 % up
                    elif kind == "time_exit":
                        pos.stop, pos.target = px * D("0.5"), px * 2
                        pos.opened_ms -= 49 * 3_600_000
                    now = ex.clock.now_ms()
                    reason = "emergency: drawdown" if kind == "emergency" else exit_reason(pos, px, now, t)
                    assert reason.startswith(kind)
                    await ex.close_position(pos, reason, float(px))
                    closed[kind] = pos
                positions = await store.positions("closed")
                assert [p.exit_reason for p in positions] == [p.exit_reason for p in closed.values()]
                assert all(p.status == "closed" and p.exit_price is not None and p.pnl is not None for p in positions)
                assert not ex.positions
                for p in positions:
                    orders = [o for o in await ex._orders_of(p.id)]
                    assert [o.status for o in orders] == [OrderStatus.FILLED, OrderStatus.FILLED]
                    assert orders[1].amount == D("0.0999")  # what the account holds, to the lot step
                await check_books(emu, store, D("2000"))
                # cash PnL of the closed trades is exactly what the account lost or made
                assert emu.balances["USDT"] == D("2000") + sum(p.pnl for p in positions)

        asyncio.run(main())


def test_partial_fills_then_cancel_after_timeout(tmp_path):
    with running_emulator(balances={"USDT": "1000"}, partial_fill_ratio=0.5) as emu:
        async def main():
            cfg = live_cfg(emu.url, trading={"order_type": "limit", "entry_timeout_s": 300})
            clock = VirtualClock(WallClock().now_ms())
            async with session(emu, tmp_path / "live.db", cfg, clock) as (ex, store, gw):
                px = await price(gw)
                limit = (px * D("0.998")).quantize(D("0.01"))
                pos = await enter(ex, gw, "0.2", px=limit)
                assert pos is not None and pos.amount == 0
                order = (await ex._orders_of(pos.id))[0]
                assert order.status == OrderStatus.SUBMITTED and order.exchange_id
                for hour in range(48):  # wait for a candle that trades through the limit
                    emu.advance(3_600_000)
                    await ex.poll()
                    if pos.amount > 0:
                        break
                order = await store.get_order(order.client_id)
                assert order.status == OrderStatus.PARTIALLY_FILLED and order.filled == D("0.1")
                assert pos.amount == D("0.1") - D("0.0001") and pos.entry_price == limit
                pf = await ex.portfolio({ETH: float(limit)})
                assert pf.pending[ETH] == D("0.1") * limit  # the unfilled half still reserves cash
                clock.advance_to(clock.now_ms() + 300_000)
                await ex.poll()  # entry timeout: the rest is cancelled, the filled part is the position
                order = await store.get_order(order.client_id)
                assert order.status == OrderStatus.CANCELLED and order.filled == D("0.1")
                assert pos.status == "open" and pos.amount == D("0.0999")
                assert emu.orders[order.client_id].status == "CANCELED"
                await ex.close_position(pos, "take_profit", float(await price(gw)))
                assert pos.status == "closed" and pos.exit_price is not None
                await check_books(emu, store, D("1000"))

        asyncio.run(main())


def test_rejections_insufficient_balance_and_min_notional(tmp_path, caplog):
    with running_emulator(balances={"USDT": "100"}) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                too_big = await enter(ex, gw, "1")  # ~1400 USDT with 100 on the account
                too_small = await enter(ex, gw, "0.001")  # ~1.4 USDT, under the 5 USDT minimum notional
                closed = await store.positions("closed")
                orders = [await store.get_order(o.client_id) for p in closed for o in await ex._orders_of(p.id)]
                await check_books(emu, store, D("100"))
                return too_big, too_small, closed, orders

        with caplog.at_level(logging.WARNING, logger="core.trading.live"):
            too_big, too_small, closed, orders = asyncio.run(main())
        assert too_big is None and too_small is None
        assert [o.status for o in orders] == [OrderStatus.REJECTED, OrderStatus.REJECTED]
        assert "insufficient balance" in orders[0].reason and "NOTIONAL" in orders[1].reason
        assert all(p.amount == 0 and p.exit_reason.startswith("entry rejected") and p.pnl == 0 for p in closed)
        assert sum("rejected by the exchange" in r.getMessage() for r in caplog.records) == 2
        assert emu.balances == {"USDT": D("100")}


def test_unfilled_entry_cancelled_after_timeout(tmp_path):
    with running_emulator(balances={"USDT": "1000"}) as emu:
        async def main():
            cfg = live_cfg(emu.url, trading={"order_type": "limit", "entry_timeout_s": 60})
            clock = VirtualClock(WallClock().now_ms())
            async with session(emu, tmp_path / "live.db", cfg, clock) as (ex, store, gw):
                px = await price(gw)
                pos = await enter(ex, gw, "0.1", px=(px * D("0.9")).quantize(D("0.01")))
                await ex.poll()
                assert pos.status == "open" and emu.locked.get("USDT")
                clock.advance_to(clock.now_ms() + 59_000)
                await ex.poll()
                assert pos.status == "open"
                clock.advance_to(clock.now_ms() + 1_000)
                await ex.poll()
                order = (await ex._orders_of(pos.id))[0]
                assert order.status == OrderStatus.CANCELLED and order.filled == 0
                assert pos.status == "closed" and pos.amount == 0 and "entry_timeout" in pos.exit_reason
                assert emu.balances == {"USDT": D("1000")} and not emu.locked.get("USDT")
                events = [r[0] async for r in await store.db.execute(
                    "SELECT status FROM order_events WHERE client_id=? ORDER BY id", (order.client_id,))]
                assert events == ["new", "submitted", "cancelled"]  # every transition persisted

        asyncio.run(main())


def test_order_applied_although_the_reply_failed(tmp_path, caplog):
    """A 5xx that strikes after the exchange placed the order: found by client id, never resent."""
    with running_emulator(balances={"USDT": "1000"}) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                px = await price(gw)
                emu.faults.error_5xx_rate, emu.faults.after_rate = 1.0, 1.0
                pos = await ex.open_position(opp(ETH, price=float(px)),
                                             Approval(D("0.1"), px, px * D("0.97"), px * D("1.06"), "t"))
                order = (await ex._orders_of(pos.id))[0]
                unknown = (order.status, order.exchange_id, pos.amount)
                emu.faults.clear()
                for _ in range(40):  # the gateway pauses order requests for a few seconds after the failures
                    await ex.poll()
                    order = await store.get_order(order.client_id)
                    if order.status.is_final:
                        break
                    await asyncio.sleep(0.25)
                await check_books(emu, store, D("1000"))
                return unknown, order, pos

        with caplog.at_level(logging.WARNING):
            unknown, order, pos = asyncio.run(main())
        assert unknown == (OrderStatus.SUBMITTED, None, D(0))  # outcome unknown: nothing assumed
        assert order.status == OrderStatus.FILLED and pos.amount == D("0.0999")
        assert len(emu.order_list) == 1
        assert any("no clear answer" in r.getMessage() for r in caplog.records)


def test_restart_after_crash_before_send(tmp_path):
    """Persisted as new, then the process died before sending: never sent, expired, no trade."""
    with running_emulator(balances={"USDT": "1000"}) as emu:
        async def crash():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                px = await price(gw)
                pos = Position(symbol=ETH, strategy="t", amount=D(0), entry_price=px, stop=px * D("0.97"),
                               target=px * D("1.06"), opened_ms=ex.clock.now_ms())
                await ex.record(lambda p: Order(f"pt{ex.tag}-{p.id}-e1", ETH, BUY, "market", D("0.1"), None,
                                                "entry", p.id, created_ms=ex.clock.now_ms()), pos)

        asyncio.run(crash())

        async def restart():
            clock = VirtualClock(WallClock().now_ms())
            async with session(emu, tmp_path / "live.db", clock=clock) as (ex, store, gw):
                young = [p.status for p in ex.positions]  # too recent to be sure: still waiting
                clock.advance_to(clock.now_ms() + 31_000)
                await ex.poll()
                pos = (await store.positions())[0]
                order = (await ex._orders_of(pos.id))[0]
                await check_books(emu, store, D("1000"))
                return young, pos, order

        young, pos, order = asyncio.run(restart())
        assert young == ["open"]
        assert order.status == OrderStatus.EXPIRED and order.reason == "never reached the exchange"
        assert pos.status == "closed" and pos.amount == 0 and pos.exit_reason.startswith("entry expired")
        assert emu.order_list == [] and emu.balances == {"USDT": D("1000")}


def test_restart_after_crash_between_send_and_reply(tmp_path, caplog):
    """Sent, filled, and the process died before the reply was stored: adopted, not duplicated."""
    with running_emulator(balances={"USDT": "1000"}) as emu:
        async def crash():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                px = await price(gw)
                pos = Position(symbol=ETH, strategy="t", amount=D(0), entry_price=px, stop=px * D("0.97"),
                               target=px * D("1.06"), opened_ms=ex.clock.now_ms())
                order, _ = await ex.record(lambda p: Order(f"pt{ex.tag}-{p.id}-e1", ETH, BUY, "market", D("0.1"),
                                                           None, "entry", p.id, created_ms=ex.clock.now_ms()), pos)
                await gw.create_order(order)  # reached the exchange; the reply is lost with the process

        asyncio.run(crash())

        async def restart():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                pos = ex.positions[0]
                order = (await ex._orders_of(pos.id))[0]
                await check_books(emu, store, D("1000"))
                await ex.close_position(pos, "stop_loss", float(await price(gw)))
                await check_books(emu, store, D("1000"))
                return pos, order

        with caplog.at_level(logging.WARNING, logger="core.trading.live"):
            pos, order = asyncio.run(restart())
        assert order.status == OrderStatus.FILLED and pos.status == "closed" and pos.exit_reason == "stop_loss"
        assert len(emu.order_list) == 2 and len(emu.trades) == 2
        assert any("changed while pitrader was down" in r.getMessage() for r in caplog.records)


def test_restart_finds_fills_made_while_down_and_flags_strangers(tmp_path, caplog):
    """A resting limit order fills while the bot is down; a manual trade and order are flagged."""
    with running_emulator(balances={"USDT": "3000", "BTC": "0.01"}) as emu:
        cfg = live_cfg(emu.url, trading={"order_type": "limit", "entry_timeout_s": 86400})

        async def first():
            async with session(emu, tmp_path / "live.db", cfg) as (ex, store, gw):
                px = await price(gw)
                pos = await enter(ex, gw, "0.2", px=(px * D("0.998")).quantize(D("0.01")))
                assert pos.amount == 0

        asyncio.run(first())
        for _ in range(48):  # the bot is down while the market trades through the limit
            emu.advance(3_600_000)
            if not emu.account.open_orders("ETHUSDT"):
                break

        async def by_hand():  # meanwhile someone trades by hand on the same account
            gw = CcxtGateway(cfg, Secrets(emu.api_key, emu.api_secret), WallClock())
            try:
                await gw.create_order(Order("by-hand-1", ETH, BUY, "market", D("0.05"), None, "entry"))
                await gw.create_order(Order("by-hand-2", "BTC/USDT", "sell", "limit", D("0.005"),
                                            (await price(gw, "BTC/USDT") * 2).quantize(D("0.01")), "exit"))
            finally:
                await gw.close()

        asyncio.run(by_hand())

        async def restart():
            async with session(emu, tmp_path / "live.db", cfg) as (ex, store, gw):
                return ex.positions, await store.fills()

        with caplog.at_level(logging.WARNING, logger="core.trading.live"):
            positions, fills = asyncio.run(restart())
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert len(positions) == 1 and positions[0].amount == D("0.1998")
        assert fills and all(f.order_id.endswith("-1-e1") for f in fills)  # only the bot's order, recorded
        assert "was not made by this pitrader" in text  # the manual ETH buy
        assert "by-hand-2" in text and "not placed by this pitrader" in text  # the foreign open order
        assert "no pitrader position accounts for" in text  # 0.005 BTC free, not ours
        # ETH beyond the position: 0.1998 ours + the manual 0.05 less its 0.1 % fee in ETH, and the wording for
        # a base pitrader also holds
        assert "the account holds 0.24975 ETH, more than pitrader's positions (0.1998): the extra 0.04995 " in text


def test_position_whose_balance_vanished_is_closed_and_flagged(tmp_path, caplog):
    with running_emulator(balances={"USDT": "1000"}) as emu:
        async def first():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                pos = await enter(ex, gw, "0.1")
                # sold by hand while the bot is stopped
                await gw.create_order(Order("by-hand-sell", ETH, "sell", "market", D("0.0999"), None, "exit"))
                return pos.id

        pid = asyncio.run(first())

        async def restart():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                return ex.positions, [p for p in await store.positions() if p.id == pid][0]

        with caplog.at_level(logging.WARNING, logger="core"):
            open_now, pos = asyncio.run(restart())
        assert open_now == [] and pos.status == "closed" and pos.exit_reason == "balance_missing"
        assert any("the account has 0" in r.getMessage() for r in caplog.records)


def test_filled_entry_whose_trades_lag_stays_open_until_they_appear(tmp_path, caplog):
    """The exchange says FILLED but its trade history does not show the trades yet: the position
    must not be closed as "no trade" (coins on the account with no stop); it waits and says so."""
    from core.trading.live import MAX_FILL_TRIES, SLOW_LOOK_EVERY

    caplog.set_level(logging.WARNING)
    with running_emulator(balances={"USDT": "2000"}) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                real = gw.fetch_my_trades

                async def lagging(symbol, since_ms=None):
                    return []
                gw.fetch_my_trades = lagging
                await enter(ex, gw, "0.1")
                for _ in range(MAX_FILL_TRIES + 5):
                    await ex.poll()
                assert any("stays open until its trades appear" in r.message for r in caplog.records)
                pos = (await store.positions())[0]
                assert pos.status != "closed" and ex.positions  # still watched, not written off
                gw.fetch_my_trades = real
                for _ in range(SLOW_LOOK_EVERY + 1):
                    await ex.poll()
                pos = ex.positions[0]
                assert pos.status == "open" and pos.amount == D("0.0999")  # the trades arrived: a real position
                await check_books(emu, store, D("2000"))

        asyncio.run(main())


def test_a_fill_whose_trades_lag_marks_the_cached_balance_stale(tmp_path):
    """Issue 14 item 13: the exchange reports a market entry filled before its trades can be
    fetched. The cached balance does not show the cash that entry spent, so the next entry of the
    same cycle must be sized on a fresh balance, not on money already gone (and the trades' later
    arrival must not be subtracted twice)."""
    with running_emulator(balances={"USDT": "2000"}) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                prices = {ETH: float(await price(gw))}
                before = await ex.portfolio(prices)
                assert before.cash == D("2000")
                real = gw.fetch_my_trades

                async def lagging(symbol, since_ms=None):
                    return []
                gw.fetch_my_trades = lagging
                await enter(ex, gw, "0.5")
                after = await ex.portfolio(prices)  # same cycle, well inside the balance cache's lifetime
                assert after.cash == emu.balances["USDT"] < D("2000")
                gw.fetch_my_trades = real
                await ex.poll()  # the trades arrive and are recorded
                assert (await ex.portfolio(prices)).cash == emu.balances["USDT"]
                assert ex.positions[0].amount == D("0.4995")
                await check_books(emu, store, D("2000"))

        asyncio.run(main())


def test_a_failed_commit_during_an_exit_leaves_memory_as_the_store_has_it(tmp_path):
    """Issue 15 item 4, live: the exit order's row does not land, so nothing is sent, and the
    position is open (not "closing") in memory as in the store; the next exit works."""
    import pytest
    from tests.trading.test_paper import FailingCommit

    with running_emulator(balances={"USDT": "2000"}) as emu:
        async def main():
            async with session(emu, tmp_path / "live.db") as (ex, store, gw):
                pos = await enter(ex, gw, "0.1")
                orders_before = len(emu.order_list)
                store.db = FailingCommit(store.db)
                store.db.armed = True
                with pytest.raises(Exception, match="disk is full"):
                    await ex.close_position(pos, "stop_loss", float(await price(gw)))
                assert len(emu.order_list) == orders_before  # the unrecorded exit was never sent
                assert pos.status == "open" and pos.exit_reason is None and ex.positions == [pos]
                assert (await store.positions("open"))[0].status == "open"
                await ex.close_position(pos, "stop_loss", float(await price(gw)))
                assert pos.status == "closed" and not ex.positions
                await check_books(emu, store, D("2000"))

        asyncio.run(main())
