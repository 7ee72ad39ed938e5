"""Real recorded candles (../shared/data/ohlcv) for tests, loaded once per process."""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.scan.candles import FIELDS, CandleStore, CandleView
from core.timeframes import TIMEFRAME_MS
from core.exchange.replay import load_csv
from core.scan.scanner import Indicators
from strategies.base import ScanInput

OHLCV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ohlcv"
HOUR = TIMEFRAME_MS["1h"]


def symbols(tf: str = "1h") -> list[str]:
    return sorted(p.name.split(".")[0].replace("_", "/") for p in (OHLCV / tf).glob("*.csv"))


@lru_cache(maxsize=None)
def candles(symbol: str, tf: str = "1h") -> np.ndarray:
    """(n, 6) float64 [ts, o, h, l, c, v] of one real pair; do not modify (shared)."""
    arr = load_csv(OHLCV / tf / f"{symbol.replace('/', '_')}.csv", TIMEFRAME_MS[tf])
    arr.setflags(write=False)
    return arr


def closed_before(symbol: str, end_ms: int, tf: str = "1h") -> np.ndarray:
    """The candles of ``symbol`` that had closed at ``end_ms`` (what an exchange would return then)."""
    arr = candles(symbol, tf)
    return arr[: np.searchsorted(arr[:, 0] + TIMEFRAME_MS[tf], end_ms, side="right")]


def store_at(end_ms: int, pairs: Iterable[str] | None = None, timeframes: tuple[str, ...] = ("1h", "4h"),
             capacity: int = 500, backfill: int | None = None) -> CandleStore:
    """A store as the first cycle at ``end_ms`` leaves it: the last ``backfill`` (default
    ``capacity``) closed 1h candles of each pair appended in one go."""
    pairs = symbols() if pairs is None else list(pairs)
    store = CandleStore(list(timeframes), capacity)
    store.set_symbols(pairs)
    take = capacity if backfill is None else backfill
    for sym in pairs:
        rows = closed_before(sym, end_ms)
        if len(rows):
            store.append(sym, "1h", rows[-take:])
    return store


def scan_input(store: CandleStore) -> ScanInput:
    """What the strategies see in a 1h + 4h scan of ``store``."""
    sv, hv = store.view("1h"), store.view("4h")
    return ScanInput(sv.symbols, Indicators(sv), Indicators(hv))


def series(view: CandleView, i: int) -> dict[str, np.ndarray]:
    """Row ``i``'s held candles per field (oldest first), e.g. to recompute with TA-Lib."""
    n = int(view.counts[i])
    return {f: np.ascontiguousarray(getattr(view, f)[i, view.capacity - n:]) for f in FIELDS}
