"""Universe selection on real Binance markets and recorded 24 h tickers, plus its schedule."""
import asyncio
from dataclasses import replace
from fnmatch import fnmatchcase

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core.clock import VirtualClock
from core.config import Config, UniverseConfig, config_from_dict
from core.exchange.gateway import TemporaryError
from core.models import Market, Ticker
from core.scan.universe import (RETRY_MS, STABLE_ASSETS, RefreshSchedule, Universe, eligible, exclusion_reason,
                                is_leveraged, pair_rules, select_universe, top_pairs)
from tests.support.binance_fixtures import real_markets_and_tickers


@pytest.fixture(scope="module")
def real():
    return real_markets_and_tickers(2021)


def ucfg(**kw) -> UniverseConfig:
    return replace(UniverseConfig(), **kw)


def test_real_selection_is_usdt_ranked_by_volume_and_filtered(real):
    markets, tickers = real
    cfg = ucfg(min_quote_volume=1_000_000, max_spread_pct=0.005)
    sel = select_universe(markets, tickers, cfg)
    assert 10 < len(sel) < 48
    assert sel[:2] == ["BTC/USDT", "ETH/USDT"]  # the two most traded USDT pairs of that day
    vols = [tickers[s].quote_volume for s in sel]
    assert vols == sorted(vols, reverse=True)
    for s in sel:
        assert markets[s].quote == "USDT" and markets[s].active
    # real stablecoin pairs on that day were liquid enough to pass the volume filter: still out
    for stable in ("USDC/USDT", "PAX/USDT", "TUSD/USDT"):
        assert stable in tickers and tickers[stable].quote_volume > 1_000_000
        assert stable not in sel
    # everything left out that is listed, active and liquid has a reason
    for s, t in tickers.items():
        m = markets.get(s)
        if m and m.quote == "USDT" and m.active and s not in sel:
            assert exclusion_reason(m, t, cfg, {x.base for x in markets.values()}) is not None


def test_max_pairs_include_and_exclude(real):
    markets, tickers = real
    base = select_universe(markets, tickers, ucfg())
    assert select_universe(markets, tickers, ucfg(max_pairs=5)) == base[:5]
    sel = select_universe(markets, tickers, ucfg(exclude=("ETH/*", "B*/USDT")))
    assert "ETH/USDT" not in sel and not any(s.startswith("B") for s in sel)
    # include bypasses the filters (here a pair far below the volume minimum) and ranks first,
    # but never brings in an excluded pair
    thin = min((s for s in tickers if s.endswith("/USDT") and s in markets and markets[s].active),
               key=lambda s: tickers[s].quote_volume)
    sel = select_universe(markets, tickers, ucfg(include=(thin, "ETH/USDT"), exclude=("ETH/*",), max_pairs=3))
    assert sel[0] == thin and "ETH/USDT" not in sel and len(sel) == 3


def test_spread_and_price_filters(real):
    markets, tickers = real
    t = tickers["ETH/USDT"]
    wide = dict(tickers, **{"ETH/USDT": replace(t, bid=t.last * 0.98, ask=t.last * 1.02)})
    assert "ETH/USDT" not in select_universe(markets, wide, ucfg())
    assert "ETH/USDT" in select_universe(markets, wide, ucfg(max_spread_pct=0.05))
    no_quote = dict(tickers, **{"ETH/USDT": replace(t, bid=None, ask=None)})  # e.g. recorded data
    assert "ETH/USDT" in select_universe(markets, no_quote, ucfg())
    cheap = select_universe(markets, tickers, ucfg(min_price=1.0))
    assert cheap and all(tickers[s].last >= 1.0 for s in cheap)


def test_leveraged_tokens_and_inactive_markets_are_out(real):
    markets, tickers = real
    # real 2021 listings: BTCUP/BTCDOWN traded, ETHBULL in BREAK; give them huge volume
    assert markets["BTCUP/USDT"].active and not markets["ETHBULL/USDT"].active
    fake = dict(tickers)
    for s in ("BTCUP/USDT", "BTCDOWN/USDT", "ETHBULL/USDT"):
        fake[s] = Ticker(s, 0, 10.0, 9.999, 10.001, quote_volume=1e12)
    sel = select_universe(markets, fake, ucfg())
    assert not {"BTCUP/USDT", "BTCDOWN/USDT", "ETHBULL/USDT"} & set(sel)
    bases = {m.base for m in markets.values()}
    assert is_leveraged("BTCUP", bases) and is_leveraged("XRPBEAR", bases)
    assert not is_leveraged("JUP", bases | {"J"}) and not is_leveraged("SYRUP", bases)


