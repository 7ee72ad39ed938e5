"""Paper executor on the real sample data: fills, fees, slippage, half the spread, limit orders, exact restart."""
from __future__ import annotations

import asyncio
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from core.clock import VirtualClock
from core.models import OrderStatus
from core.trading.paper import PaperExecutor
from core.trading.executor import walk
from core.exchange.replay import ReplayGateway
from core.trading.risk import Approval
from core.store.state import Store
from tests.support.trading import SAMPLE, btc_depth, make_cfg, opp

D = Decimal
T = 1_619_827_200_000  # 2021-05-01 00:00 UTC, inside the sample


def replay(start: int = T) -> tuple[VirtualClock, ReplayGateway]:
    """A clock and the recorded market it drives; each test builds its own config and store."""
    clock = VirtualClock(start)
    gw = ReplayGateway(SAMPLE, clock, symbols=["BTC/USDT", "ETH/USDT", "ADA/USDT"])
    return clock, gw


async def last_prices(gw) -> dict[str, float]:
    return {s: t.last for s, t in (await gw.fetch_tickers()).items()}


def test_market_entry_exit_cash_and_restart(tmp_path):
    cfg = make_cfg(paper={"starting_balance": D("1000"), "fee_pct": D("0.001"), "slippage_pct": D("0.0005"),
                          "spread_pct": D("0.001")})
    clock, gw = replay()

    async def first():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            prices = await last_prices(gw)
            eth = D(str(prices["ETH/USDT"]))
            pf = await ex.portfolio(prices)
            assert pf.cash == D("1000") and pf.equity == D("1000")
            appr = Approval(amount=D("0.05"), price=eth, stop=eth * D("0.97"), target=eth * D("1.06"), reason="t")
            pos = await ex.open_position(opp("ETH/USDT", price=float(eth)), appr)
            fill_px = eth * D("1.0005") * D("1.0005")  # no book in recorded data: last price + half spread + slippage
            fee = D("0.05") * fill_px * D("0.001")
            assert pos.amount == D("0.05") and pos.entry_price == fill_px and pos.entry_fees == fee
            assert ex.cash == D("1000") - D("0.05") * fill_px - fee
            fills = await store.fills()
            assert len(fills) == 1 and fills[0].source == "bot" and fills[0].fee_asset == "USDT"
            order = await store.get_order(fills[0].order_id)
            assert order.status == OrderStatus.FILLED and order.position_id == pos.id
            # a second position stays open across the restart
            btc = D(str(prices["BTC/USDT"]))
            await ex.open_position(opp("BTC/USDT", price=float(btc)),
                                   Approval(D("0.002"), btc, btc * D("0.97"), btc * D("1.06"), "t"))
            clock.advance_to(T + 6 * 3_600_000)
            prices = await last_prices(gw)
            exit_at = D(str(prices["ETH/USDT"]))
            await ex.close_position(pos, "take_profit", float(exit_at))
            sell_px = exit_at * D("0.9995") * D("0.9995")
            sell_fee = D("0.05") * sell_px * D("0.001")
            assert pos.status == "closed" and pos.exit_reason == "take_profit" and pos.exit_price == sell_px
            assert pos.pnl == D("0.05") * sell_px - sell_fee - D("0.05") * fill_px - fee
            return ex.cash, (await ex.portfolio(prices)).equity, len(ex.positions)

    cash, equity, n_open = asyncio.run(first())
    assert n_open == 1

    async def restart():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            return ex.cash, (await ex.portfolio(await last_prices(gw))).equity, [p.symbol for p in ex.positions]

    cash2, equity2, open2 = asyncio.run(restart())
    assert cash2 == cash and equity2 == equity and open2 == ["BTC/USDT"]  # exactly, to the last digit


def test_fills_walk_the_book_when_given(tmp_path):
    """A fill against a real book pays its spread by walking it: the configured spread is not added on top."""
    cfg = make_cfg(paper={"starting_balance": D("1000000"), "slippage_pct": D("0"), "spread_pct": D("0.02")})
    clock, gw = replay()
    book = btc_depth()

    async def fetch_book(symbol, limit=20):
        return book

    async def main():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            pos = await ex.open_position(opp(price=13896.14), Approval(D("20"), D("13896.14"), D("13500"),
                                                                        D("14500"), "t"), book=book)
            gw.fetch_order_book = fetch_book  # the exit fetches the book itself
            await ex.close_position(pos, "take_profit", 13896.14)
            return pos

    pos = asyncio.run(main())
    # 20 BTC take the first levels of the real book: average above the best ask, exactly the walk
    assert D("13896.14") < pos.entry_price < D("13897") and pos.amount == D("20")

    def by_hand(levels, amount):
        left, cost = amount, D(0)
        for p, a in levels:
            take = min(left, D(str(a)))
            cost, left = cost + take * D(str(p)), left - take
            if left == 0:
                return cost / amount

    assert pos.entry_price == by_hand(book.asks, D("20")) == walk(book.asks, D("20"))
    assert pos.exit_price == by_hand(book.bids, D("20")) < D(str(book.bids[0][0]))


