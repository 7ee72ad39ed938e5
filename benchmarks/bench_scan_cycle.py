"""Scan-cycle data refresh against the loopback emulator: all 126 real pairs, 1h + 4h.

The emulator runs in its own process (its CPU does not count against the client) with 80 ms
injected latency per request. Per run: a fresh gateway + candle store, one backfill cycle,
one cycle with nothing new (no candle closed since), then steady cycles each right after an
hourly close (one new 1h candle per pair). Prints medians over the runs, the request counts,
and the peak request weight (ours and the emulator's count) against the budget.

    .venv/bin/python benchmarks/bench_scan_cycle.py [--runs 3] [--latency-ms 80] [--concurrency N]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOUR = 3_600_000
START_MS = 1_625_097_600_000  # 2021-07-01 00:00 UTC: all 126 recorded pairs are listed


def _serve(conn, latency_s: float) -> None:
    """Child process: run the emulator, obey ("advance", ms) / ("stats",) / ("stop",) messages."""
    from tests.support.emulator import running_emulator

    with running_emulator(start_ms=START_MS) as emu:
        emu.faults.latency_s = latency_s
        conn.send((emu.url, emu.symbols, emu.now_ms))
        while True:
            msg = conn.recv()
            if msg[0] == "advance":
                emu.advance(msg[1])
                conn.send(emu.now_ms)
            elif msg[0] == "stats":
                conn.send({"max_weight_1m": emu.max_weight_1m, "used_now": emu.weight_used,
                           "requests": emu.request_count(),
                           "klines": emu.request_count("/api/v3/klines"), "status": sorted(
                               {r.status for r in list(emu.requests)})})
            else:
                conn.send(None)
                return


class EmulatorClock:
    """Market time as the emulator has it (advanced by messages), flowing between them."""

    def __init__(self, now_ms: int) -> None:
        self.base, self.t0 = now_ms, time.monotonic()

    def set(self, now_ms: int) -> None:
        self.base, self.t0 = now_ms, time.monotonic()

    def now_ms(self) -> int:
        return self.base + int((time.monotonic() - self.t0) * 1000)

    async def sleep(self, s: float) -> None:
        await asyncio.sleep(s)


async def one_run(url: str, symbols: list[str], now_ms: int, conn, concurrency: int, steady: int) -> dict:
    from core.scan.candles import CandleStore
    from core.exchange.ccxt_gateway import CcxtGateway
    from core.config import config_from_dict
    from core.secrets import Secrets
    from core.scan.marketdata import MarketData

    cfg = config_from_dict({"exchange": {"api_url": url, "max_concurrency": concurrency}})
    clock = EmulatorClock(now_ms)
    gw = CcxtGateway(cfg, Secrets(), clock)
    store = CandleStore(cfg.scanner.timeframes, cfg.scanner.candles)
    md = MarketData(gw, store, cfg, clock)
    out: dict = {}
    try:
        t = time.perf_counter()
        markets = await gw.load_markets()
        out["markets_s"] = time.perf_counter() - t
        syms = [s for s in (m.replace("USDT", "/USDT") for m in symbols) if s in markets]
        store.set_symbols(syms)
        t = time.perf_counter()
        skipped = await md.refresh(syms)
        out["backfill_s"] = time.perf_counter() - t
        out["backfill_requests"], out["backfill_candles"], out["pairs"] = md.last.requests, md.last.candles, len(syms)
        out["skipped"] = len(skipped)
        t = time.perf_counter()
        await md.refresh(syms)
        out["idle_s"], out["idle_requests"] = time.perf_counter() - t, md.last.requests
        times, reqs = [], []
        for _ in range(steady):
            conn.send(("advance", HOUR))
            clock.set(conn.recv())
            t = time.perf_counter()
            skipped = await md.refresh(syms)
            times.append(time.perf_counter() - t)
            reqs.append(md.last.requests)
            out["skipped"] = max(out["skipped"], len(skipped))
        out["steady_s"], out["steady_requests"] = statistics.median(times), max(reqs)
        out["derived"] = {tf: store.derived_from(tf) for tf in store.timeframes}
        out["h4_candles"] = statistics.median(store.count(s, "4h") for s in syms)
        out["h1_candles"] = statistics.median(store.count(s, "1h") for s in syms)
        out["budget"], out["max_used"] = gw.budget.budget, gw.budget.max_used
        out["max_server_used"] = gw.budget.max_server_used
    finally:
        await gw.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steady", type=int, default=3, help="steady cycles per run")
    ap.add_argument("--latency-ms", type=float, default=80.0)
    ap.add_argument("--concurrency", type=int, default=None, help="exchange.max_concurrency (default: config default)")
    args = ap.parse_args()
    from core.config import ExchangeConfig

    concurrency = args.concurrency or ExchangeConfig().max_concurrency
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(child, args.latency_ms / 1000), daemon=True)
    proc.start()
    url, symbols, now_ms = parent.recv()
    print(f"emulator {url}: {len(symbols)} pairs, {args.latency_ms:g} ms latency per request, "
          f"max_concurrency {concurrency}, {args.runs} runs")
    runs = []
    try:
        for i in range(args.runs):
            parent.send(("stats",))
            if parent.recv()["used_now"] > 1500:
                # a run spends ~1100 weight: start in a fresh minute so the budget never has to wait
                time.sleep(60.2 - time.time() % 60)
            parent.send(("advance", HOUR))
            now_ms = parent.recv()
            r = asyncio.run(one_run(url, symbols, now_ms, parent, concurrency, args.steady))
            runs.append(r)
            print(f"  run {i + 1}: backfill {r['backfill_s']:.2f} s ({r['backfill_requests']} requests, "
                  f"{r['backfill_candles']} candles), steady {r['steady_s']:.2f} s ({r['steady_requests']} requests), "
                  f"idle {r['idle_s'] * 1000:.1f} ms ({r['idle_requests']} requests), skipped {r['skipped']}")
        parent.send(("stats",))
        stats = parent.recv()
    finally:
        parent.send(("stop",))
        parent.recv()
        proc.join(10)

    def med(k: str) -> float:
        return statistics.median(r[k] for r in runs)

    last = runs[-1]
    derived = ", ".join(f"{tf} derived from {src}" for tf, src in last["derived"].items() if src) or "none"
    fetched = [tf for tf, src in last["derived"].items() if not src]
    print(f"pairs {last['pairs']}; timeframes fetched: {', '.join(fetched)}; {derived} "
          f"(store, median per pair: {last['h1_candles']:.0f} 1h and {last['h4_candles']:.0f} 4h candles)")
    print(f"load markets      median {med('markets_s'):.3f} s")
    print(f"backfill cycle    median {med('backfill_s'):.2f} s   (target < 4 s: "
          f"{'ok' if med('backfill_s') < 4 else 'MISSED'})")
    print(f"steady cycle      median {med('steady_s'):.2f} s   (target < 1.5 s: "
          f"{'ok' if med('steady_s') < 1.5 else 'MISSED'}), one new 1h candle per pair")
    print(f"idle cycle        median {med('idle_s') * 1000:.1f} ms (no candle closed since: 0 requests)")
    print(f"weight: peak used {max(r['max_used'] for r in runs)} (our estimate), "
          f"{stats['max_weight_1m']} (emulator's per-minute count) vs budget {last['budget']} "
          f"({'never over' if stats['max_weight_1m'] <= last['budget'] else 'OVER BUDGET'}); "
          f"HTTP statuses seen: {stats['status']}")


if __name__ == "__main__":
    main()
