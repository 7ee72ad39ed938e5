"""Scanner benchmark: per-cycle compute and process start-up to the first scan result.

1. Cycle compute (target < 20 ms): 150 pairs x 500 candles x 2 timeframes (1h fetched, 4h
   built by the store), default config: data-quality checks, every indicator the three
   strategies and the 4h confirmation use, the three strategies, ranking. The 150 rows are the
   126 real pairs of ../shared/data/ohlcv/1h plus 24 more made of real candles of the longest
   pairs taken 3000 h earlier and shifted forward in time (real prices, relabelled times).
   Each cycle first appends one new 1h candle per pair (timed separately), then scans; medians
   over --cycles cycles. A breakdown splits the scan into data checks, indicators and
   strategies + ranking.
2. Start-up: a fresh interpreter (benchmarks/startup_probe.py) imports pitrader, loads 126
   pairs x 500 1h candles from CSV, builds the scanner and scans once. Measured from just
   before spawning the process to the moment the child has the result: with a warm numba
   cache (target < 3 s; median of --startup-runs) and with a cold one (empty NUMBA_CACHE_DIR).

    .venv/bin/python benchmarks/bench_scanner.py [--cycles 300] [--startup-runs 5] [--cold-runs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.scan.candles import CandleStore  # noqa: E402
from core.config import config_from_dict  # noqa: E402
from core.exchange.replay import load_csv  # noqa: E402
from core.scan.scanner import Indicators, Scanner, data_problems  # noqa: E402
from strategies.base import ScanInput  # noqa: E402

OHLCV_1H = ROOT.parent / "shared" / "data" / "ohlcv" / "1h"
HOUR = 3_600_000
PAIRS, CANDLES, SHIFT_H = 150, 500, 3000


def real_rows() -> dict[str, np.ndarray]:
    data = {f.stem.replace("_", "/"): load_csv(f, HOUR) for f in sorted(OHLCV_1H.glob("*.csv"))}
    end = max(int(a[-1, 0]) for a in data.values())
    longest = sorted(data, key=lambda s: -len(data[s]))[: PAIRS - len(data)]
    for sym in longest:
        a = data[sym].copy()
        a = a[a[:, 0] <= end - SHIFT_H * HOUR]
        a[:, 0] += SHIFT_H * HOUR
        data[sym.replace("/", "-EARLY/")] = a
    return data


def cycle_benchmark(cycles: int) -> dict[str, float]:
    cfg = config_from_dict({"scanner": {"candles": CANDLES}})
    data = real_rows()
    end = max(int(a[-1, 0]) for a in data.values()) + HOUR
    start = end - cycles * HOUR
    store = CandleStore(cfg.scanner.timeframes, CANDLES)
    store.set_symbols(list(data))
    cursor = {}
    for sym, rows in data.items():  # backfill 4 x 500 1h candles: 500 1h and 500 4h held
        k = int(np.searchsorted(rows[:, 0] + HOUR, start, side="right"))
        store.append(sym, "1h", rows[max(0, k - 4 * CANDLES):k])
        cursor[sym] = k
    scanner = Scanner(cfg)
    scanner.scan(store, start)  # compile / load kernels outside the timing
    append_t, scan_t, opps = [], [], []
    for c in range(cycles):
        now = start + (c + 1) * HOUR
        t0 = time.perf_counter()
        for sym, rows in data.items():
            k = cursor[sym]
            if k < len(rows) and rows[k, 0] + HOUR <= now:
                store.append(sym, "1h", rows[k:k + 1])
                cursor[sym] = k + 1
        t1 = time.perf_counter()
        result = scanner.scan(store, now)
        t2 = time.perf_counter()
        append_t.append(t1 - t0)
        scan_t.append(t2 - t1)
        opps.append(len(result.opportunities))

    # breakdown on the final state, medians of repeated runs
    sv, hv = store.view("1h"), store.view("4h")
    sc = cfg.scanner
    quality, indicators, strategies = [], [], []
    for _ in range(max(20, cycles // 5)):
        t0 = time.perf_counter()
        data_problems(sv, scanner.need_signal, now, sc.quarantine_gap_candles, sc.quarantine_jump_ratio)
        data_problems(hv, scanner.need_higher, now, sc.quarantine_gap_candles, sc.quarantine_jump_ratio ** 2)
        t1 = time.perf_counter()
        inp = ScanInput(sv.symbols, Indicators(sv), Indicators(hv))
        ok = np.ones(len(sv.symbols), dtype=bool)
        scanner.rank(inp, ok)  # first pass: computes the indicators
        t2 = time.perf_counter()
        scanner.rank(inp, ok)  # second pass: indicators cached, strategies + ranking only
        t3 = time.perf_counter()
        quality.append(t1 - t0)
        strategies.append(t3 - t2)
        indicators.append((t2 - t1) - (t3 - t2))
    return {"pairs": len(data), "held_1h": int(np.median(sv.counts)), "held_4h": int(np.median(hv.counts)),
            "append_ms": statistics.median(append_t) * 1e3, "scan_ms": statistics.median(scan_t) * 1e3,
            "scan_p90_ms": float(np.percentile(scan_t, 90)) * 1e3, "opportunities": statistics.median(opps),
            "quality_ms": statistics.median(quality) * 1e3, "indicators_ms": statistics.median(indicators) * 1e3,
            "strategies_ms": statistics.median(strategies) * 1e3}


def startup_once(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t0 = time.time()
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup_probe.py")], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    doc["to_result_s"] = doc["result_epoch"] - t0
    return doc


def startup_benchmark(warm_runs: int, cold_runs: int) -> tuple[list[dict], list[dict]]:
    with tempfile.TemporaryDirectory(prefix="numba-warm-") as warm:
        startup_once(warm)  # fills the cache
        warm_docs = [startup_once(warm) for _ in range(warm_runs)]
    cold_docs = []
    for _ in range(cold_runs):
        with tempfile.TemporaryDirectory(prefix="numba-cold-") as cold:
            cold_docs.append(startup_once(cold))
    return warm_docs, cold_docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--startup-runs", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=2)
    args = ap.parse_args()

    r = cycle_benchmark(args.cycles)
    print(f"scanner cycle: {r['pairs']} pairs, held per pair (median) {r['held_1h']} x 1h + {r['held_4h']} x 4h, "
          f"{args.cycles} cycles")
    print(f"  scan (checks + indicators + 3 strategies + ranking): median {r['scan_ms']:.2f} ms, "
          f"p90 {r['scan_p90_ms']:.2f} ms  -> {r['scan_ms'] / 20:.2f} x the 20 ms target")
    print(f"    data checks {r['quality_ms']:.2f} ms | indicators {r['indicators_ms']:.2f} ms | "
          f"strategies + ranking {r['strategies_ms']:.2f} ms")
    print(f"  append 1 new 1h candle per pair (+4h aggregation): median {r['append_ms']:.2f} ms per cycle")
    print(f"  opportunities per cycle (median): {r['opportunities']:.0f}")

    warm, cold = startup_benchmark(args.startup_runs, args.cold_runs)

    def show(label: str, docs: list[dict], target: str) -> None:
        med = lambda k: statistics.median(d[k] for d in docs)  # noqa: E731
        print(f"startup, {label} cache ({len(docs)} runs): process start -> first scan result median "
              f"{med('to_result_s'):.2f} s{target}")
        print(f"    imports {med('imports_s'):.2f} s | load 126 CSVs {med('data_s'):.2f} s | "
              f"first scan {med('first_scan_s'):.2f} s | {docs[0]['pairs_scanned']} pairs scanned, "
              f"{docs[0]['opportunities']} opportunities")

    show("warm", warm, f"  -> {statistics.median(d['to_result_s'] for d in warm) / 3:.2f} x the 3 s target")
    show("cold", cold, f"  ({statistics.median(d['to_result_s'] for d in cold) / statistics.median(d['to_result_s'] for d in warm):.1f} x warm)")


if __name__ == "__main__":
    main()
