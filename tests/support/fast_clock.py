"""Run the `pitrader` CLI with the engine's clock on an accelerated market clock (crash tests).

The loopback emulator replays 2021 candles on a virtual market clock that a test moves fast; the
engine's staleness checks, holding times and day boundaries must see that same time, while
request signing (ccxt, ``time.time``) stays on the real clock the emulator checks recvWindow
against. Only ``core.clock.WallClock`` is redirected:

    market_ms(now) = PT_MARKET_T0_MS + (wall_ms(now) - PT_WALL_T0_MS) * PT_SPEED

Usage: ``PT_MARKET_T0_MS=... PT_WALL_T0_MS=... PT_SPEED=720 python -m tests.support.fast_clock
--config C --env-file E --state-dir S run`` (same arguments as `pitrader`). Tests use
``FastService``, which moves the emulator's clock and (re)launches the service this way, and
``churn_config``, a config that keeps orders coming.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEED = 720.0  # market ms per wall ms: one 1h candle every 5 s
MARKET_T0 = 1_615_420_800_000  # 2021-03-11 00:00 UTC: the market time at the start of a test
MONITOR_S = 0.5  # trading.monitor_interval_s of ``churn_config``


def market_ms(wall_ms: float, market_t0: int, wall_t0: int, speed: float) -> int:
    return int(market_t0 + (wall_ms - wall_t0) * speed)


def churn_config(exchange_url: str) -> dict:
    """config.json pointed at the emulator, tuned to trade a lot: any score enters, exits are
    tight and a position lasts at most one candle, so orders keep coming."""
    cfg = json.loads((ROOT / "config.json").read_text())
    cfg["exchange"].update({"api_url": exchange_url, "timeout_s": 5.0, "weight_budget_pct": 0.9})
    cfg["universe"].update({"max_pairs": 12, "min_quote_volume": 0})
    cfg["scanner"].update({"interval_s": 2, "timeframes": ["1h"], "confirm_timeframe": None, "candles": 300,
                           "min_opportunity_score": 0.0})
    cfg["trading"].update({"stop_loss_pct": 0.003, "take_profit_pct": 0.006, "monitor_interval_s": MONITOR_S,
                           "max_hold_hours": 1})
    cfg["risk"].update({"cooldown_minutes": 0, "max_daily_loss_pct": 0.5, "max_drawdown_pct": 0.5})
    # the shipped mean reversion waits for a risk-on market, the weakest pairs and a deep dip: loosen all three
    cfg["strategies"]["enabled"] = ["mean_reversion"]  # alone: every position follows the one-candle exits
    cfg["strategies"].setdefault("params", {})["mean_reversion"] = {"regime_filter": False, "strength_max": 1.0,
                                                                 "rsi_oversold": 40.0, "max_hold_hours": 1,
                                                                 "trailing_stop_pct": 0}
    return cfg


class FastService:
    """`pitrader run` in a subprocess against the emulator ``emu``, on the accelerated market clock.

    Entering starts a thread that moves the emulator's clock with the market clock; ``launch``
    (re)starts the service on the same state directory, each run logging to its own file
    (``logs``); leaving stops the clock and kills a run still going."""

    def __init__(self, emu, workdir: Path, config: Path, env_file: Path, state: Path) -> None:
        self.emu, self.workdir = emu, workdir
        self.cmd = [sys.executable, "-m", "tests.support.fast_clock", "--config", str(config), "--env-file",
                    str(env_file), "--state-dir", str(state), "run"]
        self.logs: list[Path] = []
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "FastService":
        self.wall_t0 = int(time.time() * 1000)
        self.env = dict(os.environ, PT_MARKET_T0_MS=str(MARKET_T0), PT_WALL_T0_MS=str(self.wall_t0),
                        PT_SPEED=str(SPEED))
        self.env.pop("STATE_DIRECTORY", None)
        threading.Thread(target=self._market_clock, daemon=True).start()
        return self

    def _market_clock(self) -> None:
        while not self._stop.is_set():
            self.emu.set_time(max(self.emu.now_ms, market_ms(time.time() * 1000, MARKET_T0, self.wall_t0, SPEED)))
            time.sleep(0.02)

    def launch(self) -> subprocess.Popen:
        out = self.workdir / f"run-{len(self.logs):02d}.log"
        self.logs.append(out)
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out.open("w"),
                                     stderr=subprocess.STDOUT)
        return self.proc

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


def main() -> int:
    from core import clock
    from core.cli import main as cli_main

    m0, w0 = int(os.environ["PT_MARKET_T0_MS"]), int(os.environ["PT_WALL_T0_MS"])
    speed = float(os.environ["PT_SPEED"])
    clock.WallClock.now_ms = lambda self: market_ms(time.time() * 1000, m0, w0, speed)  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
