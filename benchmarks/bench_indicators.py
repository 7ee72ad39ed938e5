"""Full indicator set, all pairs in one 2-D call vs TA-Lib pair by pair (same process).

Data: the 126 real Binance pairs in ../shared/data/ohlcv/1h, last 5000 1h candles each,
left-padded with NaN where a pair has less history (exactly what the candle store feeds
the scanner). Each figure is the median of interleaved repetitions after a warm-up call.

Two ways of holding the results are measured, because allocation is not free here:
  * scan: every output of every pair is kept until the set is done (what a scan needs);
    both sides allocate fresh arrays each time.
  * reuse: pitrader writes into buffers allocated once (``out=``, what the scanner does
    every cycle); TA-Lib gets its best case, each result dropped right after the call.

Run: .venv/bin/python benchmarks/bench_indicators.py [--repeats 7] [--candles 5000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import indicators as ind  # noqa: E402

try:
    import talib
except ImportError:  # pragma: no cover - talib is a test-only dependency
    sys.exit("TA-Lib is needed for the reference timing: pip install TA-Lib (test extra)")

DATA = ROOT.parent / "shared" / "data" / "ohlcv" / "1h"
NAMES = ("sma", "ema", "rsi", "macd", "bbands", "atr", "adx", "stoch", "roc", "obv")


def load_matrix(candles: int) -> dict[str, np.ndarray]:
    files = sorted(DATA.glob("*.csv"))
    if not files:
        sys.exit(f"no CSV files in {DATA}")
    cols = {k: np.full((len(files), candles), np.nan) for k in ("high", "low", "close", "volume")}
    for r, path in enumerate(files):
        rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)[-candles:]
        for k, j in (("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
            cols[k][r, candles - len(rows):] = rows[:, j]
    return cols


def ours(h, l, c, v, out=None):
    o = out or {}
    return (
        ind.sma(c, 20, out=o.get("sma")),
        ind.ema(c, 20, out=o.get("ema")),
        ind.rsi(c, 14, out=o.get("rsi")),
        ind.macd(c, 12, 26, 9, out=o.get("macd")),
        ind.bbands(c, 20, 2.0, 2.0, out=o.get("bbands")),
        ind.atr(h, l, c, 14, out=o.get("atr")),
        ind.adx(h, l, c, 14, out=o.get("adx")),
        ind.stoch(h, l, c, 5, 3, 3, out=o.get("stoch")),
        ind.roc(c, 10, out=o.get("roc")),
        ind.obv(c, v, out=o.get("obv")),
    )


def talib_pair(h, l, c, v):
    return (
        talib.SMA(c, 20),
        talib.EMA(c, 20),
        talib.RSI(c, 14),
        talib.MACD(c, 12, 26, 9),
        talib.BBANDS(c, 20, 2.0, 2.0),
        talib.ATR(h, l, c, 14),
        talib.ADX(h, l, c, 14),
        talib.STOCH(h, l, c, 5, 3, 0, 3, 0),
        talib.ROC(c, 10),
        talib.OBV(c, v),
    )


def talib_keep(h, l, c, v):
    return [talib_pair(h[r], l[r], c[r], v[r]) for r in range(c.shape[0])]


def talib_drop(h, l, c, v):
    for r in range(c.shape[0]):
        talib_pair(h[r], l[r], c[r], v[r])


def per_indicator(h, l, c, v, bufs, repeats: int) -> list[tuple[str, float, float]]:
    """Median ms per indicator: pitrader into buffers vs TA-Lib pair by pair (dropped)."""
    rows = []
    for k, name in enumerate(NAMES):
        def mine(name=name):
            return _one(name, h, l, c, v, bufs)

        def theirs(k=k):
            for r in range(c.shape[0]):
                talib_pair_one(k, h[r], l[r], c[r], v[r])

        mine(), theirs()
        a, b = [], []
        for _ in range(repeats):
            a.append(timed(mine))
            b.append(timed(theirs))
        rows.append((name, statistics.median(a) * 1e3, statistics.median(b) * 1e3))
    return rows


def _one(name, h, l, c, v, bufs):
    args = {"sma": (c, 20), "ema": (c, 20), "rsi": (c, 14), "macd": (c, 12, 26, 9),
            "bbands": (c, 20, 2.0, 2.0), "atr": (h, l, c, 14), "adx": (h, l, c, 14),
            "stoch": (h, l, c, 5, 3, 3), "roc": (c, 10), "obv": (c, v)}[name]
    return getattr(ind, name)(*args, out=bufs[name])


def talib_pair_one(k, h, l, c, v):
    return (
        lambda: talib.SMA(c, 20), lambda: talib.EMA(c, 20), lambda: talib.RSI(c, 14),
        lambda: talib.MACD(c, 12, 26, 9), lambda: talib.BBANDS(c, 20, 2.0, 2.0),
        lambda: talib.ATR(h, l, c, 14), lambda: talib.ADX(h, l, c, 14),
        lambda: talib.STOCH(h, l, c, 5, 3, 0, 3, 0), lambda: talib.ROC(c, 10), lambda: talib.OBV(c, v),
    )[k]()


def buffers(shape) -> dict:
    def arr(k=1):
        return tuple(np.empty(shape) for _ in range(k)) if k > 1 else np.empty(shape)
    return {"sma": arr(), "ema": arr(), "rsi": arr(), "macd": arr(3), "bbands": arr(3),
            "atr": arr(), "adx": arr(), "stoch": arr(2), "roc": arr(), "obv": arr()}


def timed(fn) -> float:
    t = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t
    del result
    return elapsed


def same_values(batch, per_pair) -> bool:
    for k, ours_out in enumerate(batch):
        ours_rows = ours_out if isinstance(ours_out, tuple) else (ours_out,)
        for r, pair in enumerate(per_pair):
            ref = pair[k] if isinstance(pair[k], tuple) else (pair[k],)
            for a, b in zip(ours_rows, ref):
                if not np.array_equal(a[r], b, equal_nan=True):
                    return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--candles", type=int, default=5000)
    args = ap.parse_args()

    m = load_matrix(args.candles)
    h, l, c, v = m["high"], m["low"], m["close"], m["volume"]
    pairs, candles = c.shape
    t = time.perf_counter()
    ind.warmup()
    warm_s = time.perf_counter() - t
    bufs = buffers(c.shape)
    runs = {
        "pitrader scan (fresh outputs, all kept)": lambda: ours(h, l, c, v),
        "TA-Lib    scan (pair by pair, all kept)": lambda: talib_keep(h, l, c, v),
        "pitrader reuse (out= buffers)": lambda: ours(h, l, c, v, bufs),
        "TA-Lib    best (each result dropped)": lambda: talib_drop(h, l, c, v),
    }
    for fn in runs.values():  # warm-up call (caches, allocator)
        fn()
    samples = {name: [] for name in runs}
    try:
        from rich.progress import Progress
        progress = Progress(transient=True, disable=not sys.stdout.isatty())
    except ImportError:  # pragma: no cover
        progress = None
    with progress or _Null() as p:
        task = p.add_task("timing", total=args.repeats) if p else None
        for _ in range(args.repeats):
            for name, fn in runs.items():  # interleaved: background noise hits all alike
                samples[name].append(timed(fn))
            if p:
                p.advance(task)
    med = {name: statistics.median(s) * 1e3 for name, s in samples.items()}
    names = list(runs)
    identical = same_values(ours(h, l, c, v), talib_keep(h, l, c, v))

    print(f"indicator set: {', '.join(NAMES)} (TA-Lib defaults)")
    print(f"data: {pairs} pairs x {candles} 1h candles (NaN-padded), {args.repeats} interleaved repeats")
    print(f"numba warm-up (compile or cache load): {warm_s:.2f} s")
    print(f"values identical to TA-Lib (all pairs, all outputs): {'yes' if identical else 'NO'}")
    print()
    print(f"{'median time':42s} {'ms':>8s}")
    for name in names:
        print(f"{name:42s} {med[name]:8.2f}")
    print()
    r_scan = med[names[1]] / med[names[0]]
    r_reuse = med[names[3]] / med[names[2]]
    print(f"speed-up, scan  (TA-Lib / pitrader): {r_scan:5.2f}x   target >= 2x: {'met' if r_scan >= 2 else 'NOT met'}")
    print(f"speed-up, reuse (TA-Lib / pitrader): {r_reuse:5.2f}x   target >= 2x: {'met' if r_reuse >= 2 else 'NOT met'}")
    print()
    print(f"{'per indicator (median ms)':26s} {'pitrader':>9s} {'TA-Lib':>9s} {'ratio':>7s}")
    for name, a, b in per_indicator(h, l, c, v, bufs, args.repeats):
        print(f"{name:26s} {a:9.2f} {b:9.2f} {b / a:6.2f}x")
    return 0


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