# --- property: top-N by volume of the qualifying pairs ----------------------------------------

BASES = ["AAA", "BBB", "CCC", "BTC", "BTCUP", "ETH", "ETHDOWN", "USDC", "DAI", "ZZZ", "JUP"]


@st.composite
def universes(draw):
    markets, tickers = {}, {}
    for base in draw(st.lists(st.sampled_from(BASES), unique=True, min_size=1)):
        for quote in draw(st.lists(st.sampled_from(["USDT", "BTC"]), unique=True, min_size=1)):
            sym = f"{base}/{quote}"
            markets[sym] = Market(sym, base, quote, active=draw(st.booleans()))
            if draw(st.booleans()):
                last = draw(st.floats(0.001, 1000))
                spread = draw(st.floats(0, 0.02))
                tickers[sym] = Ticker(sym, 0, last, last * (1 - spread / 2), last * (1 + spread / 2),
                                      quote_volume=draw(st.one_of(st.none(), st.floats(0, 1e9))))
    cfg = ucfg(max_pairs=draw(st.integers(1, 8)), min_quote_volume=draw(st.sampled_from([0.0, 1e6])),
               min_price=draw(st.sampled_from([0.0, 1.0])), max_spread_pct=draw(st.sampled_from([0.005, 0.05])),
               include=tuple(draw(st.lists(st.sampled_from(["A*", "*/USDT", "ZZZ/USDT"]), max_size=1))),
               exclude=tuple(draw(st.lists(st.sampled_from(["B*", "ETH/*"]), max_size=1))))
    return markets, tickers, cfg


@settings(max_examples=150, deadline=None)
@given(universes())
def test_selection_property(case):
    markets, tickers, cfg = case
    sel = select_universe(markets, tickers, cfg)
    bases = {m.base for m in markets.values()}
    assert len(sel) == len(set(sel)) <= cfg.max_pairs
    forced = [s for s in sel if any(fnmatchcase(s, p) for p in cfg.include)]
    assert sel[:len(forced)] == forced  # includes rank first
    for s in sel:
        m = markets[s]
        assert m.quote == cfg.quote and m.active and s in tickers
        assert not any(fnmatchcase(s, p) for p in cfg.exclude)
        if s not in forced:
            assert exclusion_reason(m, tickers[s], cfg, bases) is None
    rest = [s for s in sel if s not in forced]
    vols = [tickers[s].quote_volume or 0 for s in rest]
    assert vols == sorted(vols, reverse=True)
    if len(sel) < cfg.max_pairs:  # nothing qualifying was left out
        for s, m in markets.items():
            if s in tickers and m.quote == cfg.quote and m.active and s not in sel \
                    and not any(fnmatchcase(s, p) for p in cfg.exclude):
                assert exclusion_reason(m, tickers[s], cfg, bases) is not None
    elif rest:  # full: every qualifying pair left out trades less than the last one taken
        floor = vols[-1]
        for s, m in markets.items():
            if s in tickers and s not in sel and m.quote == cfg.quote and m.active \
                    and not any(fnmatchcase(s, p) for p in cfg.exclude) \
                    and exclusion_reason(m, tickers[s], cfg, bases) is None:
                assert (tickers[s].quote_volume or 0) <= floor


# --- schedule -------------------------------------------------------------------------------------

class CountingGateway:
    def __init__(self, markets, tickers):
        self.markets, self.tickers = markets, tickers
        self.ticker_calls = 0
        self.fail = False

    async def load_markets(self, reload=False):
        return self.markets

    async def fetch_tickers(self, symbols=None):
        self.ticker_calls += 1
        if self.fail:
            raise TemporaryError("tickers: exchange error (HTTP 502)")
        return self.tickers


def test_refreshed_on_schedule_not_every_cycle_and_kept_on_failure(real):
    markets, tickers = real
    cfg = config_from_dict({"universe": {"refresh_s": 600}})
    clock = VirtualClock(1_000_000)
    gw = CountingGateway(markets, tickers)
    uni = Universe(gw, cfg, clock)

    async def go():
        first = await uni.symbols()
        for _ in range(30):  # 30 cycles of 10 s: 300 s < refresh_s
            await clock.sleep(10)
            assert await uni.symbols() == first
        assert gw.ticker_calls == 1
        await clock.sleep(300)
        gw.fail = True  # due, but the exchange fails: keep the old list, retry a minute later
        assert await uni.symbols() == first
        assert gw.ticker_calls == 2
        await clock.sleep(10)
        await uni.symbols()
        assert gw.ticker_calls == 2
        await clock.sleep(60)
        gw.fail = False
        gw.tickers = {s: t for s, t in tickers.items() if s != "BTC/USDT"}
        second = await uni.symbols()
        assert gw.ticker_calls == 3 and "BTC/USDT" not in second and "BTC/USDT" in first
        uni.update_config(config_from_dict({"universe": {"refresh_s": 600, "max_pairs": 3}}))
        assert len(await uni.symbols()) == 3 and gw.ticker_calls == 4

    asyncio.run(go())


