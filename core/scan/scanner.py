"""Market scanner: candles -> indicators -> strategies -> ranked opportunities. Pure compute.

One scan works on whole matrices (pairs x time) from the candle store:

1. Data quality (``core.scan.quality``), vectorised over all pairs, on every timeframe the
   scan reads: too little history, stale data (the last candle closed more than two periods
   before ``now_ms``), non-finite or non-positive prices, and quarantine -- a gap of more than
   ``scanner.quarantine_gap_candles`` missing candles or a close-to-close move beyond
   ``scanner.quarantine_jump_ratio`` (either direction, scaled up on the longer timeframe)
   anywhere in the stored window. The window is what the indicators see, so a redenomination
   (COCOS x978 after a 97 h halt) keeps the pair out until it has scrolled out of the window.
   Such pairs go to ``skipped`` with the reason and never produce an opportunity.
2. Indicators through ``Indicators``: each matrix computed once per scan on first use
   (2-D numba kernels, all pairs in one call) and shared by every strategy.
3. Strategies (``strategies.enabled``) score every pair 0..100; the score is multiplied by
   the strategy's weight (``strategies.weights``, default 1, capped at 100).
4. Multi-timeframe confirmation (``scanner.confirm_timeframe``, e.g. 4h for 1h signals):
   the higher timeframe *agrees* when its last close is above its EMA50 and its MACD(12,26,9)
   histogram is positive -- score kept; *half agrees* when only one holds -- score x0.8;
   otherwise the signal is dropped. The verdict is part of the reason. A strategy whose
   ``confirmed`` is False (mean reversion: its dips are where the higher timeframe disagrees)
   is not confirmed.
   The market's state (``strategies.base.MarketState``), computed once per scan from every
   scanned pair: breadth (share of pairs above their trend mean), whether BTC is up, and each
   pair's volatility-adjusted relative strength (percentile among the scanned pairs). Strategies
   read it (the shipped ones stand aside while the market is not risk-on); the ranking scales
   each score by ``RS_LOW + (RS_HIGH - RS_LOW) * strength`` (x0.9 for the weakest pair,
   x1.1 for the strongest, capped at 100), so the strongest of equal signals comes first.
5. ``scanner.min_opportunity_score`` (a fraction: 0.6 means a score of at least 60), then one
   opportunity per pair (its best strategy; others that also passed are named in the
   reason), ranked best first.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

import core.indicators as ta
from core.scan.candles import CandleStore
from core.config import Config
from core.timeframes import TIMEFRAME_MS
from core.models import Opportunity, ScanResult
from core.scan.quality import STALE_PERIODS, data_problems, higher_jump_ratio  # noqa: F401  (re-exported)
from strategies import registry
from strategies.base import Indicators, ScanInput  # noqa: F401  (Indicators: re-exported for callers of the scanner)
from strategies.base import BENCHMARK, MARKET_WINDOW, MarketState, cross_section, pair_features

log = logging.getLogger(__name__)

CONFIRM_EMA = 50
CONFIRM_MACD = (12, 26, 9)
# Confirmation candles needed: the EMA50 has a value from the 50th candle (TA-Lib seeds it with
# the SMA of the first 50), plus a margin; the MACD(12,26,9) histogram starts at the 34th.
CONFIRM_HISTORY = CONFIRM_EMA + 10
HALF_AGREEMENT = 0.8  # score factor when the higher timeframe agrees on one of its two conditions
RS_LOW, RS_HIGH = 0.9, 1.1  # ranking factor of the weakest and the strongest pair (relative strength)


def market_state(symbols: tuple[str, ...], close: np.ndarray, ok: np.ndarray) -> MarketState:
    """The scan's market state from the signal timeframe's (pairs x time) closes, newest last."""
    n = len(symbols)
    if close.shape[1] >= MARKET_WINDOW:
        up, z = pair_features(close)
    else:
        up, z = np.zeros(n, dtype=bool), np.full(n, np.nan)
    bench = symbols.index(BENCHMARK) if BENCHMARK in symbols else None
    strength, breadth, on = cross_section(up, z, ok, bench)
    return MarketState(strength, np.full(n, breadth), np.full(n, on))


class Scanner:
    """Scores and ranks every pair of a ``CandleStore``; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        self.update_config(cfg)

    def update_config(self, cfg: Config) -> None:
        """Take a new config (reload); strategies are rebuilt, a bad config raises ConfigError."""
        strategies = registry.build(cfg.strategies, cfg.source)
        sc = cfg.scanner
        signal_tf = sc.timeframes[0]
        longer = [tf for tf in sc.timeframes if TIMEFRAME_MS[tf] > TIMEFRAME_MS[signal_tf]]
        higher_tf = sc.confirm_timeframe or (min(longer, key=TIMEFRAME_MS.get) if longer else None)
        need_higher = max([s.min_higher_candles() for s in strategies]
                          + [CONFIRM_HISTORY if sc.confirm_timeframe else 0])
        self.cfg = cfg
        self.strategies = strategies
        self.weights = registry.weights(cfg.strategies)
        self.signal_tf = signal_tf
        self.confirm_tf = sc.confirm_timeframe
        self.higher_tf = higher_tf
        self.need_signal = max([s.min_candles() for s in strategies] + [2])
        self.need_higher = need_higher if higher_tf else 0
        self.min_score = round(sc.min_opportunity_score * 100.0, 9)

    def scan(self, candles: CandleStore, now_ms: int) -> ScanResult:
        t0 = time.perf_counter()
        sc = self.cfg.scanner
        sv = candles.view(self.signal_tf)
        problems = data_problems(sv, self.need_signal, now_ms, sc.quarantine_gap_candles, sc.quarantine_jump_ratio)
        hv = None
        if self.higher_tf is not None and self.need_higher:
            hv = candles.view(self.higher_tf)
            ratio = higher_jump_ratio(sc.quarantine_jump_ratio, self.signal_tf, self.higher_tf)
            for i, reasons in data_problems(hv, self.need_higher, now_ms, sc.quarantine_gap_candles, ratio).items():
                problems.setdefault(i, []).extend(reasons)
        symbols = sv.symbols
        skipped = {symbols[i]: "; ".join(reasons) for i, reasons in sorted(problems.items())}
        ok = np.ones(len(symbols), dtype=bool)
        ok[list(problems)] = False

        opportunities: list[Opportunity] = []
        if ok.any() and self.strategies:
            data = ScanInput(symbols, Indicators(sv), Indicators(hv) if hv is not None else None,
                             market_state(tuple(symbols), sv.close, ok))
            opportunities = self.rank(data, ok)
        result = ScanResult(pairs_scanned=int(ok.sum()), pairs_skipped=len(skipped), skipped=skipped,
                            duration_s=time.perf_counter() - t0, opportunities=opportunities, ts_ms=int(now_ms))
        log.debug("scan: %d pairs, %d skipped, %d opportunities in %.1f ms", result.pairs_scanned,
                  result.pairs_skipped, len(opportunities), result.duration_s * 1000)
        return result

    def _confirmation(self, data: ScanInput) -> tuple[np.ndarray, Callable[[int], str]]:
        """Score factor per pair from the confirmation timeframe, and its reason text."""
        n = len(data.symbols)
        if self.confirm_tf is None or data.higher is None:
            return np.ones(n), lambda i: ""
        hi, tf = data.higher, self.confirm_tf
        above = hi.close[:, -1] > hi.ema(CONFIRM_EMA)[:, -1]
        hist = hi.macd(*CONFIRM_MACD)[2][:, -1]
        positive = hist > 0
        factor = np.where(above & positive, 1.0, np.where(above | positive, HALF_AGREEMENT, 0.0))

        def text(i: int) -> str:
            cond = (f"close{'>' if above[i] else '<'}EMA{CONFIRM_EMA}, "
                    f"MACD hist{'>' if positive[i] else '<'}0")
            return f"{tf} agrees: {cond}" if factor[i] == 1.0 else f"{tf} half agrees: {cond}, x{HALF_AGREEMENT:g}"

        return factor, text

    def rank(self, data: ScanInput, ok: np.ndarray) -> list[Opportunity]:
        price = data.signal.close[:, -1]
        factor, confirm_text = self._confirmation(data)
        market = data.regime()
        rs = RS_LOW + (RS_HIGH - RS_LOW) * market.strength
        unconfirmed: set[str] = set()
        candidates: dict[int, list[tuple[float, str, object]]] = {}
        for strategy in self.strategies:
            weight = self.weights.get(strategy.name, 1.0)
            if weight <= 0:
                continue
            sig = strategy.evaluate(data)
            score = np.minimum(np.nan_to_num(sig.score, nan=0.0) * weight, 100.0)
            if strategy.confirmed:
                score = score * factor
            else:
                unconfirmed.add(strategy.name)
            score = np.minimum(score * rs, 100.0)
            with np.errstate(invalid="ignore"):
                passing = (ok & (score > 0) & (score >= self.min_score) & (sig.stop > 0)
                           & (sig.stop < price) & (sig.target > price))
            for i in np.flatnonzero(passing):
                candidates.setdefault(int(i), []).append((float(score[i]), strategy.name, sig))
        out = []
        for i, cands in candidates.items():
            cands.sort(key=lambda c: -c[0])
            score, name, sig = cands[0]
            reason = sig.explain(i) + f"; RS {market.strength[i]:.2f}"
            extra = "" if name in unconfirmed else confirm_text(i)
            if extra:
                reason += "; " + extra
            if len(cands) > 1:
                reason += "; also " + ", ".join(f"{n} {s:.0f}" for s, n, _ in cands[1:])
            out.append(Opportunity(symbol=data.symbols[i], strategy=name, side=sig.side, score=round(score, 1),
                                   price=float(price[i]), stop=float(sig.stop[i]), target=float(sig.target[i]),
                                   reason=reason, timeframe=self.signal_tf))
        out.sort(key=lambda o: (-o.score, o.symbol))
        return out

