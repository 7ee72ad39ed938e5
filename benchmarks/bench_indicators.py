"""Full indicator set, all pairs in one 2-D call vs TA-Lib pair by pair (same process).

Data: the 126 real Binance pairs in ../shared/data/ohlcv/1h, the last --candles 1h candles
of each (default 5482, the whole history of the longest pair), left-padded with NaN where a
pair has less history (exactly what the candle store feeds the scanner). Each figure is the
median of interleaved repetitions after a warm-up call, so background noise hits all alike.

pitrader is timed twice: on core.indicators.THREADS threads (one per core by default;
the machine's core count is printed with it) and on one thread (THREADS = 1), so the
parallel figure and what the kernels do on one core are both on record.

Ways of holding the results, because allocation is not free at this size (77 MB of outputs):
  * fresh: every output of every pair is kept until the set is done (what a scan needs);
    pitrader allocates its outputs on each call.
  * out=:  pitrader writes into buffers allocated once (what a caller repeating the same
    shape does).
  TA-Lib is timed keeping all results (like fresh) and dropping each right after the call
  (its best case: the allocator hands back the same memory). The headline ratio is the
  strictest pairing: pitrader fresh vs TA-Lib dropping.

A second, small case (--small candles, default 500: the scanner's window) shows why calls
below core.indicators.PARALLEL_MIN_CELLS stay on the calling thread: it times the serial
path against the thread pool forced on.

Run: .venv/bin/python benchmarks/bench_indicators.py [--repeats 15] [--candles 5482] [--small 500]
"""
from __future__ import annotations

import argparse
import os
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


def on_threads(n: int, fn):
    """fn run with core.indicators.THREADS = n (1: every call on the calling thread)."""
    def run():
        before = ind.THREADS
        ind.THREADS = n
        try:
            return fn()
        finally:
            ind.THREADS = before
    return run


def forced_parallel(fn):
    """fn run with the size threshold off, so even a small call uses the thread pool."""
    def run():
        before = ind.PARALLEL_MIN_CELLS
        ind.PARALLEL_MIN_CELLS = 0
        try:
            return fn()
        finally:
            ind.PARALLEL_MIN_CELLS = before
    return run


def per_indicator(h, l, c, v, bufs, repeats: int) -> list[tuple[str, float, float, float]]:
    """Median ms per indicator: pitrader into buffers (all threads, one thread) vs TA-Lib
    pair by pair (dropped)."""
    rows = []
    for k, name in enumerate(NAMES):
        def mine(name=name):
            return _one(name, h, l, c, v, bufs)

        def theirs(k=k):
            for r in range(c.shape[0]):
                talib_pair_one(k, h[r], l[r], c[r], v[r])

        fns = (mine, on_threads(1, mine), theirs)
        samples = interleaved(fns, repeats)
        rows.append((name, *(statistics.median(s) * 1e3 for s in samples)))
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


def interleaved(fns, repeats: int) -> list[list[float]]:
    """A warm-up call of each, then `repeats` rounds calling each once per round."""
    for fn in fns:
        fn()
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for s, fn in zip(samples, fns):
            s.append(timed(fn))
    return samples


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
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--candles", type=int, default=5482)
    ap.add_argument("--small", type=int, default=500, help="candles of the small (scanner-size) case")
    args = ap.parse_args()

    m = load_matrix(args.candles)
    h, l, c, v = m["high"], m["low"], m["close"], m["volume"]
    pairs, candles = c.shape
    t = time.perf_counter()
    ind.warmup()
    warm_s = time.perf_counter() - t
    threads = ind.THREADS
    bufs = buffers(c.shape)
    runs = {
        f"pitrader {threads} threads, fresh outputs": lambda: ours(h, l, c, v),
        f"pitrader {threads} threads, out= buffers": lambda: ours(h, l, c, v, bufs),
        "pitrader 1 thread,  fresh outputs": on_threads(1, lambda: ours(h, l, c, v)),
        "pitrader 1 thread,  out= buffers": on_threads(1, lambda: ours(h, l, c, v, bufs)),
        "TA-Lib pair by pair, all kept": lambda: talib_keep(h, l, c, v),
        "TA-Lib pair by pair, each dropped": lambda: talib_drop(h, l, c, v),
    }
    med = {name: statistics.median(s) * 1e3 for name, s in zip(runs, interleaved(list(runs.values()), args.repeats))}
    names = list(runs)
    identical = (same_values(ours(h, l, c, v), talib_keep(h, l, c, v))
                 and same_values(on_threads(1, lambda: ours(h, l, c, v))(), talib_keep(h, l, c, v)))

    print(f"indicator set: {', '.join(NAMES)} (TA-Lib defaults)")
    print(f"data: {pairs} pairs x {candles} 1h candles (NaN-padded), {args.repeats} interleaved repeats")
    print(f"machine: {os.cpu_count()} cores, nproc {len(os.sched_getaffinity(0))}; pitrader THREADS = {threads} "
          f"(calling thread + pool); TA-Lib {talib.__version__} (one thread)")
    print(f"numba warm-up (compile or cache load): {warm_s:.2f} s")
    print(f"values identical to TA-Lib (all pairs, all outputs, both thread counts): {'yes' if identical else 'NO'}")
    print()
    print(f"{'median time':42s} {'ms':>8s}")
    for name in names:
        print(f"{name:42s} {med[name]:8.2f}")
    print()
    fresh, reuse, fresh1, reuse1, keep, drop = (med[n] for n in names)
    print("speed-up (TA-Lib / pitrader):")
    for label, a, b in ((f"{threads} threads, fresh vs TA-Lib dropped (strictest)", drop, fresh),
                        (f"{threads} threads, fresh vs TA-Lib kept", keep, fresh),
                        (f"{threads} threads, out= vs TA-Lib dropped", drop, reuse),
                        ("1 thread,  fresh vs TA-Lib dropped", drop, fresh1),
                        ("1 thread,  fresh vs TA-Lib kept", keep, fresh1),
                        ("1 thread,  out= vs TA-Lib dropped", drop, reuse1)):
        r = a / b
        print(f"  {label:52s} {r:5.2f}x   target >= 2x: {'met' if r >= 2 else 'NOT met'}")
    print()
    print(f"{'per indicator, out= (median ms)':32s} {f'{threads} thr':>8s} {'1 thr':>8s} {'TA-Lib':>8s} {'ratio':>7s}")
    for name, a, a1, b in per_indicator(h, l, c, v, bufs, args.repeats):
        print(f"{name:32s} {a:8.2f} {a1:8.2f} {b:8.2f} {b / a:6.2f}x")

    s = {k: np.ascontiguousarray(x[:, -args.small:]) for k, x in m.items()}
    sh, sl, sc, sv = s["high"], s["low"], s["close"], s["volume"]
    sbufs = buffers(sc.shape)
    small = {"serial (the default below the threshold)": lambda: ours(sh, sl, sc, sv, sbufs),
             f"thread pool forced on ({threads} threads)": forced_parallel(lambda: ours(sh, sl, sc, sv, sbufs)),
             "TA-Lib pair by pair, each dropped": lambda: talib_drop(sh, sl, sc, sv)}
    smed = [statistics.median(x) * 1e3 for x in interleaved(list(small.values()), args.repeats * 4)]
    print()
    print(f"small case: {pairs} pairs x {args.small} candles = {sc.size:,} cells "
          f"(threshold PARALLEL_MIN_CELLS = {ind.PARALLEL_MIN_CELLS:,}), out= buffers")
    for name, ms in zip(small, smed):
        print(f"  {name:42s} {ms:8.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
