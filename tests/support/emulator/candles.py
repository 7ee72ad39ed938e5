"""Recorded OHLCV for the emulator: CSVs loaded once into numpy, looked up by binary search.

A directory is either an ``ohlcv/`` root with one sub-directory per timeframe (``1h/``,
``5m/`` ...) or a flat directory of CSVs (its timeframe is taken from its name, else from
the most common spacing of the timestamps). The timeframe with the most files (1h in
../shared/data/ohlcv) defines which symbols exist. Files are ``<BASE>_<QUOTE>.csv`` with the
header ``timestamp_ms,open,high,low,close,volume``; the Binance symbol is ``BASEQUOTE``.

Timeframes that are not on disk are aggregated from the coarsest native timeframe that
divides them, on buckets aligned to the UTC epoch (so 4h candles start at 00, 04, 08 ...).
Only candles that have *closed* at the asked time are ever visible: ``ts + tf <= now``.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

# Binance kline intervals the emulator can serve (native or aggregated from a divisor).
INTERVAL_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000,
}
_KLINE_ROW = '[%d,"%.8f","%.8f","%.8f","%.8f","%.8f",%d,"%.8f",0,"0.00000000","0.00000000","0"]'


@dataclass(eq=False)
class Series:
    """One symbol at one timeframe: column arrays sorted by open time."""

    tf_ms: int
    ts: np.ndarray  # int64 open times
    ohlcv: np.ndarray  # float64 (n, 5): open, high, low, close, volume
    _rows: list[str | None] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.ts)

    def closed_count(self, now_ms: int) -> int:
        """Number of leading candles closed at ``now_ms`` (``ts + tf <= now``)."""
        return int(np.searchsorted(self.ts, now_ms - self.tf_ms, side="right"))

    def index_at(self, ts_ms: int) -> int:
        return int(np.searchsorted(self.ts, ts_ms, side="left"))

    def kline_json(self, lo: int, hi: int) -> str:
        """Rows ``lo:hi`` as a Binance kline JSON array (rows are formatted once, then reused).

        Quote volume is close x volume (the source files have no quote volume); trade count
        and taker volumes are not in the source and are sent as zero.
        """
        if not self._rows:
            self._rows = [None] * len(self.ts)
        rows = self._rows
        out = []
        for i in range(lo, hi):
            row = rows[i]
            if row is None:
                o, h, low, c, v = self.ohlcv[i]
                t = int(self.ts[i])
                row = rows[i] = _KLINE_ROW % (t, o, h, low, c, v, t + self.tf_ms - 1, c * v)
            out.append(row)
        return "[" + ",".join(out) + "]"


def aggregate(base: Series, tf_ms: int) -> Series:
    """Aggregate ``base`` into ``tf_ms`` buckets aligned to the epoch; gaps stay gaps."""
    if tf_ms % base.tf_ms:
        raise ValueError(f"{tf_ms} ms is not a multiple of {base.tf_ms} ms")
    if len(base) == 0:
        return Series(tf_ms, base.ts.copy(), base.ohlcv.copy())
    bucket = base.ts - base.ts % tf_ms
    starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket)) + 1))
    ends = np.concatenate((starts[1:], [len(bucket)]))
    x = base.ohlcv
    out = np.empty((len(starts), 5))
    out[:, 0] = x[starts, 0]
    out[:, 1] = np.maximum.reduceat(x[:, 1], starts)
    out[:, 2] = np.minimum.reduceat(x[:, 2], starts)
    out[:, 3] = x[ends - 1, 3]
    out[:, 4] = np.add.reduceat(x[:, 4], starts)
    return Series(tf_ms, bucket[starts].copy(), out)


def _read_csv(path: Path) -> np.ndarray:
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if data.size == 0:
        return np.empty((0, 6))
    if data.shape[1] != 6:
        raise ValueError(f"{path}: expected 6 columns timestamp_ms,open,high,low,close,volume, got {data.shape[1]}")
    order = np.argsort(data[:, 0], kind="stable")
    return data[order]


def _infer_tf(arrays: list[np.ndarray], name: str) -> int:
    if name in INTERVAL_MS:
        return INTERVAL_MS[name]
    diffs = np.concatenate([np.diff(a[:, 0]) for a in arrays if len(a) > 1] or [np.array([3_600_000.0])])
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def _symbol_of(stem: str) -> str:
    return stem.replace("_", "").replace("-", "").upper()


@lru_cache(maxsize=16)
def _load_group(path: str, mtime_ns: int) -> tuple[int, dict[str, Series]]:
    """(timeframe, {symbol: Series}) of one directory of CSVs; cached so emulators share arrays."""
    folder = Path(path)
    files = sorted(folder.glob("*.csv"))
    arrays = [_read_csv(f) for f in files]
    tf = _infer_tf(arrays, folder.name)
    table = {}
    for f, a in zip(files, arrays):
        table[_symbol_of(f.stem)] = Series(tf, a[:, 0].astype(np.int64), np.ascontiguousarray(a[:, 1:6]))
    return tf, table


class CandleBook:
    """All recorded candles, native and aggregated, for every symbol.

    The primary directory is loaded at once; finer ones (5m, 1m) on first use.
    """

    def __init__(self, ohlcv_dir: Path, shift_ms: int = 0) -> None:
        # shift_ms moves every candle forward in time (whole days keep 4h/1d buckets aligned):
        # realtime mode serves recorded history as if it were happening now.
        if shift_ms % 86_400_000:
            raise ValueError("shift_ms must be a whole number of days")
        self.shift_ms = int(shift_ms)
        root = Path(ohlcv_dir).resolve()
        if not root.is_dir():
            raise ValueError(f"{root}: OHLCV directory not found")
        subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name in INTERVAL_MS]
        groups = [(d, {_symbol_of(f.stem) for f in d.glob("*.csv")}) for d in subdirs] or \
                 [(root, {_symbol_of(f.stem) for f in root.glob("*.csv")})]
        groups = [(d, syms) for d, syms in groups if syms]
        if not groups:
            raise ValueError(f"{root}: no OHLCV CSV files found (expected <BASE>_<QUOTE>.csv, or sub-directories "
                             f"named after timeframes such as 1h/)")
        # The primary timeframe (most files, e.g. 1h) defines the symbols; finer directories only
        # add detail for those symbols (the 1m directory's BNB alone does not make a market).
        primary_dir, primary_syms = max(groups, key=lambda g: (len(g[1]), INTERVAL_MS.get(g[0].name, 0)))
        self.primary_tf, table = self._load(primary_dir)
        self.symbols: set[str] = set(primary_syms)
        self._native: dict[int, dict[str, Series]] = {self.primary_tf: table}
        self._lazy: dict[int, tuple[Path, set[str]]] = {
            INTERVAL_MS[d.name]: (d, syms) for d, syms in groups if d != primary_dir and d.name in INTERVAL_MS}
        self._derived: dict[tuple[str, int], Series | None] = {}
        self._lock = threading.RLock()

    def _load(self, folder: Path) -> tuple[int, dict[str, Series]]:
        tf, table = _load_group(str(folder), os.stat(folder).st_mtime_ns)
        if self.shift_ms:
            table = {sym: Series(s.tf_ms, s.ts + self.shift_ms, s.ohlcv) for sym, s in table.items()}
        return tf, table

    def _table(self, tf_ms: int) -> dict[str, Series]:
        table = self._native.get(tf_ms)
        if table is None:
            with self._lock:
                table = self._native.get(tf_ms)
                if table is None:
                    table = self._native[tf_ms] = self._load(self._lazy[tf_ms][0])[1]
        return table

    def native_timeframes(self, symbol: str) -> list[int]:
        if symbol not in self.symbols:
            return []
        tfs = [self.primary_tf] + [tf for tf, (_, syms) in self._lazy.items() if symbol in syms]
        return sorted(tfs)

    def series(self, symbol: str, tf_ms: int) -> Series | None:
        """Native series, or one aggregated from the coarsest native divisor; None if impossible."""
        if tf_ms in self.native_timeframes(symbol):
            return self._table(tf_ms)[symbol]
        key = (symbol, tf_ms)
        with self._lock:
            if key not in self._derived:
                divisors = [tf for tf in self.native_timeframes(symbol) if tf < tf_ms and tf_ms % tf == 0]
                self._derived[key] = aggregate(self._table(max(divisors))[symbol], tf_ms) if divisors else None
            return self._derived[key]

    def price_series(self, symbol: str) -> Series | None:
        """The series that prices ``symbol`` (book, ticker, fills): the primary timeframe's.

        Finer directories are only served as klines; using them for prices would make the
        market move at different speeds for different symbols.
        """
        return self._native[self.primary_tf].get(symbol)

    def last_close(self, symbol: str, now_ms: int) -> tuple[int, float] | None:
        """(open time, close) of the last candle closed at ``now_ms``; None before the first."""
        s = self.price_series(symbol)
        if s is None:
            return None
        n = s.closed_count(now_ms)
        if n == 0:
            return None
        return int(s.ts[n - 1]), float(s.ohlcv[n - 1, 3])
