"""Which pairs to scan: the most traded pairs of the quote currency, from one tickers request.

Re-ranked every ``universe.refresh_s`` (hourly by default), not every cycle: the ranking
barely moves within an hour, and one all-symbols ticker request costs 80 of Binance's 6000
weight per minute.

The rules are array functions over pairs (``pair_rules``, ``exclusions``, ``eligible``,
``top_pairs``) and one ``RefreshSchedule``: ``select_universe`` / ``Universe`` apply them to
one tickers reply, the backtest to every pair at every cycle at once (pairs x cycles arrays).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from fnmatch import fnmatchcase

import numpy as np

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
RETRY_MS = 60_000  # a failed or empty refresh is retried this much later
# why a listed pair of the quote currency is not scanned (``exclusions``); 0: it qualifies
STABLE, LEVERAGED, LOW_VOLUME, LOW_PRICE, WIDE_SPREAD = 1, 2, 3, 4, 5


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


def pair_rules(symbols: Sequence[str], markets: Sequence[Market], cfg: UniverseConfig,
               known_bases: set[str] | frozenset[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a pair's listing alone decides, per pair: ``allowed`` (the quote currency, active, not
    matched by ``exclude``), ``forced`` (matched by ``include``: bypasses every other filter and
    ranks first) and its market exclusion (``STABLE``, ``LEVERAGED`` or 0)."""
    n = len(symbols)
    allowed, forced = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    code = np.zeros(n, dtype=np.int8)
    for p, (sym, m) in enumerate(zip(symbols, markets)):
        allowed[p] = m.quote == cfg.quote and m.active and not any(fnmatchcase(sym, pat) for pat in cfg.exclude)
        forced[p] = any(fnmatchcase(sym, pat) for pat in cfg.include)
        code[p] = STABLE if is_stable_pair(m) else LEVERAGED if is_leveraged(m.base, known_bases) else 0
    return allowed, forced, code


def _spread(bid, ask):
    return (ask - bid) / ((ask + bid) / 2)


def _pairs_first(x: np.ndarray, ndim: int) -> np.ndarray:
    """A per-pair (P,) array shaped to broadcast against (P, ...) ticker figures."""
    return x.reshape(x.shape + (1,) * (ndim - 1))


