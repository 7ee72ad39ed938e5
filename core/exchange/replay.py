"""Recorded market data served through the gateway interface on a virtual clock.

At virtual time ``t`` only candles that *closed* at or before ``t`` exist (open time + period
<= t): the engine cannot peek. Gaps in the files (real exchange outages) stay gaps. Tickers
are derived from the candles (last close, 24 h high/low/quote volume); order books and
account calls are not in recorded data and raise ``NotSupported``.
"""
from __future__ import annotations

import bisect
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import numpy as np

from core.clock import Clock
from core.exchange.gateway import NotSupported
from core.timeframes import TIMEFRAME_MS, timeframe_ms
from core.models import Fill, Market, Order, OrderBook, Ticker
from core.timeframes import DAY_MS

HEADER = "timestamp_ms,open,high,low,close,volume"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"


class DataError(ValueError):
    """A recorded-data file that cannot be used; the message names the file and line."""


def _open_text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")


def load_csv(path: Path, tf_ms: int) -> np.ndarray:
    """Read one OHLCV CSV into a float64 (n, 6) array, checking every row."""
    text = _open_text(path)
    first, _, body = text.partition("\n")
    if first.strip() != HEADER:
        raise DataError(f"{path}:1: header: expected '{HEADER}', got '{first.strip()[:60]}'")
    try:
        arr = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        arr = None
    if arr is None or (arr.size and arr.shape[1] != 6):
        for lineno, line in enumerate(body.splitlines(), start=2):
            parts = line.split(",")
            if len(parts) != 6:
                raise DataError(f"{path}:{lineno}: row: expected 6 comma-separated fields, got {len(parts)}")
            for name, value in zip(HEADER.split(","), parts):
                try:
                    float(value)
                except ValueError:
                    raise DataError(f"{path}:{lineno}: {name}: expected a number, got '{value[:20]}'") from None
        raise DataError(f"{path}: cannot be parsed as OHLCV")
    arr = arr.reshape(-1, 6)
    ts, o, h, lo, c, v = arr.T
    checks = (
        (np.diff(ts) <= 0, "timestamp_ms", "strictly increasing timestamps"),
        (ts % tf_ms != 0, "timestamp_ms", f"candle open times aligned to {tf_ms // 1000} s"),
        (~np.isfinite(arr).all(axis=1), "row", "finite numbers"),
        ((o <= 0) | (c <= 0) | (lo <= 0), "low", "prices above 0"),
        ((h < np.maximum(o, c)) | (lo > np.minimum(o, c)), "high", "high >= open, close >= low"),
        (v < 0, "volume", "a volume >= 0"),
    )
    for bad, field, expected in checks:
        idx = np.flatnonzero(bad)
        if idx.size:
            line = int(idx[0]) + (3 if field == "timestamp_ms" and bad.size == ts.size - 1 else 2)
            raise DataError(f"{path}:{line}: {field}: expected {expected}")
    return np.ascontiguousarray(arr)


def _symbol_from_file(path: Path) -> str:
    stem = path.name.split(".")[0]
    base, sep, quote = stem.rpartition("_")
    if not sep or not base:
        raise DataError(f"{path}: file name: expected BASE_QUOTE.csv (e.g. BTC_USDT.csv)")
    return f"{base}/{quote}"


def _markets_from_file(path: Path, symbols: list[str]) -> dict[str, Market]:
    raw = json.loads(path.read_text())

    def dec(v: str | None) -> Decimal | None:
        if v is None:
            return None
        d = Decimal(v).normalize()
        return d.quantize(Decimal(1)) if d == d.to_integral_value() else d  # "10", not "1E+1"

    out = {}
    for sym in symbols:
        r = raw.get(sym)
        base, quote = sym.split("/")
        if r is None:
            out[sym] = Market(sym, base, quote)
            continue
        out[sym] = Market(sym, base, quote, True, dec(r.get("amount_step")), dec(r.get("price_tick")),
                          dec(r.get("min_amount")), dec(r.get("min_cost")), dec(r.get("max_amount")))
    return out


