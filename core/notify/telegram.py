"""The Telegram remote: commands from the allow-listed chats, answered by the running service.

Long polling (``getUpdates`` with ``timeout`` and ``offset``); the offset is kept in the state
database so a restart never runs a command twice. Messages from any other chat are ignored and
logged (once per chat and hour). ``/close`` asks for confirmation: ``/yes`` within a minute from
the same chat carries it out.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Protocol

import aiohttp

from core.notify.channels import TELEGRAM_API, TELEGRAM_MAX_CHARS

log = logging.getLogger(__name__)

CONFIRM_S = 60.0
HELP = """pitrader commands:
/status - mode, equity, today's PnL, halts, pause
/positions - open positions with price and unrealised PnL
/profit [days] - closed trades (all, or the last N days)
/daily - PnL per day, last 7 days
/balance - cash and holdings
/pause - no new entries (exits go on)
/resume - allow entries again
/close SYMBOL - sell a position at market (asks to confirm)
/help - this list"""


class Remote(Protocol):
    """What the commands need from the running service; each returns the reply text."""

    async def status(self) -> str: ...
    async def positions(self) -> str: ...
    async def profit(self, days: int | None) -> str: ...
    async def daily(self) -> str: ...
    async def balance(self) -> str: ...
    async def pause(self, who: str) -> str: ...
    async def resume(self, who: str) -> str: ...
    async def close_preview(self, symbol: str) -> str | None:
        """What /close would sell, or None when there is no such open position."""
    async def close(self, symbol: str, who: str) -> str: ...


class TelegramBot:
    def __init__(self, token: str, chat_ids: tuple[str, ...], remote: Remote, *, api_url: str | None = None,
                 load_offset: Callable[[], Awaitable[int]] | None = None,
                 save_offset: Callable[[int], Awaitable[None]] | None = None, poll_timeout_s: int = 25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._base = f"{(api_url or TELEGRAM_API).rstrip('/')}/bot{token}/"
        self.chat_ids = {str(c) for c in chat_ids}
        self.remote = remote
        self.poll_timeout_s = poll_timeout_s
        self._load_offset, self._save_offset = load_offset, save_offset
        self.clock = clock
        self._pending_close: dict[str, tuple[str, float]] = {}  # chat -> (symbol, asked at)
        self._ignored: dict[str, float] = {}
        self._failing = False
        self.handled = 0

    async def _call(self, session: aiohttp.ClientSession, method: str, timeout_s: float, **params) -> dict:
        try:
            async with session.post(self._base + method, json=params,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                reply = await r.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise ConnectionError(exc.__class__.__name__) from None  # the URL holds the token: never its text
        if not isinstance(reply, dict) or not reply.get("ok"):
            desc = str(reply.get("description", "")) if isinstance(reply, dict) else ""
            raise ConnectionError(f"HTTP {r.status} {desc[:120]}".strip())
        return reply

    async def run(self, stop: asyncio.Event) -> None:
        offset = await self._load_offset() if self._load_offset else 0
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    reply = await self._call(session, "getUpdates", self.poll_timeout_s + 10, offset=offset,
                                             timeout=self.poll_timeout_s, allowed_updates=["message"])
                    if self._failing:
                        log.info("telegram: commands reachable again")
                        self._failing = False
                except ConnectionError as exc:
                    if not self._failing:
                        log.warning("telegram: cannot fetch commands (%s); retrying", exc)
                        self._failing = True
                    await _wait(stop, 10.0)
                    continue
                updates = reply.get("result")
                for update in updates if isinstance(updates, list) else []:
                    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                        continue
                    offset = max(offset, update["update_id"] + 1)
                    try:
                        await self._one(session, update, offset)
                    except Exception as exc:  # noqa: BLE001 - one bad update must not end the remote
                        log.error("telegram: update %s not handled (%s)", update["update_id"],
                                  exc.__class__.__name__)

    async def _one(self, session: aiohttp.ClientSession, update: dict, offset: int) -> None:
        if self._save_offset:  # before acting: a crash must not run a command twice
            await self._save_offset(offset)
        answer = await self.handle(update)
        if answer is not None:
            chat = str(update["message"]["chat"]["id"])
            try:
                await self._call(session, "sendMessage", 15, chat_id=chat,
                                 text=answer[:TELEGRAM_MAX_CHARS], disable_web_page_preview=True)
            except ConnectionError as exc:
                log.warning("telegram: could not answer chat %s (%s)", chat, exc)

    async def handle(self, update: dict) -> str | None:
        """The reply to one update, or None (not for us / not allowed)."""
        msg = update.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("chat"), dict):
            return None
        chat, text = str(msg["chat"].get("id")), str(msg.get("text") or "").strip()
        if chat not in self.chat_ids:
            now = self.clock()
            if now - self._ignored.get(chat, -1e18) >= 3600:
                self._ignored[chat] = now
                sender = msg.get("from")
                user = (sender.get("username") if isinstance(sender, dict) else None) or "?"
                log.warning("telegram: ignored a message from chat %s (@%s): not in notify.telegram.chat_ids",
                            chat, user)
            return None
        if not text.startswith("/"):
            return "Commands start with /. Send /help for the list."
        word, _, arg = text.partition(" ")
        cmd = word[1:].split("@", 1)[0].lower()
        arg = arg.strip()
        who = f"telegram chat {chat}"
        self.handled += 1
        log.info("telegram: /%s%s from chat %s", cmd, f" {arg}" if arg else "", chat)
        try:
            return await self._dispatch(cmd, arg, chat, who)
        except Exception:  # noqa: BLE001 - a remote command must never take the service down
            log.exception("telegram: /%s failed", cmd)
            return f"/{cmd} failed; see the service log."

    async def _dispatch(self, cmd: str, arg: str, chat: str, who: str) -> str:
        r = self.remote
        pending = self._pending_close.pop(chat, None)  # only the very next message may confirm
        if cmd in ("help", "start"):
            return HELP
        if cmd == "status":
            return await r.status()
        if cmd == "positions":
            return await r.positions()
        if cmd == "profit":
            if arg and not (arg.isdigit() and 0 < int(arg) <= 3650):
                return "Usage: /profit [days], days from 1 to 3650"
            return await r.profit(int(arg) if arg else None)
        if cmd == "daily":
            return await r.daily()
        if cmd == "balance":
            return await r.balance()
        if cmd == "pause":
            return await r.pause(who)
        if cmd == "resume":
            return await r.resume(who)
        if cmd == "close":
            if not arg:
                return "Usage: /close SYMBOL, e.g. /close BTC/USDT"
            symbol = arg.upper().replace("-", "/").replace("_", "/")
            preview = await r.close_preview(symbol)
            if preview is None:
                return f"No open position in {symbol}."
            self._pending_close[chat] = (symbol, self.clock())
            return f"{preview}\nSend /yes within {CONFIRM_S:.0f} s to sell it at market."
        if cmd == "yes":
            if pending is None or self.clock() - pending[1] > CONFIRM_S:
                return "Nothing to confirm (or it expired). Send /close SYMBOL again."
            return await r.close(pending[0], who)
        return f"Unknown command /{cmd}. Send /help for the list."


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
