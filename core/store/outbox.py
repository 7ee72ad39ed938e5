"""The notification outbox: events written with what caused them, delivered per channel later.

Each channel keeps its own cursor (the last event id it delivered or dropped) in ``bot_state``,
so one channel being down never holds back another, and a restart resumes after the last
delivered event instead of repeating it.
"""
from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiosqlite

from core.events import Event

CURSOR_KEY = "notify_cursor:"

# The schema migration that adds the outbox (appended to ``core.store.schema.MIGRATIONS``).
SCHEMA = """
CREATE TABLE outbox (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    level TEXT NOT NULL,
    key   TEXT NOT NULL DEFAULT '',
    text  TEXT NOT NULL,
    data  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX outbox_ts ON outbox(ts_ms);
CREATE TABLE notify_sent (
    channel  TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (channel, event_id)
) WITHOUT ROWID;
"""


async def connect(path: str | Path) -> aiosqlite.Connection:
    """A connection of the notification sender's own (WAL lets it read while the engine writes).
    ``synchronous=NORMAL``: a delivery record lost in a power cut only means a message is sent
    again (delivery is at least once)."""
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    await conn.execute("PRAGMA busy_timeout=5000")
    await conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection) -> AsyncIterator[None]:
    """One write transaction on a connection of its own (``BEGIN IMMEDIATE``): committed at the end
    of the block, rolled back if it raises."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def _event(row) -> Event:
    return Event(kind=row[1], text=row[5], ts_ms=row[2], level=row[3], key=row[4], data=json.loads(row[6]), id=row[0])


async def add_event(conn: aiosqlite.Connection, event: Event) -> int:
    """Inside the caller's transaction: the event commits or rolls back with its cause."""
    cur = await conn.execute(
        "INSERT INTO outbox (ts_ms, kind, level, key, text, data) VALUES (?, ?, ?, ?, ?, ?)",
        (event.ts_ms, event.kind, event.level, event.key, event.text, event.data_json()))
    return int(cur.lastrowid)


async def last_event_id(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT COALESCE(MAX(id), 0) FROM outbox") as cur:
        return int((await cur.fetchone())[0])


async def get_cursor(conn: aiosqlite.Connection, channel: str) -> int | None:
    async with conn.execute("SELECT value FROM bot_state WHERE key = ?", (CURSOR_KEY + channel,)) as cur:
        row = await cur.fetchone()
    return None if row is None else int(json.loads(row[0]))


async def set_cursor(conn: aiosqlite.Connection, channel: str, event_id: int) -> None:
    await conn.execute("INSERT INTO bot_state (key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (CURSOR_KEY + channel, json.dumps(event_id)))


async def prune(conn: aiosqlite.Connection, keep_after_ms: int, below_id: int) -> int:
    """Forget delivered events older than ``keep_after_ms`` (every channel is past ``below_id``)."""
    cur = await conn.execute("DELETE FROM outbox WHERE ts_ms < ? AND id <= ?", (keep_after_ms, below_id))
    return cur.rowcount


# --- per-channel delivery records --------------------------------------------------------------
# ``notify_sent`` holds what a channel delivered (or merged into a delivery, or filtered out)
# above its floor cursor, so held-back events (a burst being merged) never block later ones.

async def pending(conn: aiosqlite.Connection, channel: str, limit: int = 500) -> list[Event]:
    floor = await get_cursor(conn, channel) or 0
    async with conn.execute(
            "SELECT id, kind, ts_ms, level, key, text, data FROM outbox o WHERE o.id > ? AND NOT EXISTS "
            "(SELECT 1 FROM notify_sent s WHERE s.channel = ? AND s.event_id = o.id) ORDER BY o.id LIMIT ?",
            (floor, channel, limit)) as cur:
        return [_event(r) for r in await cur.fetchall()]


async def mark_sent(conn: aiosqlite.Connection, channel: str, ids: list[int]) -> None:
    """Record a delivery and move the channel's floor past every id now done (one transaction)."""
    async with transaction(conn):
        await conn.executemany("INSERT OR IGNORE INTO notify_sent (channel, event_id) VALUES (?, ?)",
                               [(channel, i) for i in ids])
        floor = await get_cursor(conn, channel) or 0
        async with conn.execute(
                "SELECT MIN(o.id) FROM outbox o WHERE o.id > ? AND NOT EXISTS "
                "(SELECT 1 FROM notify_sent s WHERE s.channel = ? AND s.event_id = o.id)", (floor, channel)) as cur:
            first_open = (await cur.fetchone())[0]
        new_floor = (first_open - 1) if first_open is not None else await last_event_id(conn)
        if new_floor > floor:
            await set_cursor(conn, channel, new_floor)
            await conn.execute("DELETE FROM notify_sent WHERE channel = ? AND event_id <= ?", (channel, new_floor))


async def start_channel(conn: aiosqlite.Connection, channel: str) -> bool:
    """A channel seen for the first time starts at the newest event (no history flood); returns
    True when it was new."""
    if await get_cursor(conn, channel) is not None:
        return False
    await set_cursor(conn, channel, await last_event_id(conn))
    return True


async def min_cursor(conn: aiosqlite.Connection, channels: list[str]) -> int:
    values = [await get_cursor(conn, c) or 0 for c in channels]
    return min(values) if values else await last_event_id(conn)