class ReplayGateway:
    """Serves ``DIR/<timeframe>/*.csv[.gz]`` (or ``DIR/*.csv``) on ``clock``.

    Order rules come from ``markets.json`` beside the data (real exchangeInfo filters, see
    data/sample), else the pairs have no precision limits.
    """

    def __init__(self, data_dir: str | Path, clock: Clock, timeframe: str = "1h",
                 symbols: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock
        if not self.data_dir.is_dir():
            raise DataError(f"{self.data_dir}: expected a directory of OHLCV CSV files")
        self.data: dict[str, dict[str, np.ndarray]] = {}  # timeframe -> symbol -> array
        # DIR/<tf>/ layout (like ../shared/data/ohlcv): only the requested timeframe is loaded, so a
        # folder that also holds 1m data for a few pairs does not change what is replayed.
        sub = self.data_dir / timeframe
        present = sorted((d.name for d in self.data_dir.iterdir() if d.is_dir() and d.name in TIMEFRAME_MS),
                         key=timeframe_ms)
        if not sub.is_dir() and present:
            raise DataError(f"{self.data_dir}: no {timeframe} candles (it has {', '.join(present)}/)")
        sources = {timeframe: sub if sub.is_dir() else self.data_dir}
        for tf, folder in sorted(sources.items()):
            files = sorted(folder.glob("*.csv")) + sorted(folder.glob("*.csv.gz"))
            per_tf = {}
            for f in files:
                sym = _symbol_from_file(f)
                if symbols is None or sym in symbols:
                    per_tf[sym] = load_csv(f, timeframe_ms(tf))
            if per_tf:
                self.data[tf] = per_tf
        if not self.data:
            raise DataError(f"{self.data_dir}: no OHLCV files (expected <tf>/BASE_QUOTE.csv or BASE_QUOTE.csv)")
        self.base_timeframe = min(self.data, key=timeframe_ms)
        self._ts_index = {tf: {s: a[:, 0] for s, a in d.items()} for tf, d in self.data.items()}
        all_syms = sorted({s for d in self.data.values() for s in d})
        mfile = next((p for p in (self.data_dir / "markets.json", self.data_dir.parent / "markets.json")
                      if p.exists()), None)
        self.markets_source = str(mfile) if mfile else None
        self._markets = _markets_from_file(mfile, all_syms) if mfile else {
            s: Market(s, *s.split("/")) for s in all_syms}

    # --- time range ---------------------------------------------------------------------------
    @property
    def start_ms(self) -> int:
        """Open time of the first candle of the base timeframe."""
        return int(min(a[0, 0] for a in self.data[self.base_timeframe].values() if len(a)))

    @property
    def end_ms(self) -> int:
        """Close time of the last candle: after it nothing new will appear."""
        tf_ms = timeframe_ms(self.base_timeframe)
        return int(max(a[-1, 0] for a in self.data[self.base_timeframe].values() if len(a))) + tf_ms

    def _closed(self, symbol: str, tf: str) -> tuple[np.ndarray, int]:
        """The symbol's array and how many of its candles have closed by now."""
        arr = self.data.get(tf, {}).get(symbol)
        if arr is None:
            return np.empty((0, 6)), 0
        cutoff = self.clock.now_ms() - timeframe_ms(tf)  # open time <= now - period  <=> closed
        return arr, bisect.bisect_right(self._ts_index[tf][symbol], cutoff)

    # --- gateway protocol ---------------------------------------------------------------------
    async def load_markets(self, reload: bool = False) -> dict[str, Market]:
        return dict(self._markets)

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int | None = None,
                          limit: int | None = None) -> np.ndarray:
        if timeframe not in self.data:
            raise NotSupported(f"no {timeframe} data in {self.data_dir}")
        arr, n = self._closed(symbol, timeframe)
        lo = 0
        if since_ms is not None and n:
            lo = bisect.bisect_left(self._ts_index[timeframe][symbol], since_ms, 0, n)
        if limit is not None:
            if since_ms is None:
                lo = max(0, n - limit)
            else:
                n = min(n, lo + limit)
        return arr[lo:n].copy()

    async def fetch_tickers(self, symbols: list[str] | None = None) -> dict[str, Ticker]:
        tf = self.base_timeframe
        now = self.clock.now_ms()
        out = {}
        for sym in symbols if symbols is not None else self.data[tf]:
            arr, n = self._closed(sym, tf)
            if n == 0:
                continue  # not listed yet at this time
            last_close_ms = int(arr[n - 1, 0]) + timeframe_ms(tf)
            day = arr[bisect.bisect_right(self._ts_index[tf][sym], now - DAY_MS - 1, 0, n):n]
            qv = float(np.sum(day[:, 4] * day[:, 5])) if len(day) else 0.0
            hi = float(day[:, 2].max()) if len(day) else None
            lo = float(day[:, 3].min()) if len(day) else None
            out[sym] = Ticker(sym, last_close_ms, float(arr[n - 1, 4]), high=hi, low=lo, quote_volume=qv)
        return out

    async def fetch_order_book(self, symbol: str, limit: int = 20) -> OrderBook:
        raise NotSupported("recorded data has no order books")

    async def fetch_balance(self) -> dict[str, Decimal]:
        raise NotSupported("recorded data has no account")

    async def create_order(self, order: Order) -> Order:
        raise NotSupported("replay cannot place orders; use paper mode")

    async def cancel_order(self, order: Order) -> Order:
        raise NotSupported("replay cannot cancel orders")

    async def fetch_order(self, order: Order) -> Order | None:
        raise NotSupported("replay has no orders")

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        raise NotSupported("replay has no orders")

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[Fill]:
        raise NotSupported("replay has no trades")

    async def fetch_time(self) -> int:
        return self.clock.now_ms()

    async def close(self) -> None:
        return None
