"""Run the `pitrader` CLI with the engine's clock on an accelerated market clock (crash tests).

The loopback emulator replays 2021 candles on a virtual market clock that a test moves fast; the
engine's staleness checks, holding times and day boundaries must see that same time, while
request signing (ccxt, ``time.time``) stays on the real clock the emulator checks recvWindow
against. Only ``core.clock.WallClock`` is redirected:

    market_ms(now) = PT_MARKET_T0_MS + (wall_ms(now) - PT_WALL_T0_MS) * PT_SPEED

Usage: ``PT_MARKET_T0_MS=... PT_WALL_T0_MS=... PT_SPEED=720 python -m tests.support.fast_clock
--config C --env-file E --state-dir S run`` (same arguments as `pitrader`).
"""
from __future__ import annotations

import os
import sys
import time


def market_ms(wall_ms: float, market_t0: int, wall_t0: int, speed: float) -> int:
    return int(market_t0 + (wall_ms - wall_t0) * speed)


def main() -> int:
    from core import clock
    from core.cli import main as cli_main

    m0, w0 = int(os.environ["PT_MARKET_T0_MS"]), int(os.environ["PT_WALL_T0_MS"])
    speed = float(os.environ["PT_SPEED"])
    clock.WallClock.now_ms = lambda self: market_ms(time.time() * 1000, m0, w0, speed)  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
