"""Sweep throughput (trials per minute) on every pair of ../shared/data/ohlcv/1h: local workers vs a Dask cluster.

A trial is one full backtest of the 126 pairs with parameters from research/spaces/example.json
(momentum, halts lifted: it trades throughout). Sweeps are deterministic, so every measurement
below runs the very same trials (same seed, each run in a fresh study):

- ``local x1``: one spawned worker process: the reference (no parallelism);
- ``local xN``: ``--jobs`` worker processes (``ProcessPoolExecutor``);
- ``cluster xN``: a ``distributed.LocalCluster`` of ``--jobs`` worker processes (one thread each),
  the candle files scattered to the workers once.

Each pool first runs one warm-up round with another seed (process start, imports, numba cache,
the first parse of the CSVs; reported separately), then ``--runs`` sweeps of ``--trials``
trials. Printed: trials per minute per run, the median, and the ratio to ``local x1`` (the
speed-up; ``--jobs`` would be perfect scaling).

    .venv/bin/python benchmarks/bench_sweep.py [--trials 4] [--runs 2] [--jobs 2] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "ohlcv" / "1h"
SPACE = ROOT / "research" / "spaces" / "example.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    from core.config import Config, to_dict
    from core.research.space import load_space
    from core.research.sweep import SweepSpec, Workers, run_sweep

    base = to_dict(Config())
    space = load_space(SPACE, base)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    spec = SweepSpec(data=args.data, space=space, base=base, objective="sharpe", trials=args.trials,
                     study_path=tmp / "unused.db", batch=args.trials, seed=1)
    n_pairs = len(list(args.data.glob("*.csv")))
    print(f"data: {args.data} ({n_pairs} pairs), space: {SPACE.name}, the same {args.trials} trials per run, "
          f"{args.runs} runs per setting")
    medians: dict[str, float] = {}
    values: dict[str, list] = {}

    def measure(name: str, workers) -> None:
        t0 = time.perf_counter()
        run_sweep(replace(spec, trials=workers.size, batch=workers.size, seed=10_000,
                          study_path=tmp / f"warm-{name.replace(' ', '-')}.db"), workers)
        warm = time.perf_counter() - t0
        rates = []
        for run in range(args.runs):
            t0 = time.perf_counter()
            res = run_sweep(replace(spec, study_path=tmp / f"{name.replace(' ', '-')}-{run}.db"), workers)
            wall = time.perf_counter() - t0
            rates.append(len(res.rows) / wall * 60)
            values[name] = [(r.index, r.value) for r in res.rows]
            trades = sum(r.metrics.get("trades") or 0 for r in res.rows)
            print(f"  {name} run {run + 1}: {len(res.rows)} trials ({trades} trades) in {wall:.1f} s = "
                  f"{rates[-1]:.2f} trials/min")
        medians[name] = statistics.median(rates)
        ratio = f", x{medians[name] / medians['local x1']:.2f} of local x1" if name != "local x1" else ""
        print(f"{name}: median {medians[name]:.2f} trials/min{ratio} (warm-up round {warm:.1f} s)")

    for jobs in (1, args.jobs):
        workers = Workers(args.data, "1h", jobs=jobs)
        try:
            measure(f"local x{jobs}", workers)
        finally:
            workers.close()
    from distributed import LocalCluster

    with LocalCluster(n_workers=args.jobs, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"NUMBA_NUM_THREADS": "1"}) as cluster:
        t0 = time.perf_counter()
        workers = Workers(args.data, "1h", cluster=cluster.scheduler_address)
        print(f"cluster: connected and data scattered in {time.perf_counter() - t0:.1f} s")
        try:
            measure(f"cluster x{args.jobs}", workers)
        finally:
            workers.close()
    same = len({json.dumps(v) for v in values.values()}) == 1
    print(f"same trial values in every setting: {same}")
    print(json.dumps({k: round(v, 2) for k, v in medians.items()}))


if __name__ == "__main__":
    main()
