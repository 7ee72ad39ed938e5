"""Where messages go: Telegram chats and webhooks (generic JSON, Discord, ntfy), over aiohttp.

A channel only knows how to deliver one message; retries, merging and rate limits are the
sender's. Errors never carry a URL or a token: aiohttp puts the whole URL (a bot token is part
of Telegram's path) into its exception texts, so only the exception's class or an HTTP status
and the service's own description are kept.
"""
from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

import aiohttp

from core.events import LEVELS, Event, level_rank

TELEGRAM_API = "https://api.telegram.org"
TELEGRAM_MAX_CHARS = 4096
DISCORD_MAX_CHARS = 2000
NTFY_PRIORITY = {"info": "3", "warning": "4", "error": "5"}


class DeliveryError(Exception):
    """``retryable``: an outage or a rate limit (try again later); otherwise the message itself
    was refused (too long, malformed) or the channel is misconfigured (bad token, unknown chat)."""

    def __init__(self, text: str, retryable: bool, retry_after: float | None = None, config: bool = False) -> None:
        super().__init__(text)
        self.retryable, self.retry_after, self.config = retryable, retry_after, config


@dataclass(frozen=True)
class Message:
    """What one delivery carries: one event, or a burst of the same event merged with a count."""

    events: tuple[Event, ...]
    text: str
    digest: bool = False  # the backlog past the rate limit, any kinds, as one list


    @property
    def level(self) -> str:
        return max((e.level for e in self.events), key=level_rank)

    @property
    def kind(self) -> str:
        """The events' kind, or ``digest`` for a digest of several kinds."""
        kinds = {e.kind for e in self.events}
        return "digest" if self.digest and len(kinds) > 1 else self.events[0].kind

    @property
    def id(self) -> int:
        """The newest outbox id it carries: a message re-sent after a restart with the same events has
        the same id, and one that merged more since has a new one (so a de-duplicating receiver keeps it)."""
        return max((e.id or 0) for e in self.events)


class Channel:
    """Base: the event filter; subclasses implement ``send``."""

    name = "channel"

    def __init__(self, events: tuple[str, ...] = (), min_level: str = "info") -> None:
        self.events = frozenset(events)
        self.min_level = min_level if min_level in LEVELS else "info"

    def accepts(self, event: Event) -> bool:
        if event.kind == "test":
            return True
        if self.events and event.kind not in self.events:
            return False
        return level_rank(event.level) >= level_rank(self.min_level)

    async def send(self, session: aiohttp.ClientSession, message: Message) -> None:
        raise NotImplementedError


def _network_error(exc: BaseException) -> DeliveryError:
    what = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"unreachable ({exc.__class__.__name__})"
    return DeliveryError(what, retryable=True)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _http_error(status: int, description: str, retry_after: float | None) -> DeliveryError:
    text = f"HTTP {status}" + (f": {description}" if description else "")
    if status == 429 or status >= 500:
        return DeliveryError(text, retryable=True, retry_after=retry_after)
    return DeliveryError(text, retryable=False, config=status in (401, 403, 404))


class TelegramChannel(Channel):
    """One allow-listed chat of a bot (``sendMessage``); each chat is its own channel, so a chat
    that blocked the bot never holds back the others."""

    def __init__(self, token: str, chat_id: str, api_url: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.name = f"telegram:{chat_id}"
        self.chat_id = chat_id
        self._url = f"{(api_url or TELEGRAM_API).rstrip('/')}/bot{token}/sendMessage"

    async def get_me(self, session: aiohttp.ClientSession) -> None:
        """Is the token accepted? (``getMe``: sends nothing to anyone)."""
        await self._post(session, self._url.rsplit("/", 1)[0] + "/getMe", {})

    async def send(self, session: aiohttp.ClientSession, message: Message) -> None:
        await self._post(session, self._url, {"chat_id": self.chat_id, "text": message.text[:TELEGRAM_MAX_CHARS],
                                              "disable_web_page_preview": True})

    async def _post(self, session: aiohttp.ClientSession, url: str, body: dict) -> None:
        try:
            async with session.post(url, json=body) as r:
                try:
                    reply = await r.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    reply = {}
                if r.status == 200 and isinstance(reply, dict) and reply.get("ok"):
                    return
                reply = reply if isinstance(reply, dict) else {}
                params = reply.get("parameters") if isinstance(reply.get("parameters"), dict) else {}
                raise _http_error(r.status, str(reply.get("description", ""))[:200],
                                  _retry_after(str(params["retry_after"])) if "retry_after" in params
                                  else _retry_after(r.headers.get("Retry-After")))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _network_error(exc) from None


class WebhookChannel(Channel):
    """A URL that takes a POST per message. ``format``: ``json`` (the schema below), ``discord``
    (``{"content": text}``) or ``ntfy`` (plain text, with Title and Priority headers).

    JSON schema: ``{"id", "ids", "kind", "level", "ts_ms", "count", "text", "data"}``; ``id`` is the
    newest outbox id the message carries: the same message after a restart has the same id."""

    name = "webhook"

    def __init__(self, url: str, format: str = "json", name: str = "webhook", **kw) -> None:
        super().__init__(**kw)
        self.url, self.format, self.name = url, format, name

    def request(self, message: Message) -> dict:
        """The aiohttp keyword arguments of the POST (tests look at them too)."""
        if self.format == "discord":
            return {"json": {"content": message.text[:DISCORD_MAX_CHARS]}}
        if self.format == "ntfy":
            return {"data": message.text.encode(), "headers": {
                "Title": f"pitrader {message.kind.replace('_', ' ')}", "Priority": NTFY_PRIORITY[message.level],
                "Tags": message.level, "Content-Type": "text/plain; charset=utf-8"}}
        e = message.events[-1]
        data = e.data
        if message.kind == "digest":  # one event's details would misdescribe the others: counts by kind
            data = {"kinds": dict(collections.Counter(x.kind for x in message.events))}
        return {"json": {"id": message.id, "ids": [x.id for x in message.events], "kind": message.kind,
                         "level": message.level, "ts_ms": e.ts_ms, "count": len(message.events),
                         "text": message.text, "data": data}}

    async def send(self, session: aiohttp.ClientSession, message: Message) -> None:
        try:
            async with session.post(self.url, **self.request(message)) as r:
                if 200 <= r.status < 300:
                    return
                detail = (await r.text())[:200].replace("\n", " ") if r.status < 500 else ""
                raise _http_error(r.status, detail, _retry_after(r.headers.get("Retry-After")))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _network_error(exc) from None

