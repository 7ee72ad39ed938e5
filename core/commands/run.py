"""`pitrader run`: the service loop (live data), or `--replay DIR` over recorded candles."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from core.config import ConfigError
from core.timeframes import timeframe_ms
from core.store.state import Store, db_path

NAME = "run"
HELP = "run the trading loop (the systemd service runs this); --replay DIR for recorded data"


def configure(p) -> None:
    p.add_argument("--replay", metavar="DIR", help="recorded OHLCV (DIR/<tf>/BASE_QUOTE.csv) on a virtual clock")
    p.add_argument("--max-cycles", type=int, metavar="N", help="stop after N cycles")


async def _run(args, ctx) -> int:
    from core.engine import Engine
    from core.exchange.setup import live_setup, replay_setup
    from core.service.hooks import ServiceHooks, setup_service_logging

    cfg = ctx.config()
    secrets = ctx.secrets()
    setup_service_logging(cfg, secrets)
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    if args.replay:
        if cfg.mode == "live":
            raise ConfigError(cfg.source, "mode", 'expected "paper" with --replay (recorded data cannot trade)')
        gateway, clock, end_ms = replay_setup(cfg, args.replay)
        path = ctx.state_dir / "replay.db"
        for suffix in ("", "-wal", "-shm"):  # a replay always starts from scratch, like its clock
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        interval = timeframe_ms(gateway.base_timeframe) / 1000
    else:
        gateway, clock = live_setup(cfg, secrets)
        path, end_ms, interval = db_path(ctx.state_dir, cfg.mode), None, None

    def reload_config():
        new = ctx.reload_config()
        return replace(new, mode=cfg.mode) if args.replay else new

    async with Store.open(path) as store:
        engine = Engine(cfg, gateway, store, clock, hooks=ServiceHooks(cfg, ctx.state_dir, store, ctx.secrets),
                        config_loader=reload_config)
        engine.install_signal_handlers()
        try:
            await engine.run(max_cycles=args.max_cycles, until_ms=end_ms, interval_s=interval)
        finally:
            await gateway.close()
    return 0


def run(args, ctx) -> int:
    return asyncio.run(_run(args, ctx))
