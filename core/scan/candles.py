"""Candle store: one fixed numpy buffer per timeframe, all pairs in one matrix.

Layout. Each timeframe owns one float64 array ``data[field, pair, slot]`` of shape
``(6, pairs, capacity)``, fields ``ts, open, high, low, close, volume``. ``data[k]`` is a
C-contiguous ``pairs x capacity`` matrix, which is exactly what the 2-D indicator kernels
take, so a scan reads the buffers with no copy. Every row is right-aligned: slot
``capacity - 1`` holds the pair's newest candle and a pair with less history is NaN on the
left ("no history yet" for the kernels). Rows are aligned by position, not by time: a
pair's own timestamps (``ts``) say when each candle was; market gaps (exchange outages) are
simply missing candles, as the exchange reports them.

Why shift-in-place and not a ring or a double-length buffer. A ring buffer needs a copy
(``np.roll``) to give the kernels a time-ordered matrix, and the classic double-length
"moving window" trick only yields a contiguous view in 1-D: in 2-D the row stride would be
``2 * capacity``, not C-contiguous, and rows are appended at different moments anyway.
Appending ``n`` candles to a row instead moves that row's held candles ``n`` slots left
(through a preallocated scratch row, no temporary arrays) and writes the new ones at the
end: O(capacity) per appended row (24 KB for 500 candles), no allocation, and the matrix
the scanner sees never changes identity. Only a universe change (``set_symbols``, hourly
at most) allocates new buffers.

Derived timeframes. When the configured timeframes contain both ``1h`` and ``4h`` the
exchange is asked for ``1h`` only and the store builds ``4h`` candles itself
(``derived_from("4h") == "1h"``; also ``15m`` from ``5m``). Buckets are aligned to UTC
multiples of the longer period (00:00, 04:00, ... for 4h, like Binance). Only complete
buckets are emitted: a bucket is complete once its last sub-candle (e.g. 03:00 for the
00:00 bucket) or any later candle has arrived. Gaps inside a bucket: the bucket is built
from the sub-candles that exist (open of the first, close of the last, high/low extremes,
summed volume), which is what the exchange's own 4h kline shows when it had no trades for
an hour; a bucket with no sub-candle at all is a missing 4h candle. The first bucket of a
pair's history is dropped when the history starts inside it (we did not fetch its start,
so its open would be wrong). Aggregation uses the whole appended block before the source
buffer trims it to capacity, so a backfill of ``4 x capacity`` 1h candles fills both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.timeframes import TIMEFRAME_MS

FIELDS = ("ts", "open", "high", "low", "close", "volume")

# timeframe -> the shorter timeframe it is aggregated from when both are configured
DERIVABLE = {"4h": "1h", "15m": "5m"}


@dataclass(frozen=True, slots=True)
class CandleView:
    """The matrices of one timeframe (live views of the store's buffers: read, never write).

    ``counts[i]`` is how many candles row ``i`` holds; the rest of the row, on the left, is NaN.
    """

    timeframe: str
    symbols: tuple[str, ...]
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    counts: np.ndarray

    @property
    def capacity(self) -> int:
        return self.ts.shape[1]


class _Buffer:
    """One timeframe's fixed storage; see the module docstring for the layout."""

    def __init__(self, rows: int, capacity: int) -> None:
        self.data = np.full((len(FIELDS), rows, capacity), np.nan)
        self.counts = np.zeros(rows, dtype=np.int64)
        self._scratch = np.empty((len(FIELDS), capacity))

    @property
    def capacity(self) -> int:
        return self.data.shape[2]

    def last_ts(self, row: int) -> int | None:
        return int(self.data[0, row, -1]) if self.counts[row] else None

    def push(self, row: int, block: np.ndarray) -> None:
        """Append ``block`` (n, 6), already filtered to new, ascending candles."""
        cap, n = self.capacity, len(block)
        if n == 0:
            return
        if n >= cap:
            self.data[:, row, :] = block[n - cap:].T
            self.counts[row] = cap
            return
        keep = min(int(self.counts[row]), cap - n)
        if keep:
            # src and dst overlap; going through the scratch row avoids numpy's temporary copy
            self._scratch[:, :keep] = self.data[:, row, cap - keep:]
            self.data[:, row, cap - n - keep:cap - n] = self._scratch[:, :keep]
        self.data[:, row, cap - n:] = block.T
        self.counts[row] = keep + n

    def copy_row(self, dst: int, src: _Buffer, src_row: int) -> None:
        self.data[:, dst, :] = src.data[:, src_row, :]
        self.counts[dst] = src.counts[src_row]


class CandleStore:
    """Closed candles per pair and timeframe for the scanner (see module docstring)."""

    def __init__(self, timeframes: Sequence[str], capacity: int, capacities: dict[str, int] | None = None) -> None:
        """``capacities``: a different capacity for some timeframes (the backtest's reference check
        keeps a whole history of both timeframes, which needs a quarter of the columns for 4h)."""
        if not timeframes:
            raise ValueError("CandleStore needs at least one timeframe")
        for tf in timeframes:
            if tf not in TIMEFRAME_MS:
                raise ValueError(f"unknown timeframe {tf!r} (expected one of {', '.join(TIMEFRAME_MS)})")
        if len(set(timeframes)) != len(timeframes):
            raise ValueError(f"duplicate timeframes in {list(timeframes)}")
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.timeframes: list[str] = list(timeframes)
        self.capacity = int(capacity)
        self._capacity = {tf: int((capacities or {}).get(tf, capacity)) for tf in self.timeframes}
        if min(self._capacity.values()) < 2:
            raise ValueError(f"capacity must be at least 2, got {capacities}")
        self._sources = {tf: DERIVABLE[tf] for tf in self.timeframes
                         if DERIVABLE.get(tf) in self.timeframes}
        self.symbols: list[str] = []
        self._row: dict[str, int] = {}
        self._buffers = {tf: _Buffer(0, self._capacity[tf]) for tf in self.timeframes}
        self._views: dict[str, CandleView] = {}
        # derived timeframe -> symbol -> source candles of the bucket still open
        self._pending: dict[str, dict[str, np.ndarray]] = {tf: {} for tf in self._sources}
        # derived timeframe -> symbol -> ignore source candles before this ts (truncated first bucket)
        self._skip_until: dict[str, dict[str, float]] = {tf: {} for tf in self._sources}

    # --- structure ------------------------------------------------------------------------------

    def derived_from(self, timeframe: str) -> str | None:
        """The configured timeframe ``timeframe`` is built from, or None if it is fetched."""
        return self._sources.get(timeframe)

    @property
    def fetched_timeframes(self) -> list[str]:
        """The timeframes the exchange must be asked for (configured minus derived)."""
        return [tf for tf in self.timeframes if tf not in self._sources]

    def set_symbols(self, symbols: Sequence[str]) -> None:
        """Make ``symbols`` the rows (in that order); kept symbols keep their candles."""
        symbols = list(symbols)
        if symbols == self.symbols:
            return
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols in the universe")
        old_row = self._row
        buffers = {}
        for tf, old in self._buffers.items():
            new = _Buffer(len(symbols), self._capacity[tf])
            for i, sym in enumerate(symbols):
                j = old_row.get(sym)
                if j is not None:
                    new.copy_row(i, old, j)
            buffers[tf] = new
        keep = set(symbols)
        for state in (*self._pending.values(), *self._skip_until.values()):
            for sym in [s for s in state if s not in keep]:
                del state[sym]
        self._buffers = buffers
        self.symbols = symbols
        self._row = {s: i for i, s in enumerate(symbols)}
        self._views = {}

    def view(self, timeframe: str) -> CandleView:
        """Zero-copy matrices of ``timeframe``; the same arrays until ``set_symbols`` changes rows."""
        v = self._views.get(timeframe)
        if v is None:
            buf = self._buffer(timeframe)
            v = CandleView(timeframe, tuple(self.symbols), *buf.data, buf.counts)
            self._views[timeframe] = v
        return v

    def last_ts(self, symbol: str, timeframe: str) -> int | None:
        return self._buffer(timeframe).last_ts(self._index(symbol))

    def count(self, symbol: str, timeframe: str) -> int:
        return int(self._buffer(timeframe).counts[self._index(symbol)])

    # --- appending ------------------------------------------------------------------------------

    def append(self, symbol: str, timeframe: str, ohlcv: np.ndarray) -> int:
        """Append closed candles ``(n, 6) [ts_ms, o, h, l, c, v]``; rows not newer than the last
        stored candle are ignored. Returns how many were appended."""
        if timeframe in self._sources:
            raise ValueError(f"{timeframe} candles are built from {self._sources[timeframe]} by the store; "
                             f"append {self._sources[timeframe]} candles instead")
        buf = self._buffer(timeframe)
        row = self._index(symbol)
        block = np.asarray(ohlcv, dtype=np.float64)
        if block.ndim != 2 or block.shape[1] != len(FIELDS):
            raise ValueError(f"{symbol} {timeframe}: expected OHLCV rows of 6 columns, got shape {block.shape}")
        last = buf.last_ts(row)
        if last is not None:
            block = block[block[:, 0] > last]
        if len(block) == 0:
            return 0
        if len(block) > 1 and not np.all(block[1:, 0] > block[:-1, 0]):
            raise ValueError(f"{symbol} {timeframe}: candle timestamps are not strictly ascending")
        for derived, source in self._sources.items():
            if source == timeframe:
                self._aggregate(symbol, derived, block, first=last is None)
        buf.push(row, block)
        return len(block)

    def _aggregate(self, symbol: str, tf: str, block: np.ndarray, first: bool) -> None:
        period = TIMEFRAME_MS[tf]
        last_slot = period - TIMEFRAME_MS[self._sources[tf]]  # offset of a bucket's final sub-candle
        pending = self._pending[tf].pop(symbol, None)
        rows = block if pending is None else np.concatenate((pending, block))
        if first and pending is None:
            start = rows[0, 0] - rows[0, 0] % period
            if rows[0, 0] != start:
                self._skip_until[tf][symbol] = start + period
        skip = self._skip_until[tf].get(symbol)
        if skip is not None:
            rows = rows[rows[:, 0] >= skip]
            if len(rows) == 0:
                return
            del self._skip_until[tf][symbol]
        first_ts, last_ts = rows[0, 0], rows[-1, 0]
        open_bucket = last_ts - last_ts % period
        complete = last_ts - open_bucket == last_slot
        if not complete and first_ts >= open_bucket:  # the usual cycle: still inside one open bucket
            self._pending[tf][symbol] = rows.copy()
            return
        bucket = rows[:, 0] - rows[:, 0] % period
        change = np.empty(len(rows), dtype=bool)
        change[0] = True
        np.not_equal(bucket[1:], bucket[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:]
        ends[-1] = len(rows)
        if not complete:  # the newest bucket is still open
            self._pending[tf][symbol] = rows[starts[-1]:].copy()
            starts, ends = starts[:-1], ends[:-1]
        done = rows[:ends[-1]]  # reduceat runs each group to the next start, the last one to the end
        out = np.empty((len(starts), len(FIELDS)))
        out[:, 0] = bucket[starts]
        out[:, 1] = done[starts, 1]
        out[:, 2] = np.maximum.reduceat(done[:, 2], starts)
        out[:, 3] = np.minimum.reduceat(done[:, 3], starts)
        out[:, 4] = done[ends - 1, 4]
        out[:, 5] = np.add.reduceat(done[:, 5], starts)
        buf = self._buffers[tf]
        row = self._index(symbol)
        last = buf.last_ts(row)
        if last is not None:
            out = out[out[:, 0] > last]
        buf.push(row, out)

    # --- helpers --------------------------------------------------------------------------------

    def _buffer(self, timeframe: str) -> _Buffer:
        try:
            return self._buffers[timeframe]
        except KeyError:
            raise KeyError(f"timeframe {timeframe!r} is not in this store ({', '.join(self.timeframes)})") from None

    def _index(self, symbol: str) -> int:
        try:
            return self._row[symbol]
        except KeyError:
            raise KeyError(f"{symbol} is not in the candle store's universe; call set_symbols first") from None