def test_first_selection_failure_raises():
    gw = CountingGateway({}, {})
    gw.fail = True
    with pytest.raises(TemporaryError):
        asyncio.run(Universe(gw, Config(), VirtualClock(0)).symbols())


# --- the array rules: the old per-pair loop is the oracle; pairs x cycles = cycle by cycle ----------

def _select_before(markets, tickers, cfg):
    """select_universe as it was before the array rules (per pair, one tuple sort)."""
    bases = {m.base for m in markets.values()}
    chosen = []
    for sym, m in markets.items():
        t = tickers.get(sym)
        if m.quote != cfg.quote or not m.active or t is None or any(fnmatchcase(sym, p) for p in cfg.exclude):
            continue
        forced = any(fnmatchcase(sym, p) for p in cfg.include)
        if not forced:
            qv = t.quote_volume or 0.0
            stable = m.base in STABLE_ASSETS and m.quote in STABLE_ASSETS
            wide = bool(t.bid and t.ask) and (t.ask - t.bid) / ((t.ask + t.bid) / 2) > cfg.max_spread_pct
            if stable or is_leveraged(m.base, bases) or qv < cfg.min_quote_volume or t.last < cfg.min_price or wide:
                continue
        chosen.append((0 if forced else 1, -(t.quote_volume or 0.0), sym))
    chosen.sort()
    return [sym for _, _, sym in chosen[: cfg.max_pairs]]


@settings(max_examples=200, deadline=None)
@given(universes())
def test_selection_equals_the_per_pair_loop(case):
    markets, tickers, cfg = case
    assert select_universe(markets, tickers, cfg) == _select_before(markets, tickers, cfg)


@settings(max_examples=100, deadline=None)
@given(universes(), st.integers(1, 6), st.randoms(use_true_random=False))
def test_pairs_by_cycles_equals_cycle_by_cycle(case, cycles, rnd):
    """The backtest's (pairs x cycles) call selects, at every cycle, what select_universe selects
    from that cycle's tickers (volumes and prices vary per cycle; some pairs are not listed)."""
    markets, tickers, cfg = case
    symbols = sorted(markets)
    per_cycle = []
    for _ in range(cycles):
        per_cycle.append({s: replace(t, quote_volume=rnd.choice([None, 0.0, 5e5, 1e6, 2e6, rnd.uniform(0, 1e9)]),
                                     last=rnd.choice([0.5, 2.0, t.last]), bid=None, ask=None)
                          for s, t in tickers.items() if rnd.random() < 0.9})
    shape = (len(symbols), cycles)
    qv, last, listed = np.zeros(shape), np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    for i, ticks in enumerate(per_cycle):
        for p, s in enumerate(symbols):
            if s in ticks:
                listed[p, i], qv[p, i], last[p, i] = True, ticks[s].quote_volume or 0.0, ticks[s].last
    allowed, forced, code = pair_rules(symbols, [markets[s] for s in symbols], cfg, {m.base for m in markets.values()})
    chosen = top_pairs(eligible(allowed, forced, code, listed, qv, last, cfg), forced, qv, cfg.max_pairs)
    for i, ticks in enumerate(per_cycle):
        assert [symbols[p] for p in np.flatnonzero(chosen[:, i])] == sorted(select_universe(markets, ticks, cfg))


def test_refresh_schedule():
    s = RefreshSchedule()
    assert s.due(0)
    assert s.settle(0, False, 3600) and s.due(1)  # nothing selected yet: ask again at once
    assert s.settle(1, True, 3600) and not s.due(3_600_000) and s.due(3_600_001)
    assert not s.settle(3_600_001, False, 3600)  # empty refresh: previous selection stays ...
    assert not s.due(3_600_001 + RETRY_MS - 1) and s.due(3_600_001 + RETRY_MS)  # ... retried a minute later
    s.retry(5_000_000)
    assert not s.due(5_000_000 + RETRY_MS - 1) and s.due(5_000_000 + RETRY_MS)
