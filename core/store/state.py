"""Durable state in SQLite (WAL): orders, fills, positions, equity snapshots, bot state.

One database file per mode (``paper.db``, ``live.db``) so simulated positions can never be
mistaken for real ones. ``fills`` is append-only (triggers refuse UPDATE/DELETE); the tax ledger
is derived from it. Order and fill writes use ``synchronous=FULL``; snapshots are batched.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import aiosqlite

from core.models import Fill, Order, OrderStatus, Position

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE orders (
        client_id   TEXT PRIMARY KEY,
        exchange_id TEXT,
        symbol      TEXT NOT NULL,
        side        TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        type        TEXT NOT NULL CHECK (type IN ('market', 'limit')),
        amount      TEXT NOT NULL,
        price       TEXT,
        intent      TEXT NOT NULL CHECK (intent IN ('entry', 'exit')),
        position_id INTEGER,
        status      TEXT NOT NULL,
        filled      TEXT NOT NULL DEFAULT '0',
        average     TEXT,
        reason      TEXT NOT NULL DEFAULT '',
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    CREATE INDEX orders_status ON orders(status);
    CREATE TABLE order_events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id TEXT NOT NULL REFERENCES orders(client_id),
        ts_ms     INTEGER NOT NULL,
        status    TEXT NOT NULL,
        detail    TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE fills (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_id   TEXT NOT NULL,
        ts_ms      INTEGER NOT NULL,
        symbol     TEXT NOT NULL,
        side       TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        quantity   TEXT NOT NULL,
        price      TEXT NOT NULL,
        fee        TEXT NOT NULL DEFAULT '0',
        fee_asset  TEXT,
        order_id   TEXT,
        source     TEXT NOT NULL CHECK (source IN ('bot', 'import')),
        reverses   INTEGER REFERENCES fills(id),
        created_ms INTEGER NOT NULL,
        UNIQUE (source, symbol, trade_id)
    );
    CREATE INDEX fills_ts ON fills(ts_ms);
    CREATE TRIGGER fills_no_update BEFORE UPDATE ON fills
        BEGIN SELECT RAISE(ABORT, 'fills are append-only: add a reversal entry instead'); END;
    CREATE TRIGGER fills_no_delete BEFORE DELETE ON fills
        BEGIN SELECT RAISE(ABORT, 'fills are append-only: add a reversal entry instead'); END;
    CREATE TABLE positions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        symbol      TEXT NOT NULL,
        strategy    TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('open', 'closing', 'closed')),
        amount      TEXT NOT NULL,
        entry_price TEXT NOT NULL,
        stop        TEXT NOT NULL,
        target      TEXT NOT NULL,
        trail_pct   TEXT NOT NULL DEFAULT '0',
        highest     TEXT NOT NULL DEFAULT '0',
        entry_fees  TEXT NOT NULL DEFAULT '0',
        score       REAL NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        opened_ms   INTEGER NOT NULL,
        closed_ms   INTEGER,
        exit_price  TEXT,
        exit_reason TEXT,
        exit_fees   TEXT NOT NULL DEFAULT '0',
        pnl         TEXT
    );
    CREATE INDEX positions_status ON positions(status);
    CREATE TABLE equity (
        ts_ms  INTEGER PRIMARY KEY,
        equity TEXT NOT NULL,
        cash   TEXT NOT NULL
    );
    CREATE TABLE bot_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def _dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before."""
    conn.execute("PRAGMA journal_mode=WAL")
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise RuntimeError(f"database schema v{found} is newer than this pitrader (v{SCHEMA_VERSION}); upgrade pitrader")
    for version in range(found, SCHEMA_VERSION):
        with conn:  # one transaction per step: a crash mid-migration leaves the old version intact
            conn.executescript("BEGIN;" + MIGRATIONS[version] + f"; PRAGMA user_version={version + 1};")
    return found


