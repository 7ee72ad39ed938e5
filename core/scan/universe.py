"""Which pairs to scan: the most traded pairs of the quote currency, from one tickers request.

Re-ranked every ``universe.refresh_s`` (hourly by default), not every cycle: the ranking
barely moves within an hour, and one all-symbols ticker request costs 80 of Binance's 6000
weight per minute.
"""
from __future__ import annotations

import logging
from fnmatch import fnmatchcase

from core.clock import Clock
from core.config import Config, UniverseConfig
from core.exchange.gateway import GatewayError
from core.models import Market, Ticker

log = logging.getLogger(__name__)

# Pegged to the same value: a pair of two of these never trends, it only costs fees.
STABLE_ASSETS = frozenset({
    "USDT", "USDC", "BUSD", "TUSD", "USDP", "PAX", "DAI", "FDUSD", "UST", "USTC", "GUSD", "SUSD", "USDS",
    "USDSB", "PYUSD", "USDD", "USD1", "USDE", "AEUR", "EURI", "EUR", "GBP", "AUD",
})
LEVERAGED_SUFFIXES = ("UP", "DOWN", "BULL", "BEAR")


def is_leveraged(base: str, known_bases: set[str] | frozenset[str]) -> bool:
    """Binance leveraged tokens are named <asset><UP|DOWN|BULL|BEAR> (BTCUP, ETHBEAR); the prefix
    must be a listed asset itself, so JUP or SYRUP are not mistaken for one."""
    for suffix in LEVERAGED_SUFFIXES:
        if base.endswith(suffix):
            prefix = base[: -len(suffix)]
            if len(prefix) >= 2 and prefix in known_bases:
                return True
    return False


def is_stable_pair(market: Market) -> bool:
    return market.base in STABLE_ASSETS and market.quote in STABLE_ASSETS


def exclusion_reason(market: Market, ticker: Ticker, cfg: UniverseConfig, known_bases: set[str]) -> str | None:
    """Why a listed pair of the quote currency is not scanned (None: it qualifies)."""
    if is_stable_pair(market):
        return "stablecoin pair"
    if is_leveraged(market.base, known_bases):
        return "leveraged token"
    qv = ticker.quote_volume or 0.0
    if qv < cfg.min_quote_volume:
        return f"24 h volume {qv:,.0f} {cfg.quote} below {cfg.min_quote_volume:,.0f}"
    if ticker.last < cfg.min_price:
        return f"price {ticker.last:g} below {cfg.min_price:g}"
    if ticker.bid and ticker.ask:  # no quote (e.g. recorded data): the spread cannot be judged here
        spread = (ticker.ask - ticker.bid) / ((ticker.ask + ticker.bid) / 2)
        if spread > cfg.max_spread_pct:
            return f"spread {spread:.2%} above {cfg.max_spread_pct:.2%}"
    return None


def select_universe(markets: dict[str, Market], tickers: dict[str, Ticker], cfg: UniverseConfig) -> list[str]:
    """Active ``cfg.quote`` pairs ranked by 24 h quote volume, filtered, at most ``cfg.max_pairs``.

    ``include`` patterns (globs on "BASE/QUOTE") bypass the volume/price/spread/stablecoin/
    leveraged filters and rank first; ``exclude`` always wins; inactive pairs never qualify.
    """
    known_bases = {m.base for m in markets.values()}
    chosen: list[tuple[int, float, str]] = []
    for sym, m in markets.items():
        t = tickers.get(sym)
        if m.quote != cfg.quote or not m.active or t is None:
            continue
        if any(fnmatchcase(sym, p) for p in cfg.exclude):
            continue
        forced = any(fnmatchcase(sym, p) for p in cfg.include)
        if not forced and exclusion_reason(m, t, cfg, known_bases) is not None:
            continue
        chosen.append((0 if forced else 1, -(t.quote_volume or 0.0), sym))
    chosen.sort()
    return [sym for _, _, sym in chosen[: cfg.max_pairs]]


class Universe:
    """The scanned pairs, re-selected every ``universe.refresh_s``.

    When a refresh fails (or selects nothing, e.g. a tickers reply gone wrong), the previous
    selection stays and the refresh is retried a minute later; only a first selection that
    fails raises.
    """

    RETRY_MS = 60_000

    def __init__(self, gateway, cfg: Config, clock: Clock) -> None:
        self.gateway = gateway
        self.cfg = cfg.universe
        self.clock = clock
        self._symbols: list[str] = []
        self._next_ms: int | None = None
        self.last_tickers: dict[str, Ticker] = {}

    def update_config(self, cfg: Config) -> None:
        if cfg.universe != self.cfg:
            self.cfg = cfg.universe
            self._next_ms = None  # re-select at the next cycle with the new rules

    async def symbols(self) -> list[str]:
        now = self.clock.now_ms()
        if self._symbols and self._next_ms is not None and now < self._next_ms:
            return list(self._symbols)
        try:
            markets = await self.gateway.load_markets()
            tickers = await self.gateway.fetch_tickers()
        except GatewayError as exc:
            if not self._symbols:
                raise
            log.warning("universe refresh failed (%s); keeping the %d pairs selected before", exc, len(self._symbols))
            self._next_ms = now + self.RETRY_MS
            return list(self._symbols)
        selected = select_universe(markets, tickers, self.cfg)
        if not selected:
            if self._symbols:
                log.warning("universe refresh selected no pairs (%d tickers); keeping the %d pairs selected before",
                            len(tickers), len(self._symbols))
                self._next_ms = now + self.RETRY_MS
                return list(self._symbols)
            log.warning("no %s pair passes the universe filters (%d markets, %d tickers)", self.cfg.quote,
                        len(markets), len(tickers))
        elif selected != self._symbols:
            added = [s for s in selected if s not in self._symbols]
            removed = [s for s in self._symbols if s not in selected]
            log.info("universe: %d %s pairs (%d added, %d removed)%s", len(selected), self.cfg.quote, len(added),
                     len(removed), f": +{','.join(added[:5])} -{','.join(removed[:5])}" if self._symbols else "")
        self.last_tickers = tickers
        self._symbols = selected
        self._next_ms = now + self.cfg.refresh_s * 1000
        return list(selected)
