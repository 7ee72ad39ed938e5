"""The backtest's state database: the real ``Store`` on a scratch SQLite file, driven in-line.

The engine talks to its store through aiosqlite, which runs every statement on a helper thread:
each call costs a thread hop (~100 us) and a cycle makes about ten of them even when nothing
trades -- 5,500 hourly cycles spent ~9 s on hops alone. A backtest has a single task and a
scratch database, so ``InlineConnection`` offers the part of aiosqlite's interface the store,
executor and risk gate use (``execute`` as awaitable or ``async with``, ``executemany``,
cursors with ``fetchone``/``fetchall``/``rowcount``/``lastrowid``) and runs each statement
directly on a ``sqlite3`` connection. The SQL, schema, migrations and transactions are the real
ones; only durability is dropped (``synchronous=OFF``, the rollback journal in memory, an
exclusive lock, and the store's per-write ``PRAGMA synchronous`` switches ignored): the file is
thrown away unless ``--db`` keeps it.

``BacktestStore`` also keeps ``bot_state`` in memory: the engine writes its last scan and the risk
gate its state about once a cycle and reads the resume request every cycle, three SQL statements
each. Nobody else can touch the file (exclusive lock), so the cache is the truth; the relaxed
writes (the ones a power cut may lose live) reach the file with the buffered equity rows at each
``flush`` (every 20 cycles and at the end), writes inside a transaction at once, as live.
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from core.store.state import Store, connect_sync

SHM = Path("/dev/shm")


class InlineCursor:
    """A ``sqlite3`` cursor with aiosqlite's interface; also what ``execute`` returns, so it is
    awaitable (itself) and an async context manager (closes it): one object per statement."""

    __slots__ = ("_cur",)

    def __init__(self, cur: sqlite3.Cursor | None) -> None:
        self._cur = cur

    def __await__(self):
        return self
        yield  # noqa: unreachable - makes this a generator: ``await`` returns the cursor at once

    async def __aenter__(self) -> "InlineCursor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._cur is not None:
            self._cur.close()

    async def fetchone(self) -> Any:
        return None if self._cur is None else self._cur.fetchone()

    async def fetchall(self) -> list:
        return [] if self._cur is None else self._cur.fetchall()

    async def close(self) -> None:
        if self._cur is not None:
            self._cur.close()

    @property
    def rowcount(self) -> int:
        return -1 if self._cur is None else self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return None if self._cur is None else self._cur.lastrowid

    def __aiter__(self) -> "InlineCursor":
        return self

    async def __anext__(self) -> Any:
        row = None if self._cur is None else self._cur.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


_MOOT = InlineCursor(None)
_GONE = object()  # a deleted key waiting for the next flush


class InlineConnection:
    """aiosqlite's calling convention over a plain ``sqlite3`` connection, no thread (see module doc)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements = 0
        self._moot: dict[str, bool] = {}  # per statement text: a durability switch (skipped)

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> InlineCursor:
        moot = self._moot.get(sql)
        if moot is None:
            moot = self._moot[sql] = sql.lstrip()[:18].upper() == "PRAGMA SYNCHRONOUS"
        if moot:
            return _MOOT  # scratch database: durability switches are moot
        self.statements += 1
        return InlineCursor(self.conn.execute(sql, parameters if type(parameters) is tuple else tuple(parameters)))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> InlineCursor:
        self.statements += 1
        return InlineCursor(self.conn.executemany(sql, rows))

    async def commit(self) -> None:
        self.conn.commit()

    async def close(self) -> None:
        self.conn.close()


class BacktestStore(Store):
    """The real ``Store`` with ``bot_state`` served from memory (see module doc); same SQL otherwise."""

    def __init__(self, db: InlineConnection, path: Path) -> None:
        super().__init__(db, path)  # type: ignore[arg-type]
        self._state: dict[str, str] = dict(db.conn.execute("SELECT key, value FROM bot_state"))
        self._unsaved: dict[str, object] = {}  # key -> JSON text, or _GONE: relaxed writes not yet in the file

    async def get_state(self, key: str, default: Any = None) -> Any:
        text = self._state.get(key)
        return default if text is None else json.loads(text)

    async def set_state(self, key: str, value: Any, conn: Any = None) -> None:
        text = json.dumps(value, default=str)  # now: the value as it is at this call
        self._state[key] = text
        if conn is None:
            self._unsaved[key] = text
        else:  # part of the caller's transaction: lands with it
            self._unsaved.pop(key, None)
            await self._put_state(conn, key, text)

    async def delete_state(self, key: str) -> None:
        if self._state.pop(key, None) is not None or key in self._unsaved:
            self._unsaved[key] = _GONE

    async def flush(self) -> None:
        if self._unsaved:
            rows, self._unsaved = self._unsaved, {}
            async with self._relaxed() as conn:
                for key, text in rows.items():
                    if text is _GONE:
                        await self._drop_state(conn, key)
                    else:
                        await self._put_state(conn, key, text)
        await super().flush()


def scratch_dir() -> Path | None:
    """Where the scratch database goes: RAM (/dev/shm) when the system has it, else the temp dir."""
    return SHM if SHM.is_dir() and SHM.stat().st_mode & 0o002 else None


@asynccontextmanager
async def backtest_store(keep: str | Path | None = None) -> AsyncIterator[Store]:
    """A fresh store for one backtest: a scratch file (deleted after) or ``keep`` (replaced if present)."""
    with tempfile.TemporaryDirectory(prefix="pitrader-backtest-", dir=scratch_dir()) as tmp:
        path = Path(keep) if keep is not None else Path(tmp) / "backtest.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        conn = connect_sync(path)  # the real schema and migrations
        conn.execute("PRAGMA synchronous=OFF")
        # one connection, nobody reading alongside: no WAL index to share, no locks to take per commit
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=MEMORY")
        store = BacktestStore(InlineConnection(conn), path)
        try:
            yield store
            await store.flush()
        finally:
            conn.close()
