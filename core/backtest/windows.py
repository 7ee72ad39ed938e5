"""The candle matrices and windowed indicators the signal table runs the strategies over.

Each (pair, candle) of the backtest becomes one row whose W columns are a zero-copy strided
window of a right-aligned (pairs x (W + T)) matrix ending at that candle, so the live
strategies (vectorised over rows, reading only their newest columns) score every candle of the
history in a few calls. ``core.backtest.signals`` builds the table from these pieces.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.scan.candles import CandleStore, CandleView
from core.scan.scanner import Indicators, Scanner
from core.timeframes import TIMEFRAME_MS

MIN_WINDOW = 64

class SignalMismatch(RuntimeError):
    """The precomputed signals differ from the real scanner's: the backtest must not go on."""


def window_width(scanner: Scanner) -> int:
    """Columns each row shows the strategies: enough for the deepest look-back a parameter allows."""
    deepest = 0
    for s in scanner.strategies:
        for f in fields(s.params):
            v = getattr(s.params, f.name)
            if isinstance(v, int) and not isinstance(v, bool):
                deepest = max(deepest, v)
    return max(MIN_WINDOW, deepest + 2)


# --- candle matrices ---------------------------------------------------------------------------

@dataclass
class Frame:
    """One timeframe's candles for a set of pairs; ``view`` lays them out as right-aligned
    (P, W + T) matrices (built on first use: the backtest builds it per group of pairs)."""

    timeframe: str
    symbols: tuple[str, ...]
    rows: list[np.ndarray]  # per pair (n, 6) candles
    width: int

    def __post_init__(self) -> None:
        self.tf_ms = TIMEFRAME_MS[self.timeframe]
        self.n = np.array([len(r) for r in self.rows], dtype=np.int64)
        self.length = self.width + int(self.n.max(initial=0))  # L: every pair has >= W NaN columns first

    def group(self, lo: int, hi: int) -> "Frame":
        return Frame(self.timeframe, self.symbols[lo:hi], self.rows[lo:hi], self.width)

    @cached_property
    def view(self) -> CandleView:
        data = np.full((6, len(self.rows), self.length), np.nan)
        for p, r in enumerate(self.rows):
            if len(r):
                data[:, p, self.length - len(r):] = r.T
        return CandleView(self.timeframe, self.symbols, *data, self.n.copy())

    def row_index(self, p: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Row of the flat window view that ends at candle ``k`` of pair ``p`` (k = -1: an all-NaN row)."""
        col = np.where(k >= 0, self.length - self.n[p] + k, self.width - 1)
        return p * self.length + col - (self.width - 1)

    def windows(self, matrix: np.ndarray) -> np.ndarray:
        """(P * L - W + 1, W) zero-copy view: row r = the W values ending at flat position r + W - 1."""
        return sliding_window_view(matrix.reshape(-1), self.width)


def derived_rows(symbols: Sequence[str], rows: list[np.ndarray], signal_tf: str, higher_tf: str,
                 ) -> list[np.ndarray]:
    """The higher timeframe's candles exactly as the candle store builds them from ``rows``."""
    # the store aggregates a whole appended block before trimming it to capacity, so a capacity
    # that holds every higher candle of the longest time span is enough
    span = max([int(r[-1, 0] - r[0, 0]) for r in rows if len(r)] + [0])
    cap = span // TIMEFRAME_MS[higher_tf] + 3
    store = CandleStore([signal_tf, higher_tf], cap)
    if store.derived_from(higher_tf) != signal_tf:
        raise ValueError(f"{higher_tf} is not built from {signal_tf} by the candle store")
    store.set_symbols(list(symbols))
    for sym, r in zip(symbols, rows):
        if len(r):
            store.append(sym, signal_tf, r)
    v = store.view(higher_tf)
    out = []
    for p in range(len(symbols)):
        c = int(v.counts[p])
        block = np.stack([v.ts[p], v.open[p], v.high[p], v.low[p], v.close[p], v.volume[p]], axis=1)
        out.append(np.ascontiguousarray(block[cap - c:]) if c else np.empty((0, 6)))
    return out


# --- strategies over (pair, candle) rows -------------------------------------------------------

class RowIds(Sequence):
    """Stands in for ``ScanInput.symbols``: row i of a chunk is flat row ``start + i``."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return list(range(self.start, self.stop))[i]
        if i < 0:
            i += len(self)
        return self.start + i


class WindowIndicators(Indicators):
    """``Indicators`` whose matrices have one row per (pair, candle): the W newest values then.

    Every indicator is computed once by ``full`` (the scanner's class over the whole history) and
    only re-viewed here, so strategies and ranking run unchanged. ``rows`` selects the rows: a
    slice (zero-copy) or an index array (gathered, for the higher timeframe).
    """

    def __init__(self, full: Indicators, frame: Frame, rows: slice | np.ndarray) -> None:
        self.full, self.frame, self.rows = full, frame, rows
        self.timeframe = full.timeframe
        self.view = None  # not the scanner's store view: rows are (pair, candle) here
        self._cache: dict[tuple, object] = {}
        self._fields: dict[str, np.ndarray] = {}

    def _wrap(self, matrix: np.ndarray) -> np.ndarray:
        return self.frame.windows(matrix)[self.rows]

    def _field(self, name: str) -> np.ndarray:
        v = self._fields.get(name)
        if v is None:
            v = self._fields[name] = self._wrap(getattr(self.full, name))
        return v

    ts = property(lambda self: self._field("ts"))
    open = property(lambda self: self._field("open"))
    high = property(lambda self: self._field("high"))
    low = property(lambda self: self._field("low"))
    close = property(lambda self: self._field("close"))
    volume = property(lambda self: self._field("volume"))

    def _get(self, key: tuple, compute):
        try:
            return self._cache[key]
        except KeyError:
            pass
        method = getattr(self.full, key[0], None)
        if not callable(method):
            raise SignalMismatch(f"scanner indicator cache key {key!r} does not name an Indicators method; "
                                 "core/backtest/windows.py must learn it")
        value = method(*key[1:])
        wrapped = _Outputs(self.frame, self.rows, value) if isinstance(value, tuple) else self._wrap(value)
        self._cache[key] = wrapped
        return wrapped


class _Outputs(Sequence):
    """A multi-output indicator's windows (MACD's line, signal and histogram), each wrapped when
    first read: strategies often read one of them, and wrapping the higher timeframe's copies
    (rows x W) each time costs more than any strategy. Indexing, unpacking and ``np.asarray``
    see the wrapped arrays (not a tuple subclass: numpy would read a tuple's raw items). It holds
    no reference to its ``WindowIndicators``: a cycle would keep every chunk's copies until the
    garbage collector ran."""

    def __init__(self, frame: Frame, rows: slice | np.ndarray, values: tuple) -> None:
        self._frame, self._rows, self._raw = frame, rows, values
        self._done: list[np.ndarray | None] = [None] * len(values)

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return tuple(self[j] for j in range(len(self._raw))[i])
        v = self._done[i]
        if v is None:
            v = self._done[i] = self._frame.windows(self._raw[i])[self._rows]
        return v

    def __iter__(self):
        return (self[j] for j in range(len(self._raw)))
