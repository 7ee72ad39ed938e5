"""The outbox sender against a loopback Telegram Bot API and webhook receiver over real HTTP."""
from __future__ import annotations

import asyncio
import logging

import pytest

from core.events import KINDS, Event
from core.notify.channels import TelegramChannel, WebhookChannel
from core.notify.sender import Sender
from core.store.state import Store
from tests.support.http_fakes import FakeTelegram, WebhookReceiver

TOKEN = "123456:TEST-token-abcdefghijklmnop"


@pytest.fixture
def telegram():
    with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
def hook():
    with WebhookReceiver() as fake:
        yield fake


def run(coro):
    return asyncio.run(coro)


def ev(kind: str, text: str, ts_ms: int = 1_700_000_000_000, **kw) -> Event:
    return Event(kind, text, ts_ms, **kw)


async def _add(db, events):
    async with Store.open(db) as store:
        store.outbox_enabled = True
        for e in events:
            await store.add_event(e)


class Clock:
    """A monotonic clock the test moves (merge windows, backoff) while HTTP stays real."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _sender(db, channels, clock=None, **kw) -> Sender:
    async with Store.open(db):  # the schema exists before the sender reads it
        pass
    s = Sender(db, channels, min_interval_s=0, clock=clock or Clock(), **kw)
    await s.open()
    return s


def test_every_event_kind_reaches_telegram_and_the_webhook(tmp_path, telegram, hook):
    db = tmp_path / "paper.db"

    async def main():
        s = await _sender(db, [TelegramChannel(TOKEN, "42", telegram.url), WebhookChannel(hook.url + "/hook")],
                          max_per_minute=100)
        await _add(db, [ev(k, f"{k} happened", key=k) for k in KINDS])
        await s.deliver_once()
        await s.close()

    run(main())
    assert sorted(telegram.texts("42")) == sorted(
        ("" if KINDS[k] == "info" else f"[{KINDS[k].upper()}] ") + f"{k} happened" for k in KINDS)
    bodies = hook.bodies()
    assert sorted(b["kind"] for b in bodies) == sorted(KINDS)
    assert all(set(b) == {"id", "ids", "kind", "level", "ts_ms", "count", "text", "data"} for b in bodies)
    assert len({b["id"] for b in bodies}) == len(KINDS)


def test_a_burst_of_fifty_errors_becomes_one_message_with_a_count(tmp_path, hook):
    db = tmp_path / "paper.db"

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url)])
        await _add(db, [ev("problem", "exchange unreachable", ts_ms=1_700_000_000_000 + i * 1000, key="net")
                        for i in range(50)] + [ev("exit_fill", "SELL BTC/USDT", key="pos-1")])
        await s.deliver_once()
        await s.close()

    run(main())
    bodies = hook.bodies()
    assert [(b["kind"], b["count"]) for b in bodies] == [("problem", 50), ("exit_fill", 1)]
    assert "x50 since" in bodies[0]["text"]


def test_a_key_sent_a_moment_ago_is_held_and_merged(tmp_path, hook):
    db = tmp_path / "paper.db"
    clock = Clock()

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url)], clock=clock, merge_window_s=60)
        await _add(db, [ev("problem", "timeout", key="net")])
        assert await s.deliver_once() == 1
        await _add(db, [ev("problem", "timeout", key="net") for _ in range(7)] + [ev("entry_fill", "BUY", key="p2")])
        assert await s.deliver_once() == 1  # the fill goes, the repeats wait for the window
        clock.t += 61
        assert await s.deliver_once() == 1
        await s.close()

    run(main())
    assert [(b["kind"], b["count"]) for b in hook.bodies()] == [("problem", 1), ("entry_fill", 1), ("problem", 7)]


def test_an_outage_loses_nothing_and_duplicates_nothing(tmp_path, hook, caplog):
    db = tmp_path / "paper.db"
    clock = Clock()

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url)], clock=clock)
        hook.down = True
        await _add(db, [ev("entry_fill", f"fill {i}", key=f"f{i}") for i in range(5)])
        for _ in range(4):  # retries back off while the receiver is down
            assert await s.deliver_once() == 0
            clock.t += 400
        hook.down = False
        await _add(db, [ev("exit_fill", "fill 5", key="f5")])
        await s.deliver_once()
        await s.close()
        s2 = await _sender(db, [WebhookChannel(hook.url)], clock=clock)  # a restart: nothing repeats
        assert await s2.deliver_once() == 0
        await s2.close()

    with caplog.at_level(logging.INFO):
        run(main())
    assert [b["text"] for b in hook.bodies()] == [f"fill {i}" for i in range(6)]
    failures = [r for r in caplog.records if "delivery failed" in r.getMessage()]
    assert len(failures) == 1  # said once, not once per retry
    assert any("delivering again" in r.getMessage() for r in caplog.records)


def test_telegram_rate_limit_is_respected(tmp_path, telegram):
    db = tmp_path / "paper.db"
    clock = Clock()
    telegram.rate_limit_next, telegram.retry_after = 1, 30

    async def main():
        s = await _sender(db, [TelegramChannel(TOKEN, "42", telegram.url)], clock=clock)
        await _add(db, [ev("entry_fill", "BUY ETH/USDT", key="p1")])
        assert await s.deliver_once() == 0
        clock.t += 10
        assert await s.deliver_once() == 0  # still inside retry_after: not even tried
        clock.t += 25
        assert await s.deliver_once() == 1
        await s.close()

    run(main())
    assert telegram.texts("42") == ["BUY ETH/USDT"]


def test_filters_by_kind_and_level(tmp_path, hook):
    db = tmp_path / "paper.db"

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url, events=("exit_fill", "problem"), min_level="warning")])
        await _add(db, [ev("entry_fill", "in", key="a"), ev("exit_fill", "out", key="b", level="warning"),
                        ev("exit_fill", "out quietly", key="c"), ev("problem", "bad", key="d"),
                        ev("health", "hot", key="e")])
        await s.deliver_once()
        assert await s.deliver_once() == 0
        await s.close()

    run(main())
    assert [b["text"] for b in hook.bodies()] == ["[WARNING] out", "[ERROR] bad"]


def test_discord_and_ntfy_bodies(tmp_path, hook):
    db = tmp_path / "paper.db"

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url + "/discord", "discord", name="discord"),
                               WebhookChannel(hook.url + "/ntfy", "ntfy", name="ntfy")])
        await _add(db, [ev("halt", "daily loss limit reached", key="daily")])
        await s.deliver_once()
        await s.close()

    run(main())
    by_path = {r.path: r for r in hook.received}
    assert by_path["/discord"].json() == {"content": "[WARNING] daily loss limit reached"}
    ntfy = by_path["/ntfy"]
    assert ntfy.body.decode() == "[WARNING] daily loss limit reached"
    assert ntfy.headers["Priority"] == "4" and ntfy.headers["Title"] == "pitrader halt"


def test_a_bad_token_is_said_once_and_never_shown(tmp_path, telegram, caplog):
    db = tmp_path / "paper.db"
    clock = Clock()
    wrong = "999999:WRONG-token-abcdefghijklmnop"

    async def main():
        s = await _sender(db, [TelegramChannel(wrong, "42", telegram.url)], clock=clock)
        await _add(db, [ev("problem", "x", key="x")])
        for _ in range(3):
            await s.deliver_once()
            clock.t += 301
        await s.close()
        telegram.refuse = True
        s = await _sender(db, [TelegramChannel(wrong, "42", telegram.url)], clock=clock)
        await s.deliver_once()
        await s.close()

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert telegram.bad_token_calls == 3
    errors = [r for r in caplog.records if "refuses our messages" in r.getMessage()]
    assert len(errors) == 1 and "check its token" in errors[0].getMessage()
    assert all(wrong not in r.getMessage() and "WRONG" not in r.getMessage() for r in caplog.records)


def _outbox_ids(db) -> list[int]:
    import sqlite3
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT id FROM outbox ORDER BY id")]


def test_delivered_events_older_than_keep_days_are_pruned(tmp_path, hook):
    """Months of service must not grow the outbox: what every channel delivered goes after keep_days;
    what is still pending stays however old it is."""
    db = tmp_path / "paper.db"
    old, now = 1_700_000_000_000, 1_700_000_000_000 + 31 * 86_400_000

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url)], max_per_minute=100, keep_days=30, wall_ms=lambda: now)
        await _add(db, [ev("entry_fill", f"BUY {i}", ts_ms=old, key=str(i)) for i in range(3)]
                   + [ev("exit_fill", "SELL recent", ts_ms=now, key="r")])
        await s.deliver_once()
        await _add(db, [ev("problem", "old but not yet delivered", ts_ms=old, key="p")])
        pruned = await s.prune()
        await s.close()
        return pruned

    assert run(main()) == 3
    remaining = _outbox_ids(db)
    assert len(remaining) == 2, "the recent delivered event and the undelivered old one stay"
    assert len(hook.bodies()) == 4


def test_a_digest_of_several_kinds_says_digest(tmp_path, hook):
    db = tmp_path / "paper.db"

    async def main():
        s = await _sender(db, [WebhookChannel(hook.url)], max_per_minute=2)
        await _add(db, [ev("entry_fill", "BUY A", key="a"), ev("exit_fill", "SELL B", key="b"),
                        ev("problem", "broken", key="c")])
        await s.deliver_once()
        await s.close()

    run(main())
    bodies = hook.bodies()
    assert [b["kind"] for b in bodies] == ["entry_fill", "digest"]
    assert bodies[1]["count"] == 2 and bodies[1]["level"] == "error"
    assert bodies[1]["data"] == {"kinds": {"exit_fill": 1, "problem": 1}}