def test_bookless_fills_pay_exactly_half_the_spread(tmp_path):
    """Issue 16 item 4: without a book a market buy pays last x (1 + spread/2), then slippage, then the
    fee; every exit (target, stop, the stop-limit model's gapped stop, manual) the mirror image."""
    from core.trading.exits import STOP_LOSS

    cfg = make_cfg(paper={"starting_balance": D("100000"), "fee_pct": D("0.001"), "slippage_pct": D("0.0005"),
                          "spread_pct": D("0.002")}, trading={"exchange_stops": "oco"})
    clock, gw = replay()

    async def main():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            out = []
            for reason, exit_px, stop in (("take_profit", "2100", "1940"), (STOP_LOSS, "1800", "1940"),
                                          ("manual: telegram", "1990", "1940")):
                pos = await ex.open_position(opp("ETH/USDT", price=2000.0),
                                             Approval(D("1"), D("2000"), D(stop), D("2120"), "t"))
                await ex.close_position(pos, reason, float(exit_px))
                out.append(pos)
            return out, ex.cash

    positions, cash = asyncio.run(main())
    buy = D("2000") * D("1.001") * D("1.0005")  # half of 0.2 %, then 0.05 % slippage
    assert buy == D("2003.001")
    paid = D(0)
    for pos, exit_px in zip(positions, ("2100", "1800", "1990")):
        sell = D(exit_px) * D("0.999") * D("0.9995")
        assert pos.entry_price == buy and pos.exit_price == sell
        assert pos.entry_fees == buy * D("0.001") and pos.exit_fees == sell * D("0.001")
        assert pos.pnl == sell - buy - buy * D("0.001") - sell * D("0.001")
        paid += sell * D("0.999") - buy * D("1.001")
    assert positions[0].exit_price == D("2096.85105")  # 2100 x 0.999 x 0.9995, by hand
    assert positions[1].exit_reason.startswith("stop_limit_missed")  # gapped through its limit: sold at market
    assert cash == D("100000") + paid


def test_limit_entries_do_not_pay_the_spread(tmp_path):
    """A resting limit buy fills at its own price: it never crosses the spread."""
    cfg = make_cfg(trading={"order_type": "limit"}, paper={"starting_balance": D("1000"), "spread_pct": D("0.01")})
    clock, gw = replay()

    async def main():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            pos = await ex.open_position(opp("ETH/USDT", price=2000.0),
                                         Approval(D("0.01"), D("2000"), D("1940"), D("2120"), "t"))
            await ex.portfolio({"ETH/USDT": 1999.0})
            await ex.poll()
            return pos

    assert asyncio.run(main()).entry_price == D("2000")


prices = st.decimals(min_value=D("0.00001"), max_value=D("100000"), places=5)
fractions = st.decimals(min_value=D(0), max_value=D("0.05"), places=6)


@settings(max_examples=200, deadline=None)
@given(last=prices, spread=fractions, slip=fractions)
def test_market_price_property(last, spread, slip):
    """Bookless: exactly last x (1 +- spread/2) x (1 +- slip), against us, and a buy and a sell at the same
    last price lose at least the spread; with a book the walked price carries only the slippage."""
    cfg = make_cfg(paper={"spread_pct": spread, "slippage_pct": slip})
    ex = PaperExecutor(cfg, None, None, VirtualClock(T))
    buy, sell = ex.market_price("buy", None, last), ex.market_price("sell", None, last)
    assert buy == last * (1 + spread / 2) * (1 + slip) and sell == last * (1 - spread / 2) * (1 - slip)
    assert sell <= last <= buy and buy - sell >= last * spread * (1 - D("1e-20"))
    assert ex.market_price("buy", last, last) == last * (1 + slip)
    assert ex.market_price("sell", last, last) == last * (1 - slip)


