"""24 h tickers from recorded candles: the one implementation behind ``ReplayGateway.fetch_tickers``
and the backtest's universe (every pair at every cycle at once).

A ticker at time ``now`` reads a symbol's candles that have closed (open time <= now - period):
the last one gives the price and its time, those opened in the last 24 h (open time >= now - 24 h)
the high, low and quote volume (sum of close x volume).

Vectorised over any number of (symbol, time) queries: the gateway asks for every symbol at one
time, the backtest for one pair at ~5,000 cycles (the gateway used two binary searches and
three reductions per symbol and call). Windows of equal length are gathered into one matrix
and reduced along its rows; ``np.sum`` over a contiguous row adds in the same pairwise order as
over the 1-D window, so the quote volume is bit-identical to the ``np.sum(close * volume)`` it
replaces -- the universe compares it with a threshold and ranks by it, and a prefix sum (equal
only to ~1e-12) could flip a pair sitting on the threshold.
"""
from __future__ import annotations

import numpy as np

from core.models import Ticker
from core.timeframes import DAY_MS

SPAN = 1 << 42  # open times (ms) stay below this until 2109: symbol p's keys are p * SPAN + ts
CHUNK = 1 << 20  # candles gathered at a time
FEW = 8  # up to this many symbols per ``DayTickers.at`` call: a loop per symbol is cheaper


def _windows(candles: np.ndarray, turnover: np.ndarray, keys: np.ndarray, base, start, now, tf_ms: int,
             day_ms: int):
    n = np.searchsorted(keys, base + (now - tf_ms), side="right")  # closed: open time <= now - period
    lo = np.minimum(np.searchsorted(keys, base + (now - day_ms - 1), side="right"), n)
    q = len(n)
    qv, high, low = np.zeros(q), np.full(q, np.nan), np.full(q, np.nan)
    span = n - lo
    for m in np.unique(span[span > 0]).tolist():
        sel = np.flatnonzero(span == m)
        step = max(1, CHUNK // m)
        for c in range(0, len(sel), step):
            part = sel[c:c + step]
            rows = lo[part, None] + np.arange(m)  # (k, m) candle indices, one window per row
            qv[part] = np.sum(turnover[rows], axis=1)
            high[part] = candles[rows, 2].max(axis=1)
            low[part] = candles[rows, 3].min(axis=1)
    return n - start, span, qv, high, low


def day_windows(candles: np.ndarray, now, tf_ms: int, day_ms: int = DAY_MS):
    """One symbol's candles (rows ``ts, open, high, low, close, volume``, sorted by time) seen at
    each time of ``now``: ``(count, span, qv, high, low)`` -- candles closed by then, how many of
    those opened in the last 24 h, and their quote volume, high and low (NaN when ``span`` is 0)."""
    now = np.asarray(now, dtype=np.int64)
    shape = now.shape
    out = _windows(candles, candles[:, 4] * candles[:, 5], candles[:, 0].astype(np.int64), 0, 0, now.reshape(-1),
                   int(tf_ms), int(day_ms))
    return tuple(x.reshape(shape) for x in out)


class DayTickers:
    """The tickers of a set of symbols (one timeframe's candles) at any time.

    The candles are moved into one flat array so one vectorised call answers every symbol; the
    arrays of ``data`` are replaced by views of it (same values, no second copy kept)."""

    def __init__(self, data: dict[str, np.ndarray], tf_ms: int) -> None:
        self.tf_ms = int(tf_ms)
        self.symbols = list(data)
        self.pos = {s: p for p, s in enumerate(self.symbols)}
        sizes = np.array([len(a) for a in data.values()], dtype=np.int64)
        self.stop = np.cumsum(sizes)
        self.start = self.stop - sizes
        self.flat = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, 6) for a in data.values()]) \
            if data else np.empty((0, 6))
        for s, lo, hi in zip(self.symbols, self.start.tolist(), self.stop.tolist()):
            data[s] = self.flat[lo:hi]
        ts = self.flat[:, 0].astype(np.int64)
        if len(ts) and not (0 <= ts.min() and ts.max() < SPAN):
            raise ValueError("candle open times must lie between 1970 and 2109")
        self.keys = np.repeat(np.arange(len(sizes), dtype=np.int64) * SPAN, sizes) + ts
        self.turnover = self.flat[:, 4] * self.flat[:, 5]  # close x volume per candle

    def at(self, now_ms: int, symbols: list[str] | None = None) -> dict[str, Ticker]:
        """What an exchange's all-symbols ticker request would have said at ``now_ms`` (symbols
        not listed yet, or unknown, are absent)."""
        names = self.symbols if symbols is None else [s for s in symbols if s in self.pos]
        q = len(names)
        if not q:
            return {}
        if q <= FEW:
            return self._few(names, int(now_ms))
        idx = np.fromiter((self.pos[s] for s in names), dtype=np.int64, count=q)
        start = self.start[idx]
        count, span, qv, high, low = _windows(self.flat, self.turnover, self.keys, idx * SPAN, start,
                                              np.int64(now_ms), self.tf_ms, DAY_MS)
        last = self.flat[np.maximum(start + count - 1, 0)]
        tf_ms = self.tf_ms
        out = {}
        for s, c, t, price, w, v, h, m in zip(names, count.tolist(), last[:, 0].tolist(), last[:, 4].tolist(),
                                              span.tolist(), qv.tolist(), high.tolist(), low.tolist()):
            if c:  # else not listed yet at this time
                out[s] = Ticker(s, int(t) + tf_ms, price, high=h if w else None, low=m if w else None,
                                quote_volume=v)
        return out

    def _few(self, names: list[str], now_ms: int) -> dict[str, Ticker]:
        """``at`` for a few symbols (the engine marks its open positions every cycle): per symbol,
        two binary searches and reductions over its contiguous 24 h slice -- the same sums as the
        gathered rows (``np.sum`` over a contiguous 1-D slice adds in the same pairwise order)
        without the vectorised path's fixed cost."""
        tf_ms, keys, flat, turnover = self.tf_ms, self.keys, self.flat, self.turnover
        out = {}
        for s in names:
            p = self.pos[s]
            start, stop = int(self.start[p]), int(self.stop[p])
            block = keys[start:stop]
            base = p * SPAN
            n = start + int(block.searchsorted(base + (now_ms - tf_ms), side="right"))
            if n == start:
                continue  # not listed yet at this time
            lo = min(start + int(block.searchsorted(base + (now_ms - DAY_MS - 1), side="right")), n)
            last = flat[n - 1]
            if n > lo:
                out[s] = Ticker(s, int(last[0]) + tf_ms, float(last[4]), high=float(flat[lo:n, 2].max()),
                                low=float(flat[lo:n, 3].min()), quote_volume=float(np.sum(turnover[lo:n])))
            else:
                out[s] = Ticker(s, int(last[0]) + tf_ms, float(last[4]), high=None, low=None, quote_volume=0.0)
        return out
