"""Store: schema migrations, append-only fills, and a restart resumes exactly."""
import asyncio
import sqlite3
from decimal import Decimal

import pytest

from core.models import Fill, Order, OrderStatus, Position
from core.store.state import SCHEMA_VERSION, Store, connect_sync


def test_restart_resumes_orders_positions_state(tmp_path):
    path = tmp_path / "paper.db"

    async def first():
        async with Store.open(path) as s:
            pos = await s.save_position(Position("ETH/USDT", "momentum", Decimal("0.5"), Decimal("2000.01"),
                                                 Decimal("1900"), Decimal("2200"), 1000))
            o = Order("pt-1-entry-0", "ETH/USDT", "buy", "market", Decimal("0.5"), None, "entry", pos.id, created_ms=1000)
            await s.save_order(o)
            o.transition(OrderStatus.SUBMITTED, 1001)
            async with s.transaction() as c:
                await s.save_order(o, "sent", c)
                await s.add_fill(Fill("77", 1002, "ETH/USDT", "buy", Decimal("0.5"), Decimal("2000.01"),
                                      Decimal("0.0005"), "ETH", o.client_id), 1002, c)
            await s.set_state("halts", ["daily loss"])
            s.record_equity(1002, Decimal("999.5"), Decimal("0"))
            return pos.id

    async def second():
        async with Store.open(path) as s:
            return (await s.positions("open"), await s.open_orders(), await s.fills(), await s.get_state("halts"),
                    await s.equity_curve())

    pid = asyncio.run(first())
    positions, orders, fills, halts, curve = asyncio.run(second())
    assert [p.id for p in positions] == [pid] and positions[0].entry_price == Decimal("2000.01")
    assert orders[0].status is OrderStatus.SUBMITTED and orders[0].amount == Decimal("0.5")
    assert fills[0].fee == Decimal("0.0005") and fills[0].fee_asset == "ETH"
    assert halts == ["daily loss"] and curve == [(1002, Decimal("999.5"))]


def test_failed_transaction_leaves_nothing(tmp_path):
    async def go():
        async with Store.open(tmp_path / "x.db") as s:
            with pytest.raises(RuntimeError):
                async with s.transaction() as c:
                    await s.add_fill(Fill("1", 1, "BTC/USDT", "buy", Decimal(1), Decimal(1)), 1, c)
                    raise RuntimeError("crash between the fill and the order update")
            return await s.fills()

    assert asyncio.run(go()) == []


def test_fills_are_append_only_and_unique(tmp_path):
    conn = connect_sync(tmp_path / "x.db")
    conn.execute("INSERT INTO fills (trade_id, ts_ms, symbol, side, quantity, price, source, created_ms)"
                 " VALUES ('1', 1, 'BTC/USDT', 'buy', '1', '1', 'bot', 1)")
    for sql in ("UPDATE fills SET price='2'", "DELETE FROM fills"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(sql)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO fills (trade_id, ts_ms, symbol, side, quantity, price, source, created_ms)"
                     " VALUES ('1', 2, 'BTC/USDT', 'buy', '1', '1', 'bot', 2)")


def test_migrations_are_versioned_and_refuse_newer(tmp_path):
    conn = connect_sync(tmp_path / "x.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        connect_sync(tmp_path / "x.db")


def test_order_state_machine_refuses_bad_transitions():
    o = Order("c", "BTC/USDT", "buy", "limit", Decimal(1), Decimal(1), "entry")
    o.transition(OrderStatus.SUBMITTED, 1)
    o.transition(OrderStatus.PARTIALLY_FILLED, 2)
    o.transition(OrderStatus.PARTIALLY_FILLED, 3)
    o.transition(OrderStatus.FILLED, 4)
    with pytest.raises(Exception, match="filled -> cancelled"):
        o.transition(OrderStatus.CANCELLED, 5)
