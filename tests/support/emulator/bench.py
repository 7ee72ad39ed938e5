"""``python -m tests.support.emulator.bench``: how fast the emulator answers a full scan.

Real ccxt, 126 pairs x (1h, 4h): a backfill round (limit 500), a steady round (limit 3, after
one hour of market time), one fetch_tickers, each with 0 and 80 ms injected latency and
bounded concurrency. Prints wall times and the emulator's own handler time (its CPU cost).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import ccxt.async_support as ccxt

from tests.support.emulator import CCXT_OPTIONS, DEFAULT_START_MS, redirect_ccxt, running_emulator

H = 3_600_000


async def _round(ex: ccxt.binance, symbols: list[str], limit: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(symbol: str, tf: str) -> None:
        async with sem:
            await ex.fetch_ohlcv(symbol, tf, limit=limit)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s, tf) for s in symbols for tf in ("1h", "4h")))
    return time.perf_counter() - t0


async def _bench(url: str, emu, latency_ms: float, concurrency: int, repeats: int) -> dict[str, float]:
    ex = ccxt.binance({"enableRateLimit": False, "options": dict(CCXT_OPTIONS)})
    redirect_ccxt(ex, url)
    try:
        symbols = [m["symbol"] for m in (await ex.load_markets()).values()]
        emu.faults.latency_s = latency_ms / 1000
        out: dict[str, list[float]] = {"backfill_s": [], "steady_s": [], "tickers_s": [], "busy_ms_per_req": []}
        for _ in range(repeats):
            n0, b0 = len(emu.requests), emu.busy_s
            out["backfill_s"].append(await _round(ex, symbols, 500, concurrency))
            emu.advance(H)
            out["steady_s"].append(await _round(ex, symbols, 3, concurrency))
            t0 = time.perf_counter()
            await ex.fetch_tickers()
            out["tickers_s"].append(time.perf_counter() - t0)
            out["busy_ms_per_req"].append(1000 * (emu.busy_s - b0) / (len(emu.requests) - n0))
        return {k: statistics.median(v) for k, v in out.items()} | {"pairs": len(symbols)}
    finally:
        emu.faults.latency_s = 0.0
        await ex.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with running_emulator(start_ms=DEFAULT_START_MS, weight_limit=10**9) as emu:  # measuring speed, not politeness
        for latency in (0.0, 80.0):
            r = asyncio.run(_bench(emu.url, emu, latency, args.concurrency, args.repeats))
            print(f"latency {latency:>4.0f} ms, {r['pairs']:.0f} pairs x 2 tf, concurrency {args.concurrency}: "
                  f"backfill {r['backfill_s']:.3f} s, steady {r['steady_s']:.3f} s, "
                  f"fetch_tickers {1000 * r['tickers_s']:.1f} ms, emulator handler time "
                  f"{r['busy_ms_per_req']:.3f} ms/request (medians of {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