def connect_sync(path: str | Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the schema migrated (CLI commands such as `tax`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA synchronous=FULL")
    migrate(conn)
    return conn


def db_path(state_dir: Path, mode: str) -> Path:
    return Path(state_dir) / f"{mode}.db"


def fill_from_row(row: sqlite3.Row | tuple) -> Fill:
    (_id, trade_id, ts_ms, symbol, side, qty, price, fee, fee_asset, order_id, source) = row[:11]
    return Fill(trade_id, ts_ms, symbol, side, Decimal(qty), Decimal(price), Decimal(fee), fee_asset, order_id, source)


FILL_COLUMNS = "id, trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id, source"
POSITION_COLUMNS = ("id, symbol, strategy, status, amount, entry_price, stop, target, trail_pct, highest, entry_fees, "
             "score, reason, opened_ms, closed_ms, exit_price, exit_reason, exit_fees, pnl")


def position_from_row(row: tuple) -> Position:
    (pid, symbol, strategy, status, amount, entry, stop, target, trail, highest, entry_fees, score, reason,
     opened, closed, exit_price, exit_reason, exit_fees, pnl) = row
    return Position(symbol=symbol, strategy=strategy, amount=Decimal(amount), entry_price=Decimal(entry),
                    stop=Decimal(stop), target=Decimal(target), opened_ms=opened, id=pid,
                    trail_pct=Decimal(trail), highest=Decimal(highest), entry_fees=Decimal(entry_fees),
                    score=score, reason=reason, status=status, closed_ms=closed, exit_price=_dec(exit_price),
                    exit_reason=exit_reason, exit_fees=Decimal(exit_fees), pnl=_dec(pnl))


def _order(row: tuple) -> Order:
    (cid, eid, symbol, side, typ, amount, price, intent, pos_id, status, filled, average, reason, c_ms, u_ms) = row
    return Order(client_id=cid, symbol=symbol, side=side, type=typ, amount=Decimal(amount), price=_dec(price),
                 intent=intent, position_id=pos_id, status=OrderStatus(status), exchange_id=eid,
                 filled=Decimal(filled), average=_dec(average), reason=reason, created_ms=c_ms, updated_ms=u_ms)


class Store:
    """Async access to the state database. Use ``async with Store.open(path) as store``."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._pending_equity: list[tuple[int, str, str]] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path) -> AsyncIterator["Store"]:
        connect_sync(path).close()  # migrations run once, synchronously, before anything else
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA synchronous=FULL")
            store = cls(db, Path(path))
            yield store
            await store.flush()
        finally:
            await db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One durable transaction (synchronous=FULL): all of it lands or none of it."""
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        else:
            await self.db.execute("COMMIT")

    # --- orders ---------------------------------------------------------------------------------
    async def save_order(self, order: Order, detail: str = "", conn: aiosqlite.Connection | None = None) -> None:
        """Insert or update an order and log the state it is in; call inside ``transaction()``
        or alone (then it is its own transaction)."""
        if conn is None:
            async with self.transaction() as c:
                return await self.save_order(order, detail, c)
        await conn.execute(
            "INSERT INTO orders (client_id, exchange_id, symbol, side, type, amount, price, intent, position_id,"
            " status, filled, average, reason, created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(client_id) DO UPDATE SET exchange_id=excluded.exchange_id, status=excluded.status,"
            " filled=excluded.filled, average=excluded.average, position_id=excluded.position_id,"
            " reason=excluded.reason, updated_ms=excluded.updated_ms",
            (order.client_id, order.exchange_id, order.symbol, order.side, order.type, str(order.amount),
             None if order.price is None else str(order.price), order.intent, order.position_id,
             order.status.value, str(order.filled), None if order.average is None else str(order.average),
             order.reason, order.created_ms, order.updated_ms or order.created_ms))
        await conn.execute("INSERT INTO order_events (client_id, ts_ms, status, detail) VALUES (?,?,?,?)",
                           (order.client_id, order.updated_ms or order.created_ms, order.status.value, detail))

    async def get_order(self, client_id: str) -> Order | None:
        async with self.db.execute("SELECT * FROM orders WHERE client_id=?", (client_id,)) as cur:
            row = await cur.fetchone()
        return _order(tuple(row)) if row else None

    async def open_orders(self) -> list[Order]:
        final = tuple(s.value for s in OrderStatus if s.is_final)
        q = f"SELECT * FROM orders WHERE status NOT IN ({','.join('?' * len(final))}) ORDER BY created_ms"
        async with self.db.execute(q, final) as cur:
            return [_order(tuple(r)) for r in await cur.fetchall()]

    # --- fills ----------------------------------------------------------------------------------
    async def add_fill(self, fill: Fill, now_ms: int, conn: aiosqlite.Connection) -> bool:
        """Record a fill once (inside the caller's transaction); False if it was already there."""
        cur = await conn.execute(
            "INSERT OR IGNORE INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id,"
            " source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (fill.trade_id, fill.ts_ms, fill.symbol, fill.side, str(fill.quantity), str(fill.price), str(fill.fee),
             fill.fee_asset, fill.order_id, fill.source, now_ms))
        return cur.rowcount == 1

    async def fills(self, order_id: str | None = None) -> list[Fill]:
        q, p = f"SELECT {FILL_COLUMNS} FROM fills", ()
        if order_id is not None:
            q, p = q + " WHERE order_id=?", (order_id,)
        async with self.db.execute(q + " ORDER BY ts_ms, id", p) as cur:
            return [fill_from_row(tuple(r)) for r in await cur.fetchall()]

    # --- positions ------------------------------------------------------------------------------
    async def save_position(self, pos: Position, conn: aiosqlite.Connection | None = None) -> Position:
        if conn is None:
            async with self.transaction() as c:
                return await self.save_position(pos, c)
        vals = (pos.symbol, pos.strategy, pos.status, str(pos.amount), str(pos.entry_price), str(pos.stop),
                str(pos.target), str(pos.trail_pct), str(pos.highest), str(pos.entry_fees), pos.score, pos.reason,
                pos.opened_ms, pos.closed_ms, None if pos.exit_price is None else str(pos.exit_price),
                pos.exit_reason, str(pos.exit_fees), None if pos.pnl is None else str(pos.pnl))
        cols = POSITION_COLUMNS.split(", ")[1:]
        if pos.id is None:
            cur = await conn.execute(
                f"INSERT INTO positions ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})", vals)
            pos.id = cur.lastrowid
        else:
            await conn.execute(f"UPDATE positions SET {', '.join(c + '=?' for c in cols)} WHERE id=?", (*vals, pos.id))
        return pos

    async def positions(self, status: str | None = None) -> list[Position]:
        q, p = f"SELECT {POSITION_COLUMNS} FROM positions", ()
        if status == "open":
            q += " WHERE status IN ('open', 'closing')"
        elif status is not None:
            q, p = q + " WHERE status=?", (status,)
        async with self.db.execute(q + " ORDER BY id", p) as cur:
            return [position_from_row(tuple(r)) for r in await cur.fetchall()]

    # --- equity and state -----------------------------------------------------------------------
    def record_equity(self, ts_ms: int, equity: Decimal, cash: Decimal) -> None:
        """Buffered: snapshots are many and cheap to lose, the SD card is slow."""
        self._pending_equity.append((ts_ms, str(equity), str(cash)))

    @asynccontextmanager
    async def _relaxed(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction at synchronous=NORMAL: for state that is cheap to lose in a power cut
        (snapshots, last scan), sparing the SD card an fsync. Orders and fills stay FULL."""
        await self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            async with self.transaction() as conn:
                yield conn
        finally:
            await self.db.execute("PRAGMA synchronous=FULL")

    async def flush(self) -> None:
        if not self._pending_equity:
            return
        rows, self._pending_equity = self._pending_equity, []
        async with self._relaxed() as conn:
            await conn.executemany("INSERT OR REPLACE INTO equity (ts_ms, equity, cash) VALUES (?,?,?)", rows)

    async def equity_curve(self) -> list[tuple[int, Decimal]]:
        await self.flush()
        async with self.db.execute("SELECT ts_ms, equity FROM equity ORDER BY ts_ms") as cur:
            return [(ts, Decimal(e)) for ts, e in await cur.fetchall()]

    async def get_state(self, key: str, default: Any = None) -> Any:
        async with self.db.execute("SELECT value FROM bot_state WHERE key=?", (key,)) as cur:
            row = await cur.fetchone()
        return default if row is None else json.loads(row[0])

    async def set_state(self, key: str, value: Any, conn: aiosqlite.Connection | None = None) -> None:
        """Inside the caller's transaction when given one (its durability), else relaxed."""
        if conn is None:
            async with self._relaxed() as c:
                return await self.set_state(key, value, c)
        await conn.execute("INSERT OR REPLACE INTO bot_state (key, value) VALUES (?, ?)",
                           (key, json.dumps(value, default=str)))
