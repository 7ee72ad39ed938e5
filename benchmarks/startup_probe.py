"""Child process for bench_scanner.py: start the interpreter, build the scanner over real
candles and scan once; prints one JSON line with the wall-clock epoch of the result and the
phase times. Run by the benchmark with NUMBA_CACHE_DIR pointing at a warm or an empty cache.

    .venv/bin/python benchmarks/startup_probe.py [--pairs 126] [--candles 500]
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OHLCV_1H = ROOT.parent / "shared" / "data" / "ohlcv" / "1h"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=126)
    ap.add_argument("--candles", type=int, default=500)
    args = ap.parse_args()

    from core.scan.candles import CandleStore
    from core.config import config_from_dict
    from core.exchange.replay import load_csv
    from core.scan.scanner import Scanner

    t_import = time.perf_counter()
    cfg = config_from_dict({"scanner": {"candles": args.candles}})
    files = sorted(OHLCV_1H.glob("*.csv"))[: args.pairs]
    data = {f.stem.replace("_", "/"): load_csv(f, 3_600_000) for f in files}
    end = int(min(a[-1, 0] for a in data.values())) + 3_600_000
    store = CandleStore(cfg.scanner.timeframes, args.candles)
    store.set_symbols(list(data))
    for sym, rows in data.items():
        store.append(sym, "1h", rows[rows[:, 0] + 3_600_000 <= end][-args.candles:])
    t_data = time.perf_counter()
    scanner = Scanner(cfg)
    result = scanner.scan(store, end)
    t_scan = time.perf_counter()
    print(json.dumps({"result_epoch": time.time(), "imports_s": t_import - T0, "data_s": t_data - t_import,
                      "first_scan_s": t_scan - t_data, "pairs_scanned": result.pairs_scanned,
                      "opportunities": len(result.opportunities)}))


if __name__ == "__main__":
    main()
