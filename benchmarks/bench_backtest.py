"""Backtest speed and memory: every pair of ../shared/data/ohlcv/1h, end to end through the CLI.

Three runs of the same data without the random baselines (``--baseline-seeds 0``), because they
measure different things:

- ``default``: the default config (its caps and drawdown policy; on the shared data no halt fires,
  so it trades throughout, ~255 trades).
- ``trading``: the same with ``risk.max_drawdown_pct`` and ``risk.max_daily_loss_pct`` at 1.0
  (halts lifted), so the engine trades throughout on any data with the default strategies: it
  measures the store and executor path too (a fill, an order and a position written per trade).
- ``trading-all``: halts lifted and all three strategies enabled (mean_reversion, momentum,
  trend_following): issue 14's workload, the one to compare with freqtrade, which trades
  throughout as well. Goal: <= 5 s and <= 250 MiB peak.

A fourth run, ``seeds``, is the default config with ``--baseline-seeds 20``: the backtest plus 20
seeds of each random baseline (random pairs and random timing, 40 engine runs in worker
processes, one per core); it prints its median wall time and the ratio to the plain ``default``
run measured here (goal: 20 seeds in under a minute on 2 cores).

Each runs ``python -m core backtest --data DIR --json`` as a child process, so the figures include
interpreter start, imports, loading the CSVs, the signal precomputation, the reference check of 2
cycles against the real scanner (``--verify 2``), the engine's 5,000+ cycles and the report. Per
run: wall time, the child's CPU time (user + sys, steadier than wall time on a shared machine),
candles per second and the child's peak RSS (``wait4`` rusage); then medians and the ratios to
freqtrade's figures (DESIGN.md: 26.8 s wall, 1,075 MiB peak RSS).

Warm cache: the numba kernels are already compiled in the cache (``pitrader warmup`` or an
earlier run). Cold cache: a fresh, empty ``NUMBA_CACHE_DIR``, so every kernel compiles first.

    .venv/bin/python benchmarks/bench_backtest.py [--runs 3] [--no-cold] [--data DIR]
        [--only default|trading|trading-all|seeds] [--seeds 20]
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
NO_HALTS = {"risk": {"max_drawdown_pct": 1.0, "max_daily_loss_pct": 1.0}}
ALL_STRATEGIES = {"strategies": {"enabled": ["mean_reversion", "momentum", "trend_following"]}}


def trading_config(folder: Path, name: str = "trading", *changes: dict) -> Path:
    """The project's config (or the defaults) with the halts lifted (and ``changes``), written to ``folder``."""
    base = ROOT / "config.json"
    doc = json.loads(base.read_text()) if base.exists() else {}
    for change in (NO_HALTS, *changes):
        for section, values in change.items():
            doc.setdefault(section, {}).update(values)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def run_once(data: Path, env: dict[str, str], config: Path | None = None, seeds: int = 0) -> dict:
    cmd = [sys.executable, "-m", "core"] + (["--config", str(config)] if config else []) + [
        "backtest", "--data", str(data), "--json", "--baseline-seeds", str(seeds)]
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
            "candles": doc["candles"], "pairs": doc["pairs"], "cycles": doc.get("cycles"), "inner": doc["duration_s"],
            "trades": doc["trades"]}


def show(label: str, r: dict) -> None:
    print(f"{label:>18}: wall {r['wall']:6.2f} s | cpu {r['cpu']:6.2f} s | in-process {r['inner']:6.2f} s | "
          f"{r['candles'] / r['wall']:>9,.0f} candles/s | peak RSS {r['rss_mib']:6.0f} MiB | {r['trades']} trades")


def measure(name: str, data: Path, env: dict[str, str], runs: int, config: Path | None, seeds: int = 0) -> dict:
    if seeds == 0:
        run_once(data, env, config)  # make sure the regular cache is warm
    warm = []
    for i in range(runs):
        warm.append(run_once(data, env, config, seeds))
        show(f"{name} warm {i + 1}", warm[-1])
    med = {k: statistics.median(r[k] for r in warm) for k in ("wall", "cpu", "rss_mib", "inner")}
    return {**med, "first": warm[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="warm runs of each kind (median reported)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache run")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--only", choices=("default", "trading", "trading-all", "seeds"), help="run one kind only (seeds: also "
                    "the default run, its reference)")
    ap.add_argument("--seeds", type=int, default=20, help="random seeds of each kind in the seeds run")
    args = ap.parse_args()

    env = dict(os.environ)
    print(f"backtest of {args.data} via `python -m core backtest --json` (verify 2 cycles); "
          f"{os.cpu_count()} cores")
    cold = None
    if not args.no_cold and args.only in (None, "default", "seeds"):
        with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
            cold = run_once(args.data, {**env, "NUMBA_CACHE_DIR": cache})
        show("cold (default)", cold)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        kinds = {"default": (None, 0), "trading": (trading_config(Path(tmp)), 0),
                 "trading-all": (trading_config(Path(tmp), "trading-all", ALL_STRATEGIES), 0),
                 "seeds": (None, args.seeds)}
        for name, (config, seeds) in kinds.items():
            if args.only in (None, name) or (args.only == "seeds" and name == "default"):
                results[name] = measure(name, args.data, env, args.runs, config, seeds)
    print()
    for name, med in results.items():
        r0 = med["first"]
        what = {"default": "default config",
                "trading": "halts lifted, trading throughout, default strategies",
                "trading-all": "halts lifted, trading throughout, all three strategies",
                "seeds": f"default config + {args.seeds} seeds x 2 random baselines"}[name]
        print(f"{name:>11}: {r0['pairs']} pairs, {r0['candles']:,} candles, {r0['trades']} trades ({what})")
        print(f"             median {med['wall']:.2f} s wall ({r0['candles'] / med['wall']:,.0f} candles/s), "
              f"{med['cpu']:.2f} s cpu, peak RSS {med['rss_mib']:.0f} MiB")
    if "seeds" in results and "default" in results:
        seeds, plain = results["seeds"], results["default"]
        print(f"backtest + {args.seeds} random seeds (x 2 kinds, {2 * args.seeds} engine runs, "
              f"{os.cpu_count()} cores): median {seeds['wall']:.2f} s wall = {seeds['wall'] / plain['wall']:.1f}x "
              f"the plain backtest ({plain['wall']:.2f} s); {seeds['wall'] - plain['wall']:.2f} s for the seeds; "
              f"goal < 60 s for 20 seeds")
    if cold:
        print(f"cold cache (default): {cold['wall']:.2f} s wall, {cold['cpu']:.2f} s cpu (numba compiles every kernel)")
    for name in ("trading", "trading-all"):
        ref = results.get(name)
        if ref:
            print(f"{name} run vs freqtrade ({FREQTRADE_S} s, {FREQTRADE_MIB:,.0f} MiB, also trading throughout): "
                  f"{FREQTRADE_S / ref['wall']:.1f}x faster, {FREQTRADE_MIB / ref['rss_mib']:.1f}x less memory; "
                  f"goal <= 5 s and <= 250 MiB")


if __name__ == "__main__":
    main()
