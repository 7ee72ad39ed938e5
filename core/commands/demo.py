"""`pitrader demo`: the real engine in paper mode over the bundled real data, at full speed."""
from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from core.exchange.replay import SAMPLE_DIR

NAME = "demo"
HELP = "offline paper-trading run over the bundled real market data (data/sample); finishes by itself"


def configure(p) -> None:
    p.add_argument("--data", metavar="DIR", default=str(SAMPLE_DIR), help="recorded data (default: data/sample)")
    p.add_argument("--max-cycles", type=int, metavar="N", help="stop after N cycles")
    p.add_argument("--json", action="store_true", help="print the summary as JSON, without the live display")


async def _demo(args, ctx, cfg) -> dict:
    from core.service.dashboard import Dashboard
    from core.engine.hooks import Hooks
    from core.engine.loop import Engine
    from core.timeframes import timeframe_ms
    from core.exchange.setup import replay_setup
    from core.store.state import Store

    from core.commands._summary import summarize

    gateway, clock, end_ms = replay_setup(cfg, args.data)
    tf_ms = timeframe_ms(gateway.base_timeframe)
    total = (end_ms - clock.now_ms()) // tf_ms + 1
    if args.max_cycles:
        total = min(total, args.max_cycles)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pitrader-demo-") as tmp:
        async with Store.open(Path(tmp) / "demo.db") as store:
            dash = None

            class DemoHooks(Hooks):
                async def on_cycle(self, report):
                    if dash is not None:
                        dash.update(report, [p for p in await store.positions("open")])

            engine = Engine(cfg, gateway, store, clock, hooks=DemoHooks())
            engine.install_signal_handlers()
            if args.json:
                await engine.run(max_cycles=total, until_ms=end_ms, interval_s=tf_ms / 1000)
            else:
                with Dashboard(ctx.console, total, cfg.paper.starting_balance, cfg.universe.quote) as dash:
                    await engine.run(max_cycles=total, until_ms=end_ms, interval_s=tf_ms / 1000)
            return await summarize(cfg, engine, store, len(gateway.data[gateway.base_timeframe]), t0)


def run(args, ctx) -> int:
    from core.commands._storage import require
    from core.commands._summary import print_summary
    from core.exchange.replay import DataError

    if not Path(args.data).is_dir():
        raise DataError(f"{args.data}: sample data not found (it ships with the git checkout, not the installed "
                        "package); run the demo from a checkout or pass --data DIR")

    cfg = replace(ctx.config_or_defaults(), mode="paper")  # the demo never trades for real
    require(None)  # a numba cache that cannot be written: one line, not a traceback
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = asyncio.run(_demo(args, ctx, cfg))
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(ctx.console, summary, cfg.universe.quote,
                      "demo (paper mode, real Binance 1h candles)")
    return 130 if summary["interrupted"] else 0
