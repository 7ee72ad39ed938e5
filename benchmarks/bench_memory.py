"""Memory budget of the service loop (issue 7): steady RSS and growth over 1,000 cycles.

The real engine in paper mode with the service's hooks (ccxt gateway, candle store, scanner,
risk gate, paper executor, SQLite store, health checks, heap trimming) against the loopback emulator serving all 126 real 1h pairs, with 1h + 4h
timeframes. The emulator runs in its own process (its memory is not counted) with market time running
``--speed`` times faster than the wall clock, and cycles run back to back (no 10 s sleep):
the default paces about 10 s of market time per cycle, so 1,000 cycles see what the live
loop sees in 2.8 hours (a few new hourly candles, universe and market refreshes);
``--speed 3600`` is a stress run (a new hourly candle for every pair every ~40 cycles and the
hourly jobs every second).

    .venv/bin/python benchmarks/bench_memory.py [--cycles 1000] [--speed 400] [--notify] [--keep-library-pages]

Prints RSS at start, after the first scan and every 100 cycles, then steady RSS (after
warm-up) and growth from cycle 100 to the last. Targets: steady <= 200 MB, growth < 5 MB.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.clock import WallClock  # noqa: E402
from core.config import load_config
from core.secrets import Secrets  # noqa: E402

MARKET_T0 = 1_614_556_800_000  # 2021-03-01 00:00 UTC
LIVE_PACED = 400.0  # ~25 ms cycles x 400 = ~10 s of market per cycle, as the live loop runs


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def rss_split() -> str:
    """Anonymous (heap) vs file-backed (shared libraries, evictable) resident memory, on Linux."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    except OSError:
        return ""
    mb = {k: int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile") if k in fields}
    return f" (anonymous {mb.get('RssAnon', 0):.1f} MB, file-backed {mb.get('RssFile', 0):.1f} MB)"


class MarketClock(WallClock):
    """The engine's clock on the emulator's accelerated market time (2021 candles), so data
    freshness checks see the same time the emulator serves; request signing stays on real time."""

    def __init__(self, market_t0: int, speed: float) -> None:
        self.market_t0, self.wall_t0, self.speed = market_t0, time.time() * 1000, speed

    def now_ms(self) -> int:
        return int(self.market_t0 + (time.time() * 1000 - self.wall_t0) * self.speed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fakes() -> tuple[subprocess.Popen, str, str]:
    """The loopback Telegram Bot API and webhook receiver in their own process (not counted)."""
    fakes = subprocess.Popen([sys.executable, "-m", "tests.support.http_fakes"], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    tg, hook = fakes.stdout.readline().split()
    return fakes, tg, hook


async def main(cycles: int, speed: float, notify: bool = False) -> None:
    from core.exchange.ccxt_gateway import CcxtGateway
    from core.engine.loop import Engine
    from core.service.hooks import ServiceHooks
    from core.store.state import Store

    port, fakes = free_port(), None
    emu = subprocess.Popen([sys.executable, "-m", "tests.support.emulator", "--port", str(port),
                            "--start", "2021-03-01T00:00:00Z", "--speed", str(speed),
                            "--weight-limit", "1000000"],  # measure memory, not the rate limiter
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        emu.stdout.readline()  # the base URL: it is serving, market time starts now
        clock = MarketClock(MARKET_T0, speed)
        base = load_config(ROOT / "config.json")
        cfg = replace(base, exchange=replace(base.exchange, api_url=f"http://127.0.0.1:{port}", max_concurrency=16),
                      universe=replace(base.universe, min_quote_volume=0.0))
        secrets = Secrets()
        if notify:  # every channel on, as a user with Telegram and a webhook runs it
            from tests.support.http_fakes import FakeTelegram

            fakes, tg_url, hook_url = start_fakes()
            n = cfg.notify
            cfg = replace(cfg, notify=replace(
                n, telegram=replace(n.telegram, enabled=True, chat_ids=("42",), api_url=tg_url),
                webhook=replace(n.webhook, enabled=True)))
            secrets = Secrets(telegram_token=FakeTelegram().token, webhook_url=hook_url + "/hook")
        print(f"RSS at start: {rss_mb():.1f} MB (python + numpy + numba + ccxt imported)")
        gateway = CcxtGateway(cfg, secrets, clock)
        samples = []
        with tempfile.TemporaryDirectory() as tmp:
            async with Store.open(Path(tmp) / "paper.db") as store:
                hooks = ServiceHooks(cfg, Path(tmp), store, lambda: secrets)  # as `pitrader run` has them
                engine = Engine(cfg, gateway, store, clock, hooks=hooks)
                if notify:
                    from core.commands.run import _start_notifications

                    await _start_notifications(cfg, secrets, Path(tmp) / "paper.db", store, engine, hooks)
                await engine.start()
                t0 = time.perf_counter()
                for i in range(1, cycles + 1):
                    report = await engine.cycle()
                    if i == 1:
                        await hooks.on_ready(report)  # READY (and the start notification), as `run` does
                    await hooks.on_cycle(report)
                    if hooks.notifications is not None and i % 10 == 0:  # traffic: a message every 10 cycles
                        await hooks.notifications.add("entry_fill", f"benchmark fill {i}", key=str(i))
                    if i == 1:
                        print(f"RSS after the first scan: {rss_mb():.1f} MB "
                              f"({report.scan.pairs_scanned} pairs scanned, {report.scan.pairs_skipped} skipped)")
                    if i % 100 == 0:
                        samples.append((i, rss_mb()))
                        print(f"cycle {i:5d}: RSS {samples[-1][1]:.1f} MB, {report.open_positions} open, "
                              f"{(time.perf_counter() - t0) / i * 1000:.0f} ms/cycle")
                if hooks.notifications is not None:
                    await hooks.notifications.stop()
                    print(f"notification messages delivered: {hooks.notifications.sender.delivered}")
            await gateway.close()
        steady = max(r for _, r in samples)
        growth = samples[-1][1] - samples[0][1]
        print(f"market time ran {speed:g}x the wall clock")
        print(json.dumps({"cycles": cycles, "speed": speed, "notify": notify, "steady_rss_mb": round(steady, 1),
                          "growth_mb_from_cycle_100": round(growth, 2)}))
        print(f"at the end: RSS {rss_mb():.1f} MB{rss_split()}; MALLOC_ARENA_MAX="
              f"{os.environ.get('MALLOC_ARENA_MAX', '(unset)')}")
        print(f"steady RSS {steady:.1f} MB (target <= 200), growth {growth:+.2f} MB over "
              f"{samples[-1][0] - samples[0][0]} cycles (target < 5)")
    finally:
        emu.terminate()
        emu.wait(timeout=10)
        if fakes is not None:
            fakes.stdin.close()
            fakes.wait(timeout=10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--speed", type=float, default=LIVE_PACED, help="market seconds per wall second")
    ap.add_argument("--notify", action="store_true",
                    help="with Telegram and a webhook channel on (loopback fakes in their own process)")
    ap.add_argument("--keep-library-pages", action="store_true",
                    help="reference: do not release LLVM's code pages after the first scan (core/service/memory.py)")
    args = ap.parse_args()
    if args.keep_library_pages:
        import core.service.hooks

        core.service.hooks.release_library_pages = lambda: 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main(args.cycles, args.speed, args.notify))
