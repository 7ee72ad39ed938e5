"""Fees paid in a third asset (BNB) are valued at its price, fetched when the cycle lacks it."""
import asyncio
import logging
from decimal import Decimal as D

from core.clock import VirtualClock
from core.config import Config
from core.trading.executor import settle
from core.exchange.gateway import TemporaryError
from core.models import Fill, Ticker
from core.trading.paper import PaperExecutor

BUY = Fill("1", 1, "ETH/USDT", "buy", D("2"), D("3000"), D("0.0075"), "BNB", "o1")


class _Gateway:
    def __init__(self, fail=False):
        self.fail, self.asked = fail, []

    async def fetch_tickers(self, symbols=None):
        self.asked.append(symbols)
        if self.fail:
            raise TemporaryError("timeout")
        return {s: Ticker(s, 1, 400.0) for s in symbols if s == "BNB/USDT"}


def _executor(gw):
    return PaperExecutor(Config(), store=None, gateway=gw, clock=VirtualClock(0))


def test_bnb_fee_is_valued_at_the_fetched_price():
    gw = _Gateway()
    ex = _executor(gw)
    asyncio.run(ex._price_fee_assets([BUY]))
    assert gw.asked == [["BNB/USDT"]] and ex.prices["BNB/USDT"] == D("400")
    s = settle([("entry", BUY)], "ETH", "USDT", ex.prices)
    assert s.entry_fees == D("3.0000")  # 0.0075 BNB x 400
    asyncio.run(ex._price_fee_assets([BUY]))
    assert len(gw.asked) == 1  # known now: not asked again


def test_unknown_fee_price_is_said_not_hidden(caplog):
    caplog.set_level(logging.WARNING)
    ex = _executor(_Gateway(fail=True))
    asyncio.run(ex._price_fee_assets([BUY]))
    assert "BNB/USDT" not in ex.prices
    assert any("fees paid in BNB count as 0" in r.message for r in caplog.records)
