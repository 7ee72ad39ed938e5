"""Durable state in SQLite (WAL): orders, fills, positions, equity snapshots, bot state.

One database file per mode (``paper.db``, ``live.db``) so simulated positions can never be
mistaken for real ones. ``fills`` is append-only (triggers refuse UPDATE/DELETE); the tax ledger
is derived from it. Order and fill writes use ``synchronous=FULL``; snapshots are batched.

This package is the only place with SQL: the executors, commands and the tax ledger call the
methods here (async ``Store`` for the service; ``core.store.readonly`` and ``core.store.ledger_queries``
for the synchronous commands). The schema and its checks live in ``core.store.schema``.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import aiosqlite

from core.events import Event
from core.models import Fill, Order, OrderStatus, Position, PositionStatus
from core.store import outbox
from core.store.schema import SCHEMA_VERSION, check_file, connect_sync, migrate  # noqa: F401 - re-exported


def _dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


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
                    score=score, reason=reason, status=PositionStatus(status), closed_ms=closed, exit_price=_dec(exit_price),
                    exit_reason=exit_reason, exit_fees=Decimal(exit_fees), pnl=_dec(pnl))


ORDER_COLUMNS = ("client_id, exchange_id, symbol, side, type, amount, price, intent, position_id, status, filled, "
                 "average, reason, created_ms, updated_ms")


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
        self.outbox_enabled = False  # the service turns it on when a notification channel is configured
        self._pending_equity: list[tuple[int, str, str]] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, path: str | Path) -> AsyncIterator["Store"]:
        connect_sync(path).close()  # checks and migrations run once, synchronously, before anything else
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA synchronous=FULL")
            store = cls(db, Path(path))
            yield store
            await store.flush()
        finally:
            await db.close()

    def transaction(self) -> "_Transaction":
        """One durable transaction (synchronous=FULL): all of it lands or none of it
        (``async with store.transaction() as conn``).

        A failed COMMIT (disk full, I/O error) is rolled back too, so the connection is never
        left inside a transaction that the next ``BEGIN`` would trip over."""
        return _Transaction(self)

    async def _rollback(self) -> None:
        try:
            await self.db.execute("ROLLBACK")
        except sqlite3.OperationalError:  # SQLite already rolled it back (no transaction is active)
            pass

    async def _all(self, sql: str, params: tuple = ()) -> list:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: tuple = ()) -> Any:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

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
        row = await self._one(f"SELECT {ORDER_COLUMNS} FROM orders WHERE client_id=?", (client_id,))
        return _order(tuple(row)) if row else None

    async def open_orders(self) -> list[Order]:
        final = tuple(s.value for s in OrderStatus if s.is_final)
        q = f"SELECT {ORDER_COLUMNS} FROM orders WHERE status NOT IN ({','.join('?' * len(final))}) ORDER BY created_ms"
        return [_order(tuple(r)) for r in await self._all(q, final)]

    async def orders_of(self, position_id: int) -> list[Order]:
        """A position's orders, oldest first."""
        q = f"SELECT {ORDER_COLUMNS} FROM orders WHERE position_id=? ORDER BY created_ms"
        return [_order(tuple(r)) for r in await self._all(q, (position_id,))]

    async def exit_attempts(self, position_id: int) -> int:
        """How many exit orders a position has had (the next one's attempt number is this + 1)."""
        row = await self._one("SELECT COUNT(*) FROM orders WHERE position_id=? AND intent='exit'", (position_id,))
        return row[0]

    async def order_for_trade(self, symbol: str, order_ref: str) -> Order | None:
        """Our order that an exchange trade names (by exchange order id or our client id)."""
        row = await self._one(f"SELECT {ORDER_COLUMNS} FROM orders WHERE symbol=? AND (exchange_id=? OR client_id=?)",
                              (symbol, order_ref, order_ref))
        return _order(tuple(row)) if row else None

    async def order_events(self, client_id: str) -> list[tuple[int, str, str]]:
        """An order's recorded states, oldest first: (ts_ms, status, detail)."""
        return [tuple(r) for r in await self._all(
            "SELECT ts_ms, status, detail FROM order_events WHERE client_id=? ORDER BY id", (client_id,))]

    # --- fills ----------------------------------------------------------------------------------
    async def add_fill(self, fill: Fill, now_ms: int, conn: aiosqlite.Connection) -> int | None:
        """Record a fill once (inside the caller's transaction): its row id, or None if it was already there."""
        cur = await conn.execute(
            "INSERT OR IGNORE INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id,"
            " source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (fill.trade_id, fill.ts_ms, fill.symbol, fill.side, str(fill.quantity), str(fill.price), str(fill.fee),
             fill.fee_asset, fill.order_id, fill.source, now_ms))
        return cur.lastrowid if cur.rowcount == 1 else None

    async def fills(self, order_id: str | None = None) -> list[Fill]:
        q, p = f"SELECT {FILL_COLUMNS} FROM fills", ()
        if order_id is not None:
            q, p = q + " WHERE order_id=?", (order_id,)
        return [fill_from_row(tuple(r)) for r in await self._all(q + " ORDER BY ts_ms, id", p)]

    async def bot_fills(self) -> list[Fill]:
        """Every fill the bot made, in the order recorded (wallet and holdings are sums over these)."""
        return [fill_from_row(tuple(r)) for r in await self._all(
            f"SELECT {FILL_COLUMNS} FROM fills WHERE source='bot' ORDER BY id")]

    async def position_fills(self, position_id: int,
                             conn: aiosqlite.Connection | None = None) -> list[tuple[int, str, Fill]]:
        """A position's fills as ``(row id, order intent, fill)``, by time then id."""
        cols = ", ".join("f." + c for c in FILL_COLUMNS.split(", "))
        q = (f"SELECT o.intent, {cols} FROM fills f JOIN orders o ON f.order_id = o.client_id "
             "WHERE o.position_id = ? ORDER BY f.ts_ms, f.id")
        async with (conn or self.db).execute(q, (position_id,)) as cur:
            return [(r[1], r[0], fill_from_row(tuple(r[1:]))) for r in await cur.fetchall()]

    async def recorded_quantity(self, client_id: str) -> Decimal:
        """Base quantity of the fills recorded for one order."""
        rows = await self._all("SELECT quantity FROM fills WHERE order_id=?", (client_id,))
        return sum((Decimal(r[0]) for r in rows), Decimal(0))

    async def last_fill_ts(self, symbol: str) -> int | None:
        row = await self._one("SELECT MAX(ts_ms) FROM fills WHERE source='bot' AND symbol=?", (symbol,))
        return row[0] if row and row[0] is not None else None

    async def has_fill(self, symbol: str, trade_id: str) -> bool:
        """Whether the bot already recorded this exchange trade."""
        return await self._one("SELECT 1 FROM fills WHERE source='bot' AND symbol=? AND trade_id=?",
                               (symbol, trade_id)) is not None

    # --- positions ------------------------------------------------------------------------------
    async def save_position(self, pos: Position, conn: aiosqlite.Connection | None = None) -> Position:
        if conn is None:
            async with self.transaction() as c:
                return await self.save_position(pos, c)
        vals = (pos.symbol, pos.strategy, PositionStatus(pos.status).value, str(pos.amount), str(pos.entry_price),
                str(pos.stop), str(pos.target), str(pos.trail_pct), str(pos.highest), str(pos.entry_fees), pos.score,
                pos.reason, pos.opened_ms, pos.closed_ms, None if pos.exit_price is None else str(pos.exit_price),
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
            q, p = q + " WHERE status=?", (PositionStatus(status).value,)
        return [position_from_row(tuple(r)) for r in await self._all(q + " ORDER BY id", p)]

    async def position(self, position_id: int) -> Position | None:
        row = await self._one(f"SELECT {POSITION_COLUMNS} FROM positions WHERE id=?", (position_id,))
        return position_from_row(tuple(row)) if row else None

    async def save_highs(self, highs: list[tuple[int, Decimal]]) -> None:
        """Raised trailing-stop highs of open positions, ``(position id, highest)``, in one transaction."""
        async with self.transaction() as conn:
            for pid, high in highs:
                await conn.execute("UPDATE positions SET highest=? WHERE id=?", (str(high), pid))

    async def adopt(self, positions: list[Position], orders: list[Order], reserve_position_id: int = 0,
                    closing: dict[int, str] | None = None) -> None:
        """Rebuild from the exchange (``core.trading.rebuild``): positions with the ids their client
        order ids carry, their orders, and the id counter moved past every id the exchange has seen
        (a new position must never reuse a client order id), in one transaction."""
        cols = POSITION_COLUMNS.split(", ")
        async with self.transaction() as conn:
            for pos in positions:
                await conn.execute(f"INSERT INTO positions ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                                   (pos.id, pos.symbol, pos.strategy, PositionStatus(pos.status).value,
                                    str(pos.amount), str(pos.entry_price), str(pos.stop), str(pos.target),
                                    str(pos.trail_pct), str(pos.highest), str(pos.entry_fees), pos.score,
                                    pos.reason, pos.opened_ms, pos.closed_ms, None, pos.exit_reason,
                                    str(pos.exit_fees), None))
            for order in orders:
                await self.save_order(order, "rebuilt from the exchange's records", conn)
            for pid, reason in (closing or {}).items():  # an exit order was placed: the position is closing
                await conn.execute("UPDATE positions SET status='closing', exit_reason=? WHERE id=? AND status='open'",
                                   (reason, pid))
            if reserve_position_id:
                async with conn.execute("SELECT seq FROM sqlite_sequence WHERE name='positions'") as cur:
                    row = await cur.fetchone()
                if row is None:  # no position was ever inserted (the table has no unique name column)
                    await conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('positions', ?)",
                                       (reserve_position_id,))
                elif row[0] < reserve_position_id:
                    await conn.execute("UPDATE sqlite_sequence SET seq=? WHERE name='positions'",
                                       (reserve_position_id,))

    # --- equity and state -----------------------------------------------------------------------
    def record_equity(self, ts_ms: int, equity: Decimal, cash: Decimal) -> None:
        """Buffered: snapshots are many and cheap to lose, the SD card is slow."""
        self._pending_equity.append((ts_ms, str(equity), str(cash)))

    def _relaxed(self) -> "_Transaction":
        """One transaction at synchronous=NORMAL: for state that is cheap to lose in a power cut
        (snapshots, last scan), sparing the SD card an fsync. Orders and fills stay FULL."""
        return _Transaction(self, relaxed=True)

    async def flush(self) -> None:
        if not self._pending_equity:
            return
        rows, self._pending_equity = self._pending_equity, []
        async with self._relaxed() as conn:
            await conn.executemany("INSERT OR REPLACE INTO equity (ts_ms, equity, cash) VALUES (?,?,?)", rows)

    async def equity_curve(self) -> list[tuple[int, Decimal]]:
        await self.flush()
        return [(ts, Decimal(e)) for ts, e in await self._all("SELECT ts_ms, equity FROM equity ORDER BY ts_ms")]

    async def get_state(self, key: str, default: Any = None) -> Any:
        row = await self._one("SELECT value FROM bot_state WHERE key=?", (key,))
        return default if row is None else json.loads(row[0])

    async def set_state(self, key: str, value: Any, conn: aiosqlite.Connection | None = None) -> None:
        """Inside the caller's transaction when given one (its durability), else relaxed."""
        if conn is None:
            async with self._relaxed() as c:
                return await self.set_state(key, value, c)
        await self._put_state(conn, key, json.dumps(value, default=str))

    @staticmethod
    async def _put_state(conn, key: str, text: str) -> None:
        await conn.execute("INSERT OR REPLACE INTO bot_state (key, value) VALUES (?, ?)", (key, text))

    @staticmethod
    async def _drop_state(conn, key: str) -> None:
        await conn.execute("DELETE FROM bot_state WHERE key=?", (key,))

    async def add_event(self, event: Event, conn: aiosqlite.Connection | None = None) -> int | None:
        """Queue a notification: inside the caller's transaction when given one (a fill's message
        commits with the fill), else durably on its own. Nothing while ``outbox_enabled`` is off (no
        channel configured, backtests): the outbox only grows when someone reads it."""
        if not self.outbox_enabled:
            return None
        if conn is None:
            async with self.transaction() as c:
                return await outbox.add_event(c, event)
        return await outbox.add_event(conn, event)

    async def delete_state(self, key: str) -> None:
        """Forget a key (a request that has been acted on)."""
        async with self._relaxed() as conn:
            await self._drop_state(conn, key)


class _Transaction:
    """``Store.transaction()``: a class rather than a generator context manager, because a
    backtest opens tens of thousands of them."""

    __slots__ = ("store", "relaxed")

    def __init__(self, store: Store, relaxed: bool = False) -> None:
        self.store, self.relaxed = store, relaxed

    async def __aenter__(self) -> aiosqlite.Connection:
        db = self.store.db
        if self.relaxed:
            await db.execute("PRAGMA synchronous=NORMAL")
        try:
            await db.execute("BEGIN IMMEDIATE")
        except BaseException:
            await self._restore()
            raise
        return db

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                await self.store._rollback()
                return
            try:
                await self.store.db.execute("COMMIT")
            except BaseException:
                await self.store._rollback()
                raise
        finally:
            await self._restore()

    async def _restore(self) -> None:
        if self.relaxed:
            await self.store.db.execute("PRAGMA synchronous=FULL")