def exclusions(market_code: np.ndarray, qv: np.ndarray, last: np.ndarray, cfg: UniverseConfig,
               bid: np.ndarray | None = None, ask: np.ndarray | None = None) -> np.ndarray:
    """The first rule each pair fails (0: none), in order: stablecoin pair, leveraged token,
    24 h quote volume, price, spread. Ticker figures are (P,) or (P, cycles); a missing volume
    is 0, a missing quote (bid or ask 0, or no arrays: recorded data) cannot be judged and passes."""
    qv, last = np.asarray(qv, dtype=np.float64), np.asarray(last, dtype=np.float64)
    code = np.array(np.broadcast_to(_pairs_first(np.asarray(market_code, dtype=np.int8), qv.ndim), qv.shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        for rule, fails in ((LOW_VOLUME, qv < cfg.min_quote_volume), (LOW_PRICE, last < cfg.min_price)):
            code[(code == 0) & fails] = rule
        if bid is not None and ask is not None:
            quoted = (bid != 0) & (ask != 0)
            code[(code == 0) & quoted & (_spread(bid, ask) > cfg.max_spread_pct)] = WIDE_SPREAD
    return code


def eligible(allowed: np.ndarray, forced: np.ndarray, market_code: np.ndarray, listed: np.ndarray,
             qv: np.ndarray, last: np.ndarray, cfg: UniverseConfig, bid: np.ndarray | None = None,
             ask: np.ndarray | None = None) -> np.ndarray:
    """Pairs that may be selected (before ``max_pairs``): allowed, with a ticker (``listed``), and
    forced or passing every filter. Shapes as in ``exclusions``."""
    nd = np.ndim(qv)
    ok = _pairs_first(forced, nd) | (exclusions(market_code, qv, last, cfg, bid, ask) == 0)
    return _pairs_first(allowed, nd) & listed & ok


def ranking(ok: np.ndarray, forced: np.ndarray, qv: np.ndarray) -> np.ndarray:
    """Pair indices best first along axis 0 (per cycle for 2-D input): eligible pairs (``ok``),
    forced ones first, then by 24 h quote volume, ties by position (pairs sorted by symbol)."""
    nd = np.ndim(qv)
    shape = np.shape(qv)
    pos = np.broadcast_to(_pairs_first(np.arange(shape[0]), nd), shape)
    first = np.broadcast_to(~_pairs_first(forced, nd), shape)
    return np.lexsort((pos, -np.asarray(qv, dtype=np.float64), first, ~ok), axis=0)


def top_pairs(ok: np.ndarray, forced: np.ndarray, qv: np.ndarray, max_pairs: int) -> np.ndarray:
    """The selection as a mask shaped like ``ok`` (P,) or (P, cycles): at most ``max_pairs`` of
    the eligible pairs per cycle, by ``ranking``."""
    out = np.array(ok, dtype=bool)
    over = out.sum(axis=0) > max_pairs
    if np.ndim(out) == 1:
        if over:
            out[:] = False
            out[ranking(ok, forced, qv)[:max_pairs]] = True
        return out
    cols = np.flatnonzero(over)
    if len(cols):
        order = ranking(ok[:, cols], forced, np.asarray(qv)[:, cols])
        keep = np.zeros((ok.shape[0], len(cols)), dtype=bool)
        np.put_along_axis(keep, order[:max_pairs], True, axis=0)
        out[:, cols] = keep
    return out


def exclusion_reason(market: Market, ticker: Ticker, cfg: UniverseConfig, known_bases: set[str]) -> str | None:
    """Why a listed pair of the quote currency is not scanned (None: it qualifies)."""
    qv = ticker.quote_volume or 0.0
    _, _, mcode = pair_rules([market.symbol], [market], cfg, known_bases)
    code = int(exclusions(mcode, np.array([qv]), np.array([ticker.last]), cfg,
                          np.array([ticker.bid or 0.0]), np.array([ticker.ask or 0.0]))[0])
    if code == STABLE:
        return "stablecoin pair"
    if code == LEVERAGED:
        return "leveraged token"
    if code == LOW_VOLUME:
        return f"24 h volume {qv:,.0f} {cfg.quote} below {cfg.min_quote_volume:,.0f}"
    if code == LOW_PRICE:
        return f"price {ticker.last:g} below {cfg.min_price:g}"
    if code == WIDE_SPREAD:
        return f"spread {_spread(ticker.bid, ticker.ask):.2%} above {cfg.max_spread_pct:.2%}"
    return None


def select_universe(markets: dict[str, Market], tickers: dict[str, Ticker], cfg: UniverseConfig) -> list[str]:
    """Active ``cfg.quote`` pairs ranked by 24 h quote volume, filtered, at most ``cfg.max_pairs``.

    ``include`` patterns (globs on "BASE/QUOTE") bypass the volume/price/spread/stablecoin/
    leveraged filters and rank first; ``exclude`` always wins; inactive pairs never qualify.
    """
    known_bases = {m.base for m in markets.values()}
    symbols = sorted(s for s, m in markets.items() if m.quote == cfg.quote and s in tickers)
    ts = [tickers[s] for s in symbols]
    allowed, forced, mcode = pair_rules(symbols, [markets[s] for s in symbols], cfg, known_bases)
    qv = np.array([t.quote_volume or 0.0 for t in ts], dtype=np.float64)
    ok = eligible(allowed, forced, mcode, np.ones(len(symbols), dtype=bool), qv,
                  np.array([t.last for t in ts], dtype=np.float64), cfg,
                  np.array([t.bid or 0.0 for t in ts], dtype=np.float64),
                  np.array([t.ask or 0.0 for t in ts], dtype=np.float64))
    n = min(int(ok.sum()), cfg.max_pairs)
    return [symbols[p] for p in ranking(ok, forced, qv)[:n].tolist()]


class RefreshSchedule:
    """When the universe is selected again: every ``refresh_s``; a refresh that failed or selected
    nothing keeps the previous selection and is retried ``RETRY_MS`` later (until a selection
    exists, every call re-selects). The live ``Universe`` and the backtest both follow it."""

    def __init__(self) -> None:
        self.next_ms: int | None = None
        self.holding = False  # a non-empty selection is in place

    def due(self, now_ms: int) -> bool:
        return not (self.holding and self.next_ms is not None and now_ms < self.next_ms)

    def retry(self, now_ms: int) -> None:
        self.next_ms = now_ms + RETRY_MS

    def settle(self, now_ms: int, selected: bool, refresh_s: float) -> bool:
        """Record a refresh; False when it selected nothing and the previous selection stays."""
        if not selected and self.holding:
            self.retry(now_ms)
            return False
        self.holding = selected
        self.next_ms = now_ms + refresh_s * 1000
        return True


class Universe:
    """The scanned pairs, re-selected on ``RefreshSchedule``; only a first selection that fails
    raises."""

    RETRY_MS = RETRY_MS

    def __init__(self, gateway, cfg: Config, clock: Clock) -> None:
        self.gateway = gateway
        self.cfg = cfg.universe
        self.clock = clock
        self._symbols: list[str] = []
        self.schedule = RefreshSchedule()
        self.last_tickers: dict[str, Ticker] = {}

    @property
    def selected(self) -> list[str]:
        """The pairs selected now (no refresh)."""
        return list(self._symbols)

    def update_config(self, cfg: Config) -> None:
        if cfg.universe != self.cfg:
            self.cfg = cfg.universe
            self.schedule.next_ms = None  # re-select at the next cycle with the new rules

    async def symbols(self) -> list[str]:
        now = self.clock.now_ms()
        if not self.schedule.due(now):
            return list(self._symbols)
        try:
            markets = await self.gateway.load_markets()
            tickers = await self.gateway.fetch_tickers()
        except GatewayError as exc:
            if not self._symbols:
                raise
            log.warning("universe refresh failed (%s); keeping the %d pairs selected before", exc, len(self._symbols))
            self.schedule.retry(now)
            return list(self._symbols)
        selected = select_universe(markets, tickers, self.cfg)
        if not self.schedule.settle(now, bool(selected), self.cfg.refresh_s):
            log.warning("universe refresh selected no pairs (%d tickers); keeping the %d pairs selected before",
                        len(tickers), len(self._symbols))
            return list(self._symbols)
        if not selected:
            log.warning("no %s pair passes the universe filters (%d markets, %d tickers)", self.cfg.quote,
                        len(markets), len(tickers))
        elif set(selected) != set(self._symbols):  # a new volume ranking alone is not news
            added = [s for s in selected if s not in self._symbols]
            removed = [s for s in self._symbols if s not in selected]
            log.info("universe: %d %s pairs (%d added, %d removed)%s", len(selected), self.cfg.quote, len(added),
                     len(removed), f": +{','.join(added[:5])} -{','.join(removed[:5])}" if self._symbols else "")
        self.last_tickers = tickers
        self._symbols = selected
        return list(selected)
