"""Loopback fakes of the services notifications talk to: Telegram's Bot API and a webhook receiver.

They speak the real protocols over real HTTP, so the real aiohttp clients are tested. Each runs
in its own thread with its own event loop, so a test can also point a child process at it, and
each can be taken "down" (HTTP 502, or connections refused) and brought back.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


class ThreadedServer:
    """An aiohttp application served on 127.0.0.1 from a background thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.down = False  # answer 502 to everything
        self.refuse = False  # close connections without an answer

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)

            async def boot() -> None:
                self._runner = web.AppRunner(self._wrap(self.app()), access_log=None, shutdown_timeout=0.2)
                await self._runner.setup()
                site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                await site.start()
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                ready.set()

            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def _wrap(self, app: web.Application) -> web.Application:
        @web.middleware
        async def outage(request: web.Request, handler):
            if self.refuse:
                request.transport.close()  # type: ignore[union-attr]
                raise web.HTTPBadGateway()
            if self.down:
                return web.Response(status=502, text="bad gateway")
            return await handler(request)

        app.middlewares.append(outage)
        return app

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            await self._runner.cleanup()  # type: ignore[union-attr]

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)  # type: ignore[union-attr]
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Sent:
    chat_id: str
    text: str
    ts: float = field(default_factory=time.time)


class FakeTelegram(ThreadedServer):
    """Telegram Bot API: ``getMe``, ``sendMessage``, ``getUpdates`` (long polling with ``offset``
    and ``timeout``), for one bot token. ``say(chat_id, text)`` queues an incoming message."""

    def __init__(self, token: str = "123456:TEST-token-abcdefghijklmnop", username: str = "pitrader_test_bot") -> None:
        super().__init__()
        self.token, self.username = token, username
        self.sent: list[Sent] = []
        self.updates: list[dict[str, Any]] = []
        self._next_update = 1
        self._next_message = 1
        self.rate_limit_next = 0  # answer this many sendMessage calls with 429 retry_after
        self.retry_after = 1
        self.bad_token_calls = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        return app

    def say(self, chat_id: int | str, text: str, username: str = "owner") -> None:
        with self.lock:
            self.updates.append({"update_id": self._next_update, "message": {
                "message_id": self._next_update, "date": int(time.time()), "text": text,
                "chat": {"id": int(chat_id), "type": "private", "username": username},
                "from": {"id": int(chat_id), "is_bot": False, "first_name": username}}})
            self._next_update += 1

    def texts(self, chat_id: int | str | None = None) -> list[str]:
        with self.lock:
            return [s.text for s in self.sent if chat_id is None or s.chat_id == str(chat_id)]

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(await request.post())
        return params

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            self.bad_token_calls += 1
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await self._params(request)
        if method == "getMe":
            return web.json_response({"ok": True, "result": {"id": 1, "is_bot": True, "username": self.username,
                                                             "first_name": "pitrader"}})
        if method == "sendMessage":
            return self._send(params)
        if method == "getUpdates":
            return await self._get_updates(params)
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found: method not found"},
                                 status=404)

    def _send(self, params: dict[str, Any]) -> web.Response:
        text, chat = params.get("text"), params.get("chat_id")
        if not text or chat is None:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: message text is empty"}, status=400)
        if len(str(text)) > 4096:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: message is too long"}, status=400)
        with self.lock:
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return web.json_response({"ok": False, "error_code": 429,
                                          "description": f"Too Many Requests: retry after {self.retry_after}",
                                          "parameters": {"retry_after": self.retry_after}}, status=429)
            self.sent.append(Sent(str(chat), str(text)))
            mid = self._next_message
            self._next_message += 1
        return web.json_response({"ok": True, "result": {"message_id": mid, "date": int(time.time()),
                                                         "chat": {"id": int(chat), "type": "private"},
                                                         "text": text}})

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset", 0) or 0)
        timeout = min(float(params.get("timeout", 0) or 0), 50.0)
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if offset:  # Telegram forgets every update below the offset
                    self.updates = [u for u in self.updates if u["update_id"] >= offset]
                ready = list(self.updates)
            if ready or time.monotonic() >= deadline:
                return web.json_response({"ok": True, "result": ready[: int(params.get("limit", 100) or 100)]})
            await asyncio.sleep(0.05)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(ThreadedServer):
    """Records every POST (path, headers, body); ``fail_next`` answers that many with 500."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.fail_next = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return web.Response(status=500, text="boom")
            self.received.append(Received(request.path, dict(request.headers), body))
        return web.Response(status=204)

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.json() for r in self.received]


def main() -> None:
    """``python -m tests.support.http_fakes``: serve both fakes (for benchmarks that must not count
    their memory), print ``TELEGRAM_URL WEBHOOK_URL`` and run until standard input closes."""
    import sys

    with FakeTelegram() as tg, WebhookReceiver() as hook:
        print(tg.url, hook.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
