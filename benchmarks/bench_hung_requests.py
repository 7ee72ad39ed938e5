"""How many pairs a scan loses when a share of exchange requests hang (issue 15 item 8).

Real ccxt over loopback against the Binance emulator (tests/support/emulator) with its
``timeout_rate`` fault: that share of requests is held ``hang_s`` seconds, longer than the
client's ``exchange.timeout_s``. Runs a backfill scan and a steady scan (one hour later) through
the same ``ScanPipeline`` the engine uses and prints pairs skipped, wall time, requests sent and
hedges (second requests for a slow reply). The faults start after the markets are loaded.

    .venv/bin/python -m benchmarks.bench_hung_requests --hang-rate 0.1 --timeout 5
"""
from __future__ import annotations

import argparse
import asyncio
import time

from core.config import config_from_dict
from core.exchange.ccxt_gateway import CcxtGateway
from core.scan.pipeline import ScanPipeline
from core.secrets import Secrets
from tests.support.emulator import DEFAULT_START_MS, running_emulator
from tests.support.emulator.client import EmulatorClock

H = 3_600_000


async def _scan(emu, args) -> list[dict]:
    cfg = config_from_dict({"exchange": {"api_url": emu.url, "timeout_s": args.timeout},
                            "universe": {"min_quote_volume": 0}})
    clock = EmulatorClock(emu)
    gw = CcxtGateway(cfg, Secrets(), clock)
    if args.no_hedge:
        gw.guard.hedge_min_s = None
    out = []
    try:
        await gw.load_markets()
        emu.faults.timeout_rate, emu.faults.hang_s = args.hang_rate, args.hang
        pipe = ScanPipeline(cfg, gw, clock)
        for name in ["backfill"] + [f"steady {i + 1}" for i in range(args.steady)]:
            n0 = len(emu.requests)
            h0 = getattr(gw.guard, "hedged", 0)
            t0 = time.perf_counter()
            res = await pipe.scan()
            out.append({"scan": name, "pairs": res.pairs_scanned + res.pairs_skipped,
                        "skipped": pipe.marketdata.last.skipped,  # data not fetched (not: too little history)
                        "wall_s": time.perf_counter() - t0, "requests": len(emu.requests) - n0,
                        "hung": sum(1 for r in list(emu.requests)[n0:] if r.fault == "timeout"),
                        "hedged": getattr(gw.guard, "hedged", 0) - h0,
                        "breaker_opened": gw.guard.breaker("market").opened,
                        "why": sorted({why for why in res.skipped.values()
                                       if "history" not in why and "quarantine" not in why})[:3]})
            emu.advance(H)
    finally:
        emu.faults.clear()
        await gw.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hang-rate", type=float, default=0.1, help="share of requests that hang")
    p.add_argument("--hang", type=float, default=30.0, help="seconds a hung request is held")
    p.add_argument("--timeout", type=float, default=5.0, help="exchange.timeout_s")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steady", type=int, default=3, help="steady scans after the backfill (one hour apart)")
    p.add_argument("--no-hedge", action="store_true", help="turn hedged reads off (the behaviour before issue 15)")
    args = p.parse_args()
    with running_emulator(start_ms=DEFAULT_START_MS, seed=args.seed) as emu:
        for r in asyncio.run(_scan(emu, args)):
            print(f"{r['scan']:>9}: {r['skipped']:3d} of {r['pairs']} pairs skipped "
                  f"({100 * r['skipped'] / max(r['pairs'], 1):.0f} %), {r['wall_s']:.1f} s, {r['requests']} requests "
                  f"({r['hung']} hung, {r['hedged']} hedged), market breaker opened {r['breaker_opened']}x "
                  f"[hang rate {args.hang_rate:g}, hang {args.hang:g} s, timeout_s {args.timeout:g}, "
                  f"seed {args.seed}{', no hedging' if args.no_hedge else ''}]")
            for why in r["why"]:
                print(f"          e.g. {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
