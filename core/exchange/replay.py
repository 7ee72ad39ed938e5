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
import logging
import zlib
from decimal import Decimal
from pathlib import Path

import numpy as np

from core.clock import Clock
from core.exchange.day_tickers import DayTickers
from core.exchange.gateway import NotSupported
from core.timeframes import TIMEFRAME_MS, timeframe_ms
from core.models import Fill, Market, Order, OrderBook, Ticker

HEADER = "timestamp_ms,open,high,low,close,volume"
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
log = logging.getLogger(__name__)


class DataError(ValueError):
    """A recorded-data file that cannot be used; the message names the file and line."""


MAX_PRICE = 1e15  # beyond any traded price: 1e308 overflows price x volume into inf (numpy warnings)
MAX_VOLUME = 1e20


def _open_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc.__class__.__name__})") from None
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Excel's CSV) is not part of the header
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: expected UTF-8 text, got the byte 0x{raw[exc.start]:02x}") from None


def load_csv(path: Path, tf_ms: int) -> np.ndarray:
    """Read one OHLCV CSV into a float64 (n, 6) array, checking every row."""
    text = _open_text(path)
    first, _, body = text.partition("\n")
    if first.strip() != HEADER:
        got = first.strip()[:60].encode("ascii", "backslashreplace").decode()  # no invisible characters
        raise DataError(f"{path}:1: header: expected '{HEADER}', got '{got}'")
    return check_rows(path, _parse_body(path, body), tf_ms)


def _parse_body(path: Path, body: str) -> np.ndarray:
    if not body.strip():
        raise DataError(f"{path}:2: expected candle rows after the header, got none")
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
    return arr.reshape(-1, 6)


def check_rows(path: Path, arr: np.ndarray, tf_ms: int, first_line: int = 2, unit: str = "") -> np.ndarray:
    """Check parsed OHLCV rows; errors name ``path:<line>`` (``first_line`` is row 0's line; ``unit``
    "row " for formats without lines)."""
    if len(arr) < 2:
        raise DataError(f"{path}:{unit}{first_line}: expected at least 2 candles, got {len(arr)}")
    ts, o, h, lo, c, v = arr.T
    with np.errstate(all="ignore"):  # the checks below name the bad row; numpy need not warn too
        checks = (
            (~np.isfinite(arr).all(axis=1), "row", "finite numbers"),
            (np.diff(ts) <= 0, "timestamp_ms", "strictly increasing timestamps"),
            (ts % tf_ms != 0, "timestamp_ms", f"candle open times aligned to {tf_ms // 1000} s"),
            ((o <= 0) | (c <= 0) | (lo <= 0), "low", "prices above 0"),
            (np.maximum(np.maximum(o, c), np.maximum(h, lo)) > MAX_PRICE, "high", f"prices at most {MAX_PRICE:g}"),
            ((h < np.maximum(o, c)) | (lo > np.minimum(o, c)), "high", "high >= open, close >= low"),
            (v < 0, "volume", "a volume >= 0"),
            (v > MAX_VOLUME, "volume", f"a volume at most {MAX_VOLUME:g}"),
        )
    for bad, field, expected in checks:
        idx = np.flatnonzero(bad)
        if idx.size:
            line = int(idx[0]) + first_line + (1 if field == "timestamp_ms" and bad.size == ts.size - 1 else 0)
            raise DataError(f"{path}:{unit}{line}: {field}: expected {expected}")
    return np.ascontiguousarray(arr)


def load_freqtrade(path: Path, tf_ms: int) -> np.ndarray:
    """One freqtrade json/json.gz file (see core.exchange.freqtrade_data), checked like a CSV."""
    from core.exchange import freqtrade_data

    try:
        arr = freqtrade_data.load(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return check_rows(path, arr, tf_ms, first_line=1, unit="row ")


def _symbol_from_file(path: Path) -> str:
    stem = path.name.split(".")[0]
    base, sep, quote = stem.rpartition("_")
    if not sep or not base:
        raise DataError(f"{path}: file name: expected BASE_QUOTE.csv (e.g. BTC_USDT.csv)")
    return f"{base}/{quote}"


def _markets_from_file(path: Path, symbols: list[str]) -> dict[str, Market]:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8-sig"))
        markets = _parse_markets(raw, symbols)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: expected valid JSON ({exc.msg})") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: expected UTF-8 JSON ({exc.__class__.__name__})") from None
    except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:
        raise DataError(f"{path}: expected {{symbol: {{amount_step, price_tick, min_amount, min_cost, "
                        f"max_amount}}}} with decimal strings ({exc.__class__.__name__}: {str(exc)[:60]})") from None
    return markets


def _parse_markets(raw: dict, symbols: list[str]) -> dict[str, Market]:
    if not isinstance(raw, dict):
        raise TypeError(f"got a {type(raw).__name__}")

    def dec(v: str | None) -> Decimal | None:
        if v is None:
            return None
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise TypeError(f"expected a decimal string, got {json.dumps(v)[:30]}")
        d = Decimal(v).normalize()
        if not d.is_finite() or d < 0:
            raise ValueError(f"expected a decimal >= 0, got {v!r:.30}")
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
        needs_pyarrow: list[Path] = []
        for tf, folder in sorted(sources.items()):
            files = sorted(folder.glob("*.csv")) + sorted(folder.glob("*.csv.gz"))
            per_tf = {}
            for f in files:
                sym = _symbol_from_file(f)
                if symbols is None or sym in symbols:
                    per_tf[sym] = load_csv(f, timeframe_ms(tf))
            per_tf.update(self._freqtrade_files(folder, tf, symbols, set(per_tf), needs_pyarrow))
            if per_tf:
                self.data[tf] = per_tf
        if not self.data:
            from core.exchange.freqtrade_data import pyarrow_hint

            raise DataError(f"{self.data_dir}: " + (pyarrow_hint(needs_pyarrow) if needs_pyarrow else
                            "no OHLCV files (expected <tf>/BASE_QUOTE.csv, BASE_QUOTE.csv or freqtrade's "
                            f"BASE_QUOTE-{timeframe}.json)"))
        self.base_timeframe = min(self.data, key=timeframe_ms)
        # tickers come from the base timeframe; its arrays become views of one flat copy
        self._tickers = DayTickers(self.data[self.base_timeframe], timeframe_ms(self.base_timeframe))
        self._ts_index = {tf: {s: a[:, 0] for s, a in d.items()} for tf, d in self.data.items()}
        all_syms = sorted({s for d in self.data.values() for s in d})
        mfile = next((p for p in (self.data_dir / "markets.json", self.data_dir.parent / "markets.json")
                      if p.exists()), None)
        self.markets_source = str(mfile) if mfile else None
        self._markets = _markets_from_file(mfile, all_syms) if mfile else {
            s: Market(s, *s.split("/")) for s in all_syms}

    @staticmethod
    def _freqtrade_files(folder: Path, tf: str, symbols: list[str] | None, have: set[str],
                         needs_pyarrow: list[Path]) -> dict[str, np.ndarray]:
        """freqtrade's BASE_QUOTE-<tf>.json[.gz] for pairs without a CSV; feather/parquet reported."""
        from core.exchange import freqtrade_data

        found, unreadable = freqtrade_data.find(folder, tf)
        needs_pyarrow.extend(unreadable)
        if unreadable and (found or have):
            log.warning("%s: %s", folder, freqtrade_data.pyarrow_hint(unreadable))
        return {sym: load_freqtrade(f, timeframe_ms(tf)) for sym, f in found.items()
                if sym not in have and (symbols is None or sym in symbols)}

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
        return self._tickers.at(self.clock.now_ms(), symbols)

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
