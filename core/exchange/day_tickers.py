"""24 h tickers from recorded candles: the one implementation behind ``ReplayGateway.fetch_tickers``
and the backtest's universe (every pair at every cycle at once).

A ticker at time ``now`` reads a symbol's candles that have closed (open time <= now - period):
the last one gives the price and its time, those opened in the last 24 h (open time >= now - 24 h)
the high, low and quote volume (sum of close x volume).

Why a numba kernel. The gateway used two binary searches and three numpy reductions per symbol
and call (~28 us each); the backtest needs the same figures for ~650,000 (pair, cycle) windows.
One compiled loop over any number of (symbol, time) queries serves both. The quote volume is
summed in numpy's own order (``np.sum``'s pairwise blocks of eight), so it is bit-identical to
the ``np.sum(close * volume)`` it replaces: the universe compares it with a threshold and ranks
by it, and a prefix sum (equal only to ~1e-12) could flip a pair sitting on the threshold.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from core.models import Ticker
from core.timeframes import DAY_MS

_kernel = njit(cache=True)
_BLOCK = 128  # numpy's PW_BLOCKSIZE: longer runs are split in two (at a multiple of 8)


@_kernel
def _quote_sum(a, lo, n):
    """sum(a[i, 4] * a[i, 5] for i in lo..lo+n-1) exactly as numpy's pairwise sum orders it."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i, 4] * a[i, 5]
        return res
    if n <= _BLOCK:
        r0 = a[lo, 4] * a[lo, 5]
        r1 = a[lo + 1, 4] * a[lo + 1, 5]
        r2 = a[lo + 2, 4] * a[lo + 2, 5]
        r3 = a[lo + 3, 4] * a[lo + 3, 5]
        r4 = a[lo + 4, 4] * a[lo + 4, 5]
        r5 = a[lo + 5, 4] * a[lo + 5, 5]
        r6 = a[lo + 6, 4] * a[lo + 6, 5]
        r7 = a[lo + 7, 4] * a[lo + 7, 5]
        i = 8
        while i < n - n % 8:
            j = lo + i
            r0 += a[j, 4] * a[j, 5]
            r1 += a[j + 1, 4] * a[j + 1, 5]
            r2 += a[j + 2, 4] * a[j + 2, 5]
            r3 += a[j + 3, 4] * a[j + 3, 5]
            r4 += a[j + 4, 4] * a[j + 4, 5]
            r5 += a[j + 5, 4] * a[j + 5, 5]
            r6 += a[j + 6, 4] * a[j + 6, 5]
            r7 += a[j + 7, 4] * a[j + 7, 5]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i, 4] * a[lo + i, 5]
            i += 1
        return res
    half = n // 2
    half -= half % 8
    return _quote_sum(a, lo, half) + _quote_sum(a, lo + half, n - half)


@_kernel
def _after(a, t, lo, hi):
    """First row in lo..hi-1 whose open time (column 0) is > t (bisect_right)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if t < a[mid, 0]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@_kernel
def _windows(a, start, stop, now, tf_ms, day_ms, count, span, qv, high, low):
    for q in range(now.shape[0]):
        s0 = start[q]
        n = _after(a, now[q] - tf_ms, s0, stop[q])
        lo = _after(a, now[q] - day_ms - 1, s0, n)
        count[q] = n - s0
        span[q] = n - lo
        qv[q] = 0.0 + _quote_sum(a, lo, n - lo)  # np.sum starts from 0.0 too
        h = np.nan
        m = np.nan
        if n > lo:
            h = a[lo, 2]
            m = a[lo, 3]
            for i in range(lo + 1, n):  # NaN-propagating like ndarray.max/min
                if h == h and not a[i, 2] <= h:
                    h = a[i, 2]
                if m == m and not a[i, 3] >= m:
                    m = a[i, 3]
        high[q] = h
        low[q] = m


def day_windows(candles: np.ndarray, start, stop, now, tf_ms: int, day_ms: int = DAY_MS):
    """For each query q, the candles ``candles[start[q]:stop[q]]`` of one symbol (rows
    ``ts, open, high, low, close, volume``, sorted by time) seen at time ``now[q]``.

    Returns ``(count, span, qv, high, low)``: candles closed by then, how many of those opened in
    the last 24 h, and their quote volume, high and low (NaN when ``span`` is 0). The query
    arguments broadcast against each other (the backtest: one pair's history at every cycle;
    the gateway: every symbol at one time)."""
    shape = np.broadcast_shapes(np.shape(now), np.shape(start), np.shape(stop))
    now, start, stop = (np.array(np.broadcast_to(x, shape), dtype=np.int64).reshape(-1) for x in (now, start, stop))
    q = len(now)
    count, span = np.empty(q, dtype=np.int64), np.empty(q, dtype=np.int64)
    qv, high, low = np.empty(q), np.empty(q), np.empty(q)
    a = np.ascontiguousarray(candles, dtype=np.float64).reshape(-1, 6)
    if q:
        _windows(a, start, stop, now, int(tf_ms), int(day_ms), count, span, qv, high, low)
    return tuple(x.reshape(shape) for x in (count, span, qv, high, low))


class DayTickers:
    """The tickers of a set of symbols (one timeframe's candles) at any time.

    The candles are moved into one flat array so one kernel call answers every symbol; the
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

    def at(self, now_ms: int, symbols: list[str] | None = None) -> dict[str, Ticker]:
        """What an exchange's all-symbols ticker request would have said at ``now_ms`` (symbols
        not listed yet, or unknown, are absent)."""
        names = self.symbols if symbols is None else [s for s in symbols if s in self.pos]
        q = len(names)
        if not q:
            return {}
        idx = np.fromiter((self.pos[s] for s in names), dtype=np.int64, count=q)
        start = self.start[idx]
        count, span = np.empty(q, dtype=np.int64), np.empty(q, dtype=np.int64)
        qv, high, low = np.empty(q), np.empty(q), np.empty(q)
        _windows(self.flat, start, self.stop[idx], np.full(q, now_ms, dtype=np.int64), self.tf_ms, DAY_MS,
                 count, span, qv, high, low)
        last = self.flat[np.maximum(start + count - 1, 0)]
        tf_ms = self.tf_ms
        out = {}
        for s, c, t, price, w, v, h, m in zip(names, count.tolist(), last[:, 0].tolist(), last[:, 4].tolist(),
                                              span.tolist(), qv.tolist(), high.tolist(), low.tolist()):
            if c:  # else not listed yet at this time
                out[s] = Ticker(s, int(t) + tf_ms, price, high=h if w else None, low=m if w else None,
                                quote_volume=v)
        return out
