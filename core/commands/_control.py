"""Shared by `pitrader close / pause / resume / buy / exclude`: hand the command to the running
service through the state database's command queue and print its outcome, or, when no service
runs on this state directory (``STATE/service.lock`` is free), carry it out directly with the same
code (``core.service.control.execute``) while holding that lock."""
from __future__ import annotations

import asyncio
import getpass
import os
import time

EX_FAILED = 1
SERVICE_WAIT_S = 60.0  # the service takes a command between two monitor checks; a scan may delay it


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user} (cli, pid {os.getpid()})"


def run_command(ctx, action: str, args: dict) -> int:
    from core.store.backup import ServiceLock

    cfg = ctx.config()
    lock = ServiceLock(ctx.state_dir)
    if lock.holder() is None and lock.acquire():
        try:
            ok, outcome = asyncio.run(_direct(ctx, cfg, action, args))
        finally:
            lock.release()
        how = "done directly (no service running)"
    else:
        ok, outcome = _through_service(ctx, cfg, action, args, lock.holder())
        how = "done by the running service"
    if ok:
        ctx.console.print(f"{outcome}  [dim]({how})[/]", soft_wrap=True)
        return 0
    ctx.console.print(f"[red]{action} failed:[/] {outcome}", soft_wrap=True)
    return EX_FAILED


async def _direct(ctx, cfg, action: str, args: dict) -> tuple[bool, str]:
    from core.clock import WallClock
    from core.engine.loop import Engine
    from core.exchange.gateway import GatewayError
    from core.exchange.setup import live_setup
    from core.service.control import CommandFailed, execute
    from core.store.state import Store, db_path

    gateway, clock = live_setup(cfg, ctx.secrets())
    try:
        async with Store.open(db_path(ctx.state_dir, cfg.mode)) as store:
            engine = Engine(cfg, gateway, store, clock if clock is not None else WallClock())
            if action in ("close", "buy"):
                await engine.start()  # markets, reconciliation: what the service does first
            else:
                await engine.load_manual_state()  # pause / resume / exclude touch only the store
            try:
                outcome = await execute(engine, action, args, who())
                if action in ("close", "buy"):
                    await engine.executor.poll()  # a fill gets its exchange-side stop now, not at the next start
                return True, outcome
            except CommandFailed as exc:
                return False, str(exc)
            except GatewayError as exc:
                return False, f"exchange: {exc}"
    finally:
        await gateway.close()


def _through_service(ctx, cfg, action: str, args: dict, pid: str | None) -> tuple[bool, str]:
    from core.store import protections as queue
    from core.store.state import connect_sync, db_path

    conn = connect_sync(db_path(ctx.state_dir, cfg.mode))
    try:
        cid = queue.enqueue_sync(conn, action, args, who())
        ctx.console.print(f"[dim]handed to the running service (pid {pid}); waiting for it...[/]")
        deadline = time.monotonic() + max(SERVICE_WAIT_S, 10 * cfg.trading.monitor_interval_s)
        while time.monotonic() < deadline:
            status, outcome = queue.command_sync(conn, cid) or ("failed", "command vanished")
            if status in ("done", "failed"):
                return status == "done", outcome
            time.sleep(0.2)
        if queue.cancel_sync(conn, cid, "not taken by the service in time"):
            return False, "the service did not take the command in time (withdrawn; is it stuck? `pitrader status`)"
        status, outcome = queue.command_sync(conn, cid)
        return status == "done", outcome or "taken by the service; still running (see the log)"
    finally:
        conn.close()