def test_limit_entry_fills_only_when_price_trades_through(tmp_path):
    cfg = make_cfg(trading={"order_type": "limit", "entry_timeout_s": 600}, paper={"starting_balance": D("1000")})
    clock, gw = replay()

    async def main():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            appr = Approval(D("0.01"), D("2000"), D("1940"), D("2120"), "t")
            pos = await ex.open_position(opp("ETH/USDT", price=2000.0), appr)
            pf = await ex.portfolio({"ETH/USDT": 2005.0})
            reserved = D("0.01") * D("2000") * D("1.001")
            assert pos.amount == 0 and pf.cash == D("1000") - reserved and pf.equity == D("1000")
            await ex.poll()
            await ex.portfolio({"ETH/USDT": 2000.0})  # touching the limit is not trading through it
            await ex.poll()
            assert pos.amount == 0
            await ex.portfolio({"ETH/USDT": 1999.99})
            await ex.poll()
            assert pos.amount == D("0.01") and pos.entry_price == D("2000")
            assert ex.cash == D("1000") - D("20") - D("0.02")
            # a second limit order that never fills is cancelled after the timeout, cash released
            pos2 = await ex.open_position(opp("BTC/USDT", price=50000.0),
                                          Approval(D("0.001"), D("50000"), D("48500"), D("53000"), "t"))
            await ex.portfolio({"BTC/USDT": 50100.0})
            clock.advance_to(clock.now_ms() + 600_000)
            await ex.poll()
            orders = [await store.get_order(f"pt-{pos2.id}-e1")]
            return pos2, orders[0], (await ex.portfolio({})).cash

    pos2, order, cash = asyncio.run(main())
    assert pos2.status == "closed" and pos2.amount == 0 and pos2.exit_reason.startswith("entry_timeout")
    assert order.status == OrderStatus.CANCELLED
    assert cash == D("1000") - D("20") - D("0.02")


def test_resting_order_survives_restart_and_insufficient_cash_is_refused(tmp_path):
    cfg = make_cfg(trading={"order_type": "limit"}, paper={"starting_balance": D("100")})
    clock, gw = replay()

    async def first():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            assert await ex.open_position(opp("ETH/USDT", price=2000.0),
                                          Approval(D("0.06"), D("2000"), D("1940"), D("2120"), "t")) is None
            return await ex.open_position(opp("ETH/USDT", price=2000.0),
                                          Approval(D("0.04"), D("2000"), D("1940"), D("2120"), "t"))

    assert asyncio.run(first()) is not None

    async def second():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            before = (await ex.portfolio({"ETH/USDT": 2001.0})).cash
            await ex.portfolio({"ETH/USDT": 1990.0})
            await ex.poll()
            return before, ex.positions[0].amount, ex.cash

    before, amount, cash = asyncio.run(second())
    assert before == D("100") - D("80") * D("1.001") and amount == D("0.04") and cash == D("100") - D("80.08")


class FailingCommit:
    """The store's connection, whose next COMMIT fails like a full disk or an I/O error would."""

    def __init__(self, db) -> None:
        self._db, self.armed = db, False

    def execute(self, sql, *args):
        if self.armed and sql == "COMMIT":
            self.armed = False
            import sqlite3
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_failed_commit_during_an_exit_leaves_memory_as_the_store_has_it(tmp_path):
    """Issue 15 item 4: the exit's transaction does not land, so the position must still be open
    and watched in memory (not closed), with the cash and exit fields it had; a retry then closes it."""
    import pytest

    cfg = make_cfg(paper={"starting_balance": D("1000"), "fee_pct": D("0.001"), "slippage_pct": D("0")})
    clock, gw = replay()

    async def main():
        async with Store.open(tmp_path / "paper.db") as store:
            ex = PaperExecutor(cfg, store, gw, clock)
            await ex.start()
            prices = await last_prices(gw)
            eth = D(str(prices["ETH/USDT"]))
            pos = await ex.open_position(opp("ETH/USDT", price=float(eth)),
                                         Approval(D("0.05"), eth, eth * D("0.97"), eth * D("1.06"), "t"))
            cash, amount = ex.cash, pos.amount
            store.db = FailingCommit(store.db)
            store.db.armed = True
            with pytest.raises(Exception, match="disk is full"):
                await ex.close_position(pos, "stop_loss", float(eth))
            stored = (await store.positions("open"))[0]
            assert stored.status == "open" and stored.exit_reason is None
            assert [p.id for p in ex.positions] == [pos.id]  # still watched
            assert pos.status == "open" and pos.exit_reason is None and pos.pnl is None and pos.closed_ms is None
            assert pos.amount == amount and ex.cash == cash and len(await store.fills()) == 1
            await ex.close_position(pos, "stop_loss", float(eth))  # the store works again: the exit lands
            assert pos.status == "closed" and not ex.positions and len(await store.fills()) == 2
            assert (await store.positions("closed"))[0].exit_reason == "stop_loss"

    asyncio.run(main())
