"""The Telegram remote over real HTTP against the loopback Bot API: allow-list, commands, confirmation."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest

from core.notify.telegram import TelegramBot
from tests.support.http_fakes import FakeTelegram

TOKEN = "123456:TEST-token-abcdefghijklmnop"


class FakeRemote:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def status(self):
        return "mode paper, equity 1000.00 USDT"

    async def positions(self):
        return "BTC/USDT 0.01 @ 30000"

    async def profit(self, days):
        self.calls.append(("profit", days))
        return f"profit over {days or 'all'} days"

    async def daily(self):
        return "daily table"

    async def balance(self):
        return "USDT 1000"

    async def pause(self, who):
        self.calls.append(("pause", who))
        return "entries paused"

    async def resume(self, who):
        self.calls.append(("resume", who))
        return "entries resumed"

    async def close_preview(self, symbol):
        return f"{symbol} #3: 0.01 @ 30000" if symbol == "BTC/USDT" else None

    async def close(self, symbol, who):
        self.calls.append(("close", symbol, who))
        return f"closed {symbol}"


def _drive(fake: FakeTelegram, remote, messages, *, chat_ids=("42",), offset_store=None, settle=1.5):
    """Run the bot until it has answered what was said (or ``settle`` seconds passed)."""
    saved = offset_store if offset_store is not None else {}

    async def load():
        return saved.get("offset", 0)

    async def save(v):
        saved["offset"] = v

    async def main():
        bot = TelegramBot(TOKEN, chat_ids, remote, api_url=fake.url, load_offset=load, save_offset=save,
                          poll_timeout_s=1)
        stop = asyncio.Event()
        task = asyncio.create_task(bot.run(stop))
        for chat, text in messages:
            fake.say(chat, text)
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 5)
        return bot

    return asyncio.run(main()), saved


@pytest.fixture
def telegram():
    with FakeTelegram(TOKEN) as fake:
        yield fake


def test_commands_from_the_allowed_chat_are_answered(telegram):
    remote = FakeRemote()
    _drive(telegram, remote, [("42", "/status"), ("42", "/positions"), ("42", "/profit 7"), ("42", "/daily"),
                              ("42", "/balance"), ("42", "/pause"), ("42", "/resume"), ("42", "/help"),
                              ("42", "/bogus")])
    texts = telegram.texts("42")
    assert texts[:7] == ["mode paper, equity 1000.00 USDT", "BTC/USDT 0.01 @ 30000", "profit over 7 days",
                         "daily table", "USDT 1000", "entries paused", "entries resumed"]
    assert "/close SYMBOL" in texts[7] and texts[8].startswith("Unknown command /bogus")
    assert ("pause", "telegram chat 42") in remote.calls and ("profit", 7) in remote.calls


def test_unknown_chats_are_ignored_and_logged_once(telegram, caplog):
    remote = FakeRemote()
    with caplog.at_level(logging.WARNING):
        _drive(telegram, remote, [("666", "/pause"), ("666", "/close BTC/USDT"), ("666", "/yes")])
    assert telegram.texts() == [] and remote.calls == []
    ignored = [r for r in caplog.records if "ignored a message from chat 666" in r.getMessage()]
    assert len(ignored) == 1


def test_close_needs_a_confirmation_from_the_same_chat(telegram):
    remote = FakeRemote()
    _drive(telegram, remote, [("42", "/close btc/usdt"), ("43", "/yes"), ("42", "/close DOGE/USDT"),
                              ("42", "/yes")], chat_ids=("42", "43"))
    assert telegram.texts("43") == ["Nothing to confirm (or it expired). Send /close SYMBOL again."]
    a, b, c = telegram.texts("42")
    assert "BTC/USDT #3" in a and "/yes" in a
    assert b == "No open position in DOGE/USDT."
    assert c == "Nothing to confirm (or it expired). Send /close SYMBOL again."  # any other message cancels
    assert remote.calls == []


def test_a_confirmed_close_runs_once_and_the_offset_survives_a_restart(telegram):
    remote = FakeRemote()
    offsets: dict = {}
    _drive(telegram, remote, [("42", "/close BTC/USDT"), ("42", "/yes")], offset_store=offsets)
    assert remote.calls == [("close", "BTC/USDT", "telegram chat 42")]
    assert telegram.texts("42")[-1] == "closed BTC/USDT"
    _drive(telegram, remote, [], offset_store=offsets, settle=1.0)  # a restart: nothing runs again
    assert remote.calls == [("close", "BTC/USDT", "telegram chat 42")]


def test_a_malformed_update_or_a_failing_offset_save_does_not_end_the_remote(telegram):
    saved: dict = {}
    fails = {"n": 1}

    async def main():
        async def load():
            return 0

        async def save(v):
            if fails["n"]:
                fails["n"] -= 1
                raise OSError("disk I/O error")  # the state database had a bad moment
            saved["offset"] = v

        bot = TelegramBot(TOKEN, ("42",), FakeRemote(), api_url=telegram.url, load_offset=load, save_offset=save,
                          poll_timeout_s=1)
        stop = asyncio.Event()
        task = asyncio.create_task(bot.run(stop))
        with telegram.lock:  # "from" is not an object: a hostile or broken update
            telegram.updates.append({"update_id": telegram._next_update,
                                     "message": {"chat": {"id": 99}, "from": "x", "text": "/status"}})
            telegram._next_update += 1
        telegram.say(42, "/help")  # its offset save fails
        telegram.say(42, "/status")
        deadline = time.monotonic() + 5
        while not any("equity" in t for t in telegram.texts(42)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 5)
        return task

    task = asyncio.run(main())
    assert task.exception() is None
    assert any("equity" in t for t in telegram.texts(42)), "the remote still answers"
    assert saved["offset"] >= 3
