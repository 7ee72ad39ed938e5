"""Notifications inside the running service: channels from config + secrets, the sender and the
Telegram remote as background tasks, events that are not part of a store transaction, and the
daily summary."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable

from core.config import Config
from core.events import Event
from core.notify.channels import Channel, TelegramChannel, WebhookChannel
from core.notify.sender import Sender
from core.notify.telegram import Remote, TelegramBot
from core.secrets import Secrets

log = logging.getLogger(__name__)

TELEGRAM_OFFSET_KEY = "telegram_offset"
DAILY_KEY = "notify_daily_sent"


def build_channels(cfg: Config, secrets: Secrets) -> list[Channel]:
    n = cfg.notify
    out: list[Channel] = []
    if n.telegram.enabled and secrets.telegram_token:
        out += [TelegramChannel(secrets.telegram_token, chat, n.telegram.api_url, events=n.telegram.events,
                                min_level=n.telegram.min_level) for chat in n.telegram.chat_ids]
    if n.webhook.enabled and secrets.webhook_url:
        out.append(WebhookChannel(secrets.webhook_url, n.webhook.format, events=n.webhook.events,
                                  min_level=n.webhook.min_level))
    return out


class LogAlerts(logging.Handler):
    """Log records a person must see (reconciliation surprises, errors) become ``problem`` events.

    Logging is synchronous and may happen inside a store transaction, so records are only
    collected here; ``Notifications.flush_alerts`` writes them between cycles. The message
    template is the merge key, so a repeated error becomes one message with a count."""

    WATCHED = ("core.trading.reconcile",)  # WARNING and up from these; ERROR and up from every logger

    def __init__(self, limit: int = 200) -> None:
        super().__init__(logging.WARNING)
        self.pending: list[tuple[int, str, str, str]] = []
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("core.notify"):
            return  # never about our own delivery problems (a loop)
        if record.levelno < logging.ERROR and not record.name.startswith(self.WATCHED):
            return
        if len(self.pending) < self.limit:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            try:  # a malformed log call must not raise into the code that logged (an order path)
                text = record.getMessage()
            except Exception:  # noqa: BLE001
                self.handleError(record)
                return
            self.pending.append((int(record.created * 1000), level, str(record.msg), text))


class Notifications:
    """Owned by the service hooks. ``add`` writes an event on its own (for events that are not part
    of an order or fill transaction; those are written by the executor inside its transaction)."""

    def __init__(self, cfg: Config, secrets: Secrets, db_path: Path, store, remote: Remote | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 guard: Callable[[Callable[[], Awaitable]], Awaitable] | None = None) -> None:
        self.cfg, self.secrets, self.store = cfg, secrets, store
        # The Telegram task shares the engine's store connection for its offset: ``guard``
        # (``Engine.between_steps``) runs those reads and writes between the loop's transactions.
        self._guard = guard or (lambda action: action())
        self.channels = build_channels(cfg, secrets)
        self.sender = Sender(db_path, self.channels, timeout_s=cfg.notify.timeout_s) if self.channels else None
        tg = cfg.notify.telegram
        self.bot = (TelegramBot(secrets.telegram_token, tg.chat_ids, remote, api_url=tg.api_url,
                                load_offset=self._load_offset, save_offset=self._save_offset)
                    if tg.enabled and tg.commands and secrets.telegram_token and remote is not None else None)
        self.wall_ms = wall_ms
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._health: tuple = ((), ())
        self._alerts: LogAlerts | None = None
        store.outbox_enabled = self.enabled

    @property
    def enabled(self) -> bool:
        return self.sender is not None

    async def start(self) -> None:
        if self.sender is not None:
            await self.sender.open()
            self._tasks.append(asyncio.create_task(self.sender.run(self._stop), name="notify-sender"))
            log.info("notifications: %s", ", ".join(c.name for c in self.channels))
        if self.bot is not None:
            self._tasks.append(asyncio.create_task(self.bot.run(self._stop), name="telegram-commands"))

    async def stop(self) -> None:
        if self._alerts is not None:
            logging.getLogger().removeHandler(self._alerts)
            await self.flush_alerts()
            self._alerts = None
        self._stop.set()
        for t in self._tasks:
            try:
                await asyncio.wait_for(t, timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                t.cancel()
            except Exception:  # noqa: BLE001 - stopping must go on
                log.exception("notifications: task failed")
        if self.sender is not None:
            await self.sender.drain()
            await self.sender.close()

    async def add(self, kind: str, text: str, *, level: str = "", key: str = "", **data) -> None:
        if not self.enabled:
            return
        await self.store.add_event(Event(kind, text, self.wall_ms(), level=level, key=key, data=data))
        self.sender.wake()

    async def _add_own(self, kind: str, text: str, *, level: str = "", key: str = "") -> None:
        """From our own task (the exchange watch): through the sender's connection, never the engine's,
        whose loop may be stuck in the very outage this reports or inside a transaction."""
        await self.sender.add(Event(kind, text, self.wall_ms(), level=level, key=key))

    def install_log_alerts(self) -> None:
        if self.enabled and self._alerts is None:
            self._alerts = LogAlerts()
            logging.getLogger().addHandler(self._alerts)

    async def flush_alerts(self) -> None:
        if self._alerts is None or not self._alerts.pending:
            return
        pending, self._alerts.pending = self._alerts.pending, []
        for ts, level, template, text in pending:
            await self.store.add_event(Event("problem", text, ts, level=level, key=template))
        self.wake()

    async def health(self, verdict) -> None:
        """A health change (paused entries, slowed scans, or back to normal): once per change."""
        state = (tuple(verdict.pause_reasons), tuple(verdict.slow_reasons)) if verdict is not None else ((), ())
        if state == self._health:
            return
        was_bad, self._health = any(self._health), state
        if any(state):
            level = "error" if state[0] else "warning"
            await self.add("health", verdict.summary(), level=level, key="health",
                           pause_reasons=list(state[0]), slow_reasons=list(state[1]))
        elif was_bad:
            await self.add("health", "Health back to normal.", level="info", key="health")

    def watch_exchange(self, last_ok_ms: Callable[[], int | None]) -> None:
        """Say so once when no cycle has completed for ``notify.unreachable_minutes``, and once when
        cycles complete again (``last_ok_ms``: wall time of the last completed cycle)."""
        if self.enabled:
            self._tasks.append(asyncio.create_task(self._watch(last_ok_ms), name="notify-exchange-watch"))

    async def _watch(self, last_ok_ms: Callable[[], int | None]) -> None:
        limit_ms = self.cfg.notify.unreachable_minutes * 60_000
        started, down_since = self.wall_ms(), None
        while not self._stop.is_set():
            now, ok = self.wall_ms(), last_ok_ms()
            since = ok if ok is not None else started
            if down_since is None and now - since >= limit_ms:
                down_since = since
                await self._add_own("problem", f"No cycle completed for {(now - since) // 60_000} minutes: the exchange "
                               "or the network is unreachable. Open positions are watched again as soon as it "
                               "answers.", key="unreachable")
            elif down_since is not None and ok is not None and ok > down_since:
                await self._add_own("problem", f"Working again after {(ok - down_since) // 60_000} minutes without a "
                               "cycle.", level="info", key="reachable")
                down_since = None
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=30)
            except asyncio.TimeoutError:
                pass

    def wake(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    async def maybe_daily(self, summary: Callable[[], Awaitable[str]], now_ms: int | None = None) -> bool:
        """Once a UTC day, at or after ``notify.daily_summary_hour``: the summary event."""
        hour = self.cfg.notify.daily_summary_hour
        if not self.enabled or hour < 0:
            return False
        now = datetime.fromtimestamp((now_ms or self.wall_ms()) / 1000, timezone.utc)
        day = now.strftime("%Y-%m-%d")
        if now.hour < hour or await self.store.get_state(DAILY_KEY) == day:
            return False
        await self.store.set_state(DAILY_KEY, day)
        await self.add("daily", await summary(), key=day)
        return True

    async def _load_offset(self) -> int:
        return int(await self._guard(lambda: self.store.get_state(TELEGRAM_OFFSET_KEY, 0)) or 0)

    async def _save_offset(self, offset: int) -> None:
        await self._guard(lambda: self.store.set_state(TELEGRAM_OFFSET_KEY, offset))
