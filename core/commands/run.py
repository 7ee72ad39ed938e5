"""`pitrader run`: the service loop (live data), or `--replay DIR` over recorded candles."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from core.config import ConfigError
from core.exchange.gateway import AuthenticationFailed
from core.timeframes import timeframe_ms
from core.store.state import Store, db_path

REPLAY_DB = "replay.db"  # `run --replay`'s state; `status --db replay` reads it
NAME = "run"
HELP = "run the trading loop (the systemd service runs this); --replay DIR for recorded data"


def configure(p) -> None:
    p.add_argument("--replay", metavar="DIR", help="recorded OHLCV (DIR/<tf>/BASE_QUOTE.csv) on a virtual clock")
    p.add_argument("--max-cycles", type=int, metavar="N", help="stop after N cycles")


async def _run(args, ctx) -> int:
    from core.engine.loop import Engine
    from core.exchange.setup import live_setup, replay_setup
    from core.service.hooks import ServiceHooks, setup_service_logging
    from core.service.backups import BackupSchedule
    from core.service.signals import EARLY
    from core.service.control import serve as serve_commands
    from core.store.backup import ServiceLock
    from core.store.errors import StateDatabaseError

    from core.commands._storage import require
    from core.commands._summary import print_summary, save_last_prices, summarize

    cfg = ctx.config()
    secrets = ctx.secrets()
    require(ctx.state_dir)  # before the service starts: one line and exit 77, not a restart loop
    setup_service_logging(cfg, secrets)
    if args.replay:
        if cfg.mode == "live":
            raise ConfigError(cfg.source, "mode", 'expected "paper" with --replay (recorded data cannot trade)')
        gateway, clock, end_ms = replay_setup(cfg, args.replay)
        path = ctx.state_dir / REPLAY_DB
        for suffix in ("", "-wal", "-shm"):  # a replay always starts from scratch, like its clock
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        interval = timeframe_ms(gateway.base_timeframe) / 1000
    else:
        gateway, clock = live_setup(cfg, secrets)
        path, end_ms, interval = db_path(ctx.state_dir, cfg.mode), None, None

    def reload_config():
        new = ctx.reload_config()
        return replace(new, mode=cfg.mode) if args.replay else new

    backups = None if args.replay else BackupSchedule(path)

    class RunHooks(ServiceHooks):
        async def on_cycle(self, report) -> None:
            await super().on_cycle(report)
            await save_last_prices(self.store, report)  # `status` values positions without the network
            if backups is not None:
                await backups.check()  # hourly: damage on disk stops the service (exit 74)
                await backups.maybe_backup(self.cfg)  # daily, in a thread; want of space is one warning

        async def on_tick(self, engine) -> None:
            await super().on_tick(engine)
            if not args.replay:
                await serve_commands(engine)  # `pitrader close/pause/resume/buy/exclude` (core/service/control.py)

    started = time.perf_counter()
    lock = ServiceLock(ctx.state_dir)  # held while running: `backup restore` refuses, a second `run` too
    if not args.replay and not lock.acquire():
        await gateway.close()
        raise StateDatabaseError(path, f"in use by a running pitrader (pid {lock.holder()})",
                                 "stop it first (systemctl stop pitrader)")
    try:
        async with Store.open(path) as store:
            hooks = RunHooks(cfg, ctx.state_dir, store, ctx.secrets)
            engine = Engine(cfg, gateway, store, clock, hooks=hooks, config_loader=reload_config)
            EARLY.hand_over(engine)  # the loop's handlers, then any SIGHUP/SIGTERM that came during start-up
            if not args.replay:  # recorded data tells nobody anything
                await _start_notifications(cfg, secrets, path, store, engine, hooks)
            try:
                await engine.run(max_cycles=args.max_cycles, until_ms=end_ms, interval_s=interval)
            except AuthenticationFailed as exc:
                if hooks.notifications is not None:
                    await hooks.notifications.add("problem", f"The exchange refuses the API key ({exc}): pitrader "
                                                  "stopped and waits for a new key (exit 78).", key="api_key")
                    await hooks.notifications.stop()
                raise
            finally:
                await gateway.close()
            if args.replay:
                pairs = len(gateway.data[gateway.base_timeframe])
                print_summary(ctx.console, await summarize(cfg, engine, store, pairs, started), cfg.universe.quote,
                              f"replay of {args.replay} (paper)")
                ctx.console.print(f"  state kept in {path}: `pitrader status --db replay"
                                  + (f" --state-dir {ctx.state_dir}" if str(ctx.state_dir) != "var" else "") + "`")
    finally:
        lock.release()
    return 0


async def _start_notifications(cfg, secrets, path, store, engine, hooks) -> None:
    """Channels, the sender, the Telegram remote and the exchange watch, when any channel is enabled."""
    from core.notify.service import Notifications
    from core.service.remote import EngineRemote

    remote = EngineRemote(engine)
    notes = Notifications(cfg, secrets, path, store, remote=remote)
    if not notes.enabled:
        return
    hooks.notifications, hooks.daily_summary = notes, remote.daily_summary
    notes.install_log_alerts()
    await notes.start()
    notes.watch_exchange(lambda: hooks.last_ok_ms)


def run(args, ctx) -> int:
    return asyncio.run(_run(args, ctx))
