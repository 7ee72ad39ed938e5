"""Look-ahead check: change the future and prove the past signals stay the same.

Why. A strategy (or the signal precomputation) that peeks at candles not yet closed looks
brilliant in a backtest and fails live. The precomputation computes every indicator over the
whole history at once, so a non-causal indicator would leak silently. This check takes cut
points through the run, replaces every candle that opens at or after the cut by a different but
valid future (each candle's prices scaled by a random walk, volumes rescaled), rebuilds the
signal table and compares every cycle up to the cut: universe, skipped pairs and reasons, and
every opportunity (pair, strategy, score, price, stop, target, reason) must be identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.timeframes import timeframe_ms


@dataclass
class LookaheadReport:
    cuts: list[int]  # cycle times checked
    cycles: int  # cycles compared in all
    opportunities: int  # opportunities compared in all
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def perturb(rows: dict[str, np.ndarray], cut_ms: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Copies of ``rows`` where every candle opening at or after ``cut_ms`` differs (still valid)."""
    rng = np.random.default_rng(seed)
    out = {}
    for sym in sorted(rows):
        a = rows[sym]
        k = int(np.searchsorted(a[:, 0], cut_ms, side="left"))
        if k >= len(a):
            out[sym] = a
            continue
        b = a.copy()
        n = len(a) - k
        walk = np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))  # a different path, not a rescaling of the same one
        b[k:, 1:5] *= walk[:, None]
        b[k:, 5] *= rng.uniform(0.2, 5.0, n)
        out[sym] = b
    return out


def check(cfg, loaded, table, cuts: int = 3, seed: int = 0, progress=None) -> LookaheadReport:
    """Compare ``table`` (built on ``loaded.rows``) with tables built on perturbed futures."""
    from core.backtest.signals import SignalTable, compare

    times = table.times
    if not len(times):
        return LookaheadReport([], 0, 0, [])
    picks = sorted({int(j) for j in np.linspace(len(times) * 0.25, len(times) - 2, num=max(1, cuts)).round()
                    if 0 <= j < len(times) - 1})
    tf_ms = timeframe_ms(loaded.timeframe)
    problems: list[str] = []
    compared = opps = 0
    for n, j in enumerate(picks):
        cut = int(times[j])  # cycle j sees candles opened up to cut - tf_ms: everything from cut on is future
        if progress is not None:
            progress(n, len(picks))
        future = perturb(loaded.rows, cut, seed + n)
        other = SignalTable(cfg, future, loaded.markets, times)
        if all(future[s] is loaded.rows[s] for s in future):
            problems.append(f"cut {cut}: the perturbation changed no candle (nothing after the cut?)")
        for i in range(j + 1):
            a, b = table.result(i), other.result(i)
            diff = compare(a, b)
            compared += 1
            opps += len(a.opportunities)
            if diff:
                problems.append(f"cycle {int(times[i])} (before the cut at {cut}, {(cut - int(times[i])) // tf_ms} "
                                f"candles earlier) changed when only later candles did: {diff[0]}")
                break
    return LookaheadReport([int(times[j]) for j in picks], compared, opps, problems)
