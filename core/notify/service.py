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


class Notifications:
    """Owned by the service hooks. ``add`` writes an event on its own (for events that are not part
    of an order or fill transaction; those are written by the executor inside its transaction)."""

    def __init__(self, cfg: Config, secrets: Secrets, db_path: Path, store, remote: Remote | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.cfg, self.secrets, self.store = cfg, secrets, store
        self.channels = build_channels(cfg, secrets)
        self.sender = Sender(db_path, self.channels, timeout_s=cfg.notify.timeout_s) if self.channels else None
        tg = cfg.notify.telegram
        self.bot = (TelegramBot(secrets.telegram_token, tg.chat_ids, remote, api_url=tg.api_url,
                                load_offset=self._load_offset, save_offset=self._save_offset)
                    if tg.enabled and tg.commands and secrets.telegram_token and remote is not None else None)
        self.wall_ms = wall_ms
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

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
        return int(await self.store.get_state(TELEGRAM_OFFSET_KEY, 0) or 0)

    async def _save_offset(self, offset: int) -> None:
        await self.store.set_state(TELEGRAM_OFFSET_KEY, offset)
