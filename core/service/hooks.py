"""What `pitrader run` adds around the engine: systemd notify, watchdog, health, logging."""
from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from pathlib import Path
from typing import Callable

from core.config import Config

from core.secrets import Secrets
from core.engine.hooks import CycleReport, Hooks
from core.exchange.activity import NETWORK
from core.service.health import HealthMonitor
from core.service.memory import release_library_pages
from core.log import register_secret, setup_logging
from core.service.systemd import Heartbeat, Notifier
from core.store.state import Store

log = logging.getLogger(__name__)

def _malloc_trim():
    """glibc's malloc_trim, or None off glibc. Python frees large objects (HTTP reply bodies,
    parsed JSON) back to malloc, which keeps the pages; trimming after each cycle holds ~10 MB
    less RSS on a Pi for ~1 ms (benchmarks/bench_memory.py)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def setup_service_logging(cfg: Config, secrets: Secrets) -> str:
    for value in secrets.values():
        register_secret(value)
    return setup_logging(cfg.logging.level, None, cfg.logging.audit_max_kb, cfg.logging.audit_backups)


def status_line(report: CycleReport, next_s: float, start_equity) -> str:
    """One ASCII line for STATUS=: '126 pairs in 0.9s | 2 open | day +0.4% | next 8s'."""
    day = ""
    if start_equity:
        day = f" | day {float((report.equity - start_equity) / start_equity) * 100:+.1f}%"
    halts = f" | HALT: {report.halts[0]}" if report.halts else ""
    return (f"{report.scan.pairs_scanned} pairs in {report.scan.duration_s:.1f}s | "
            f"{report.open_positions} open{day}{halts} | next {next_s:.0f}s")


class ServiceHooks(Hooks):
    """READY after the first scan, STATUS per cycle, WATCHDOG only on progress, health gating."""

    def __init__(self, cfg: Config, state_dir: Path, store: Store, secrets: Callable[[], Secrets]) -> None:
        self.cfg = cfg
        self.store = store
        self.secrets = secrets  # the current secrets (re-read on reload)
        self.state_dir = state_dir
        self.notifier = Notifier()
        self.heartbeat = Heartbeat(self.notifier, network=NETWORK.snapshot)  # a network wait is alive
        self._task: asyncio.Task | None = None
        self._day_start: tuple[int, object] | None = None
        self.health = HealthMonitor(cfg.health, state_dir)
        self._trim = _malloc_trim()
        self._released_ms = -3_600_000
        self.notifications = None  # core.notify.service.Notifications, set by `run` when configured
        self.daily_summary = None  # async () -> str, for the daily notification
        self.last_ok_ms: int | None = None  # wall time of the last completed cycle

    async def on_ready(self, report: CycleReport) -> None:
        self._task = self.heartbeat.start()
        self.notifier.ready()
        log.info("ready: first scan done (%d pairs)", report.scan.pairs_scanned)
        if self.notifications is not None:
            await self.notifications.add("start", f"pitrader started ({self.cfg.mode}): {report.scan.pairs_scanned} "
                                         f"pairs, equity {report.equity:.2f} {self.cfg.universe.quote}, "
                                         f"{report.open_positions} open positions.", key="start")

    def progress(self) -> None:
        self.heartbeat.progress()

    async def on_cycle(self, report: CycleReport) -> None:
        self.heartbeat.progress()
        if self._trim is not None:
            self._trim(0)
        if report.ts_ms - self._released_ms >= 3_600_000:  # after the first cycle, then hourly
            self._released_ms = report.ts_ms
            release_library_pages()  # LLVM's code pages (~75 MB) the loop no longer runs
        day = report.ts_ms // 86_400_000
        if self._day_start is None or self._day_start[0] != day:
            self._day_start = (day, report.equity)
        verdict = await self.health.check_async()  # re-reads at most every refresh_s
        await self.store.set_state("health", {"ts_ms": report.ts_ms, "summary": verdict.summary(),
                                              "entries_paused": verdict.entries_paused})
        self.notifier.status(status_line(report, self.cfg.scanner.interval_s * self.interval_factor(),
                                         self._day_start[1]))
        self.last_ok_ms = int(time.time() * 1000)
        if self.notifications is not None:
            await self.notifications.health(verdict)
            await self.notifications.flush_alerts()
            if self.daily_summary is not None:
                await self.notifications.maybe_daily(self.daily_summary)

    async def on_reloading(self) -> None:
        self.notifier.reloading()

    async def on_reloaded(self, ok: bool, cfg: Config) -> None:
        if ok:
            self.cfg = cfg
            self.health.update_config(cfg.health)
            setup_service_logging(cfg, self.secrets())
        self.notifier.ready("configuration reloaded" if ok else "reload rejected: old configuration kept")

    async def on_stopping(self) -> None:
        self.notifier.stopping()
        if self._task is not None:
            self._task.cancel()
        if self.notifications is not None:
            await self.notifications.add("stop", f"pitrader stopping ({self.cfg.mode}).", key="stop")
            await self.notifications.stop()

    def interval_factor(self) -> float:
        v = self.health.verdict
        return v.interval_factor if v is not None else 1.0

    def entries_paused(self) -> str | None:
        v = self.health.verdict
        return "health: " + "; ".join(v.pause_reasons) if v is not None and v.entries_paused else None
