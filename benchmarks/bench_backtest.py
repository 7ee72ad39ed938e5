"""Backtest speed and memory: every pair of ../shared/data/ohlcv/1h, end to end through the CLI.

Runs ``python -m core backtest --data ../shared/data/ohlcv/1h --json`` as a child process, so the
figures include interpreter start, imports, loading the CSVs, the signal precomputation, the
engine's 5,000+ cycles and the report. Prints per run: wall time, the child's CPU time (user +
sys, steadier than wall time on a shared machine), candles per second and the child's peak RSS
(``wait4`` rusage), then medians and the ratios to freqtrade's figures for the same backtest
(DESIGN.md: 26.8 s wall, 1,075 MiB peak RSS).

Warm cache: the numba kernels are already compiled in the cache (``pitrader warmup`` or an
earlier run). Cold cache: a fresh, empty ``NUMBA_CACHE_DIR``, so every kernel compiles first.

    .venv/bin/python benchmarks/bench_backtest.py [--runs 3] [--no-cold] [--data DIR]
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ohlcv" / "1h"
FREQTRADE_S, FREQTRADE_MIB = 26.8, 1075.0


def run_once(data: Path, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "core", "backtest", "--data", str(data), "--json"]
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_f, stderr=err_f)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS, CPU)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0), err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0 or not out.strip():
        raise SystemExit(f"backtest failed (exit {proc.returncode}):\n{err[-2000:]}")
    doc = json.loads(out)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "candles": doc["candles"], "pairs": doc["pairs"], "cycles": doc["cycles"], "inner": doc["duration_s"],
            "trades": doc["trades"]}


def show(label: str, r: dict) -> None:
    print(f"{label:>10}: wall {r['wall']:6.2f} s | cpu {r['cpu']:6.2f} s | in-process {r['inner']:6.2f} s | "
          f"{r['candles'] / r['wall']:>9,.0f} candles/s | peak RSS {r['rss_mib']:6.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="warm runs (median reported)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache run")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    env = dict(os.environ)
    print(f"backtest of {args.data} via `python -m core backtest --json` (default config, verify 2 cycles)")
    cold = None
    if not args.no_cold:
        with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
            cold = run_once(args.data, {**env, "NUMBA_CACHE_DIR": cache})
        show("cold", cold)
    run_once(args.data, env)  # make sure the regular cache is warm
    warm = []
    for i in range(args.runs):
        warm.append(run_once(args.data, env))
        show(f"warm {i + 1}", warm[-1])
    med = {k: statistics.median(r[k] for r in warm) for k in ("wall", "cpu", "rss_mib", "inner")}
    r0 = warm[0]
    print(f"\n{r0['pairs']} pairs, {r0['candles']:,} candles, {r0['cycles']:,} engine cycles, {r0['trades']} trades")
    print(f"warm median: {med['wall']:.2f} s wall ({r0['candles'] / med['wall']:,.0f} candles/s), "
          f"{med['cpu']:.2f} s cpu, peak RSS {med['rss_mib']:.0f} MiB; target < 15 s")
    if cold:
        print(f"cold cache:  {cold['wall']:.2f} s wall, {cold['cpu']:.2f} s cpu (numba compiles every kernel)")
    print(f"vs freqtrade ({FREQTRADE_S} s, {FREQTRADE_MIB:,.0f} MiB): {FREQTRADE_S / med['wall']:.1f}x faster, "
          f"{FREQTRADE_MIB / med['rss_mib']:.1f}x less memory")


if __name__ == "__main__":
    main()
