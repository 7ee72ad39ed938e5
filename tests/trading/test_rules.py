"""Exchange order rules against real Binance filters, and the number formats of fill lines."""
from __future__ import annotations

import gzip
import json
from decimal import Decimal
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import BUY, SELL, Fill, Market
from core.trading.rules import Refusal, ValidOrder, at_step, conform_order, fill_text
from tests.support.trading import DATA

D = Decimal
INFO_2021 = DATA / "raw" / "ohlcv_import" / "exchange_info.json.gz"  # exchangeInfo of 2021-03-24


@lru_cache(maxsize=None)
def binance_market(symbol: str, base: str, quote: str = "USDT") -> Market:
    """A Market read straight from the raw exchangeInfo filters (no ccxt in between)."""
    doc = json.loads(gzip.decompress(INFO_2021.read_bytes()))
    sym = next(s for s in doc["symbols"] if s["symbol"] == base + quote)
    f = {x["filterType"]: x for x in sym["filters"]}
    return Market(symbol, base, quote, sym["status"] == "TRADING", D(f["LOT_SIZE"]["stepSize"]).normalize(),
                  D(f["PRICE_FILTER"]["tickSize"]).normalize(), D(f["LOT_SIZE"]["minQty"]).normalize(),
                  D(f["MIN_NOTIONAL"]["minNotional"]).normalize(), D(f["LOT_SIZE"]["maxQty"]).normalize())


def test_pond_filters_as_recorded():
    pond = binance_market("POND/USDT", "POND")
    assert (pond.amount_step, pond.price_tick, pond.min_cost) == (D("0.01"), D("0.0001"), D("10"))


def test_sell_min_notional_is_checked_at_the_price_rounded_down():
    """Seen on POND: 48.77 at a last price of 0.20501 is worth 9.998 USDT, under the 10 USDT minimum the
    exchange checks a market sell against; at the tick rounded *up* (0.2051) it looked like 10.003."""
    pond = binance_market("POND/USDT", "POND")
    r = conform_order(pond, SELL, D("48.77"), D("0.20501"))
    assert isinstance(r, Refusal) and "minimum notional 10" in r.reason
    # a sell that clears the minimum at the rounded-down price keeps its limit on the tick rounded up
    ok = conform_order(pond, SELL, D("48.79"), D("0.20501"))
    assert ok == ValidOrder(D("48.79"), D("0.2051"))
    # buys are unchanged: rounded down, checked there
    assert isinstance(conform_order(pond, BUY, D("48.77"), D("0.20509")), Refusal)
    assert conform_order(pond, BUY, D("48.79"), D("0.20509")) == ValidOrder(D("48.79"), D("0.2050"))


@settings(max_examples=200, deadline=None)
@given(amount=st.decimals(D("1"), D("1000"), places=4), price=st.decimals(D("0.0001"), D("1"), places=6),
       side=st.sampled_from([BUY, SELL]))
def test_an_accepted_order_clears_the_minimum_at_any_price_within_its_tick(amount, price, side):
    """Whatever price inside the tick the exchange checks, an order we pass is worth the minimum."""
    pond = binance_market("POND/USDT", "POND")
    r = conform_order(pond, side, amount, price)
    if isinstance(r, ValidOrder):
        lowest = (price / pond.price_tick).to_integral_value(rounding="ROUND_FLOOR") * pond.price_tick
        assert r.amount * lowest >= pond.min_cost
        assert r.amount * min(price, r.price) >= pond.min_cost


@pytest.mark.parametrize("value,step,shown", [
    (D("0.1000323411750"), D("0.001"), "0.100"),
    (D("18.9634770"), D("0.001"), "18.963"),
    (D("5.275"), D("0.001"), "5.275"),
    (D("0.2050"), D("0.0001"), "0.2050"),
    (D("0.00004"), D("0.01"), "0.000040"),  # a tiny fee keeps two significant digits, never "0.00"
    (D("-3.2917948421760"), D("0.0001"), "-3.2918"),
    (D("100"), D("1"), "100"),
    (D("1.23456789123"), None, "1.23456789"),
])
def test_at_step(value, step, shown):
    assert at_step(value, step) == shown


def test_fill_line_uses_the_market_precision():
    hnt = Market("HNT/USDT", "HNT", "USDT", True, D("0.001"), D("0.001"), D("0.001"), D("10"))
    f = Fill("t1", 0, "HNT/USDT", BUY, D("5.275"), D("18.9634770"), D("0.1000323411750"), "USDT", "pt-1-e1")
    assert fill_text(hnt, f) == "buy 5.275 HNT/USDT @ 18.963 fee 0.100 USDT"
    base_fee = Fill("t2", 0, "HNT/USDT", BUY, D("5.275"), D("18.96"), D("0.005275123"), "HNT")
    assert fill_text(hnt, base_fee).endswith("fee 0.005 HNT")
    bnb = Fill("t3", 0, "HNT/USDT", BUY, D("5.275"), D("18.96"), D("0.000312345678912"), "BNB")
    assert fill_text(hnt, bnb).endswith("fee 0.00031235 BNB")
    # a market without known precision: at most 8 decimals
    assert fill_text(Market("HNT/USDT", "HNT", "USDT"), f) == "buy 5.275 HNT/USDT @ 18.963477 fee 0.10003234 USDT"
