"""Market scanner: candles -> indicators -> strategies -> ranked opportunities. Pure compute.

One scan works on whole matrices (pairs x time) from the candle store:

1. Data quality, vectorised over all pairs, on every timeframe the scan reads: too little
   history, stale data (the last candle closed more than two periods before ``now_ms``),
   non-finite or non-positive prices, and quarantine -- a gap of more than
   ``scanner.quarantine_gap_candles`` missing candles or a close-to-close move beyond
   ``scanner.quarantine_jump_ratio`` (either direction) anywhere in the stored window. The
   window is what the indicators see, so a redenomination (COCOS x978 after a 97 h halt)
   keeps the pair out until it has scrolled out of the window. The ratio is meant for the
   signal timeframe; on a longer one it is raised to the power sqrt(period ratio) (3 on 1h
   -> 9 on 4h), as genuine moves grow with the square root of time. Such pairs go to
   ``skipped`` with the reason and never produce an opportunity.
2. Indicators through ``Indicators``: each matrix computed once per scan on first use
   (2-D numba kernels, all pairs in one call) and shared by every strategy.
3. Strategies (``strategies.enabled``) score every pair 0..100; the score is multiplied by
   the strategy's weight (``strategies.weights``, default 1, capped at 100).
4. Multi-timeframe confirmation (``scanner.confirm_timeframe``, e.g. 4h for 1h signals):
   the higher timeframe *agrees* when its last close is above its EMA50 and its MACD(12,26,9)
   histogram is positive -- score kept; *half agrees* when only one holds -- score x0.8;
   otherwise the signal is dropped. The verdict is part of the reason.
5. ``scanner.min_opportunity_score`` (a fraction: 0.6 means a score of at least 60), then one
   opportunity per pair (its best strategy; others that also passed are named in the
   reason), ranked best first.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

import core.indicators as ta
from core.scan.candles import CandleStore, CandleView
from core.config import Config
from core.timeframes import TIMEFRAME_MS
from core.models import Opportunity, ScanResult
from strategies import registry
from strategies.base import Indicators, ScanInput  # noqa: F401  (Indicators: re-exported for callers of the scanner)

log = logging.getLogger(__name__)

CONFIRM_EMA = 50
CONFIRM_MACD = (12, 26, 9)
# Confirmation candles needed: the EMA50 has a value from the 50th candle (TA-Lib seeds it with
# the SMA of the first 50), plus a margin; the MACD(12,26,9) histogram starts at the 34th.
CONFIRM_HISTORY = CONFIRM_EMA + 10
HALF_AGREEMENT = 0.8  # score factor when the higher timeframe agrees on one of its two conditions
STALE_PERIODS = 2


def _when(ts_ms: float) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(ms: float) -> str:
    hours = ms / 3_600_000
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def data_problems(view: CandleView, need: int, now_ms: int, gap_limit: int, jump_ratio: float) -> dict[int, list[str]]:
    """Why rows of ``view`` must not be traded now: row -> reasons (rows without problems absent)."""
    tf, tf_ms = view.timeframe, TIMEFRAME_MS[view.timeframe]
    counts, ts, close = view.counts, view.ts, view.close
    out: dict[int, list[str]] = {}

    def add(mask: np.ndarray, text: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            out.setdefault(int(i), []).append(text(int(i)))

    add(counts == 0, lambda i: f"no {tf} candles")
    add((counts > 0) & (counts < need), lambda i: f"too little history: {counts[i]} {tf} candles, needs {need}")
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = np.count_nonzero(view.volume >= 0, axis=1) != counts
        for x in (view.open, view.high, view.low, close):
            bad |= np.count_nonzero((x > 0) & (x < np.inf), axis=1) != counts
        add(bad & (counts > 0), lambda i: f"bad data: non-finite or non-positive values in the {tf} candles")
        age = now_ms - (ts[:, -1] + tf_ms)
        add(age > STALE_PERIODS * tf_ms, lambda i: f"stale: last {tf} candle closed {_duration(age[i])} ago")
        step = np.diff(ts, axis=1)
        gaps = step > (gap_limit + 1) * tf_ms

        def gap_text(i: int) -> str:
            j = np.flatnonzero(gaps[i])[-1]
            return (f"quarantined: {tf} data gap of {step[i, j] / tf_ms - 1:.0f} candles "
                    f"before {_when(ts[i, j + 1])}")

        add(gaps.any(axis=1), gap_text)
        ratio = close[:, 1:] / close[:, :-1]
        jumps = (ratio > jump_ratio) | (ratio * jump_ratio < 1.0)

        def jump_text(i: int) -> str:
            j = np.flatnonzero(jumps[i])[-1]
            return f"quarantined: {tf} close moved x{ratio[i, j]:.4g} at {_when(ts[i, j + 1])}"

        add(jumps.any(axis=1), jump_text)
    return out


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
            # log-returns grow with the square root of time: a genuine 4h candle moves about twice
            # as far as a 1h one, so the 1h jump ratio r becomes r**2 on 4h
            scale = (TIMEFRAME_MS[self.higher_tf] / TIMEFRAME_MS[self.signal_tf]) ** 0.5
            for i, reasons in data_problems(hv, self.need_higher, now_ms, sc.quarantine_gap_candles,
                                            sc.quarantine_jump_ratio ** scale).items():
                problems.setdefault(i, []).extend(reasons)
        symbols = sv.symbols
        skipped = {symbols[i]: "; ".join(reasons) for i, reasons in sorted(problems.items())}
        ok = np.ones(len(symbols), dtype=bool)
        ok[list(problems)] = False

        opportunities: list[Opportunity] = []
        if ok.any() and self.strategies:
            data = ScanInput(symbols, Indicators(sv), Indicators(hv) if hv is not None else None)
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
        candidates: dict[int, list[tuple[float, str, object]]] = {}
        for strategy in self.strategies:
            weight = self.weights.get(strategy.name, 1.0)
            if weight <= 0:
                continue
            sig = strategy.evaluate(data)
            score = np.minimum(np.nan_to_num(sig.score, nan=0.0) * weight, 100.0) * factor
            with np.errstate(invalid="ignore"):
                passing = (ok & (score > 0) & (score >= self.min_score) & (sig.stop > 0)
                           & (sig.stop < price) & (sig.target > price))
            for i in np.flatnonzero(passing):
                candidates.setdefault(int(i), []).append((float(score[i]), strategy.name, sig))
        out = []
        for i, cands in candidates.items():
            cands.sort(key=lambda c: -c[0])
            score, name, sig = cands[0]
            reason = sig.explain(i)
            extra = confirm_text(i)
            if extra:
                reason += "; " + extra
            if len(cands) > 1:
                reason += "; also " + ", ".join(f"{n} {s:.0f}" for s, n, _ in cands[1:])
            out.append(Opportunity(symbol=data.symbols[i], strategy=name, side=sig.side, score=round(score, 1),
                                   price=float(price[i]), stop=float(sig.stop[i]), target=float(sig.target[i]),
                                   reason=reason, timeframe=self.signal_tf))
        out.sort(key=lambda o: (-o.score, o.symbol))
        return out

