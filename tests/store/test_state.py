"""Store: schema migrations, append-only fills, and a restart resumes exactly."""
import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

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


# --- an existing database is never taken for a new one (issue 15 item 1) -------------------------

def _filled_db(path):
    """A real state database with a position, an order and a fill in it, checkpointed into the file."""
    async def fill():
        async with Store.open(path) as s:
            pos = await s.save_position(Position("ETH/USDT", "momentum", Decimal("0.5"), Decimal("2000"),
                                                 Decimal("1900"), Decimal("2200"), 1000))
            o = Order("pt-1-e1", "ETH/USDT", "buy", "market", Decimal("0.5"), None, "entry", pos.id, created_ms=1000)
            async with s.transaction() as c:
                await s.save_order(o, "sent", c)
                await s.add_fill(Fill("1", 1001, "ETH/USDT", "buy", Decimal("0.5"), Decimal("2000")), 1001, c)
            for i in range(200):  # a few pages, so that a cut file is visibly short
                await s.set_state(f"k{i}", "x" * 500)
    asyncio.run(fill())
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _damage(path, how):
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage" * 512)
    elif how == "corrupt":  # header intact, the pages behind it overwritten
        path.write_bytes(data[:4096] + bytes(range(256)) * ((len(data) - 4096) // 256 + 1))
    elif how == "newer":
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 7}")
        conn.close()
    elif how == "foreign":  # some other program's database where ours should be
        path.unlink()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (t TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
        conn.commit()
        conn.close()


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "corrupt", "newer", "foreign"])
def test_an_unusable_existing_database_is_refused_and_left_alone(tmp_path, how):
    from core.store.errors import StateDatabaseError

    path = tmp_path / "live.db"
    _filled_db(path)
    _damage(path, how)
    before = path.read_bytes()
    with pytest.raises(StateDatabaseError) as err:
        connect_sync(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(StateDatabaseError):
        async def use():
            async with Store.open(path):
                pass
        asyncio.run(use())
    assert path.read_bytes() == before  # neither replaced nor reset nor migrated
    assert not path.with_name("live.db-wal").exists() or path.with_name("live.db-wal").stat().st_size == 0


def test_a_missing_database_starts_empty_and_a_healthy_one_opens(tmp_path):
    path = tmp_path / "sub" / "paper.db"
    connect_sync(path).close()
    _filled_db(path)
    conn = connect_sync(path)
    assert conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] == 1
    conn.close()


def test_cli_exits_with_the_state_code_and_one_line(tmp_path, capsys):
    """`pitrader` maps the refusal to EX_STATE (74), which the unit lists in RestartPreventExitStatus=."""
    from core.cli import main
    from core.exitcodes import EX_STATE

    state = tmp_path / "state"
    state.mkdir()
    (state / "live.db").write_bytes(b"")
    cfg = tmp_path / "config.json"
    cfg.write_text("{}")
    code = main(["--config", str(cfg), "--state-dir", str(state), "tax", "report", "--year", "2026"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EX_STATE == 74
    assert len(err) == 1 and "live.db" in err[0] and "empty" in err[0]
    assert (state / "live.db").stat().st_size == 0
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "pitrader.service").read_text()
    line = next(ln for ln in unit.splitlines() if ln.startswith("RestartPreventExitStatus="))
    assert str(EX_STATE) in line.split("=", 1)[1].split()


def test_position_state_machine_refuses_bad_transitions():
    from core.models import InvalidTransition, POSITION_TRANSITIONS, PositionStatus

    def pos(status):
        return Position("ETH/USDT", "m", Decimal(1), Decimal(1), Decimal(1), Decimal(2), 0, id=7, status=status)

    p = pos("open")
    assert p.status is PositionStatus.OPEN
    p.transition(PositionStatus.CLOSING)
    p.transition("closing")  # staying put is allowed (an exit attempt after another)
    p.transition(PositionStatus.CLOSED)
    for bad in (PositionStatus.OPEN, PositionStatus.CLOSING):
        with pytest.raises(InvalidTransition, match="#7"):
            p.transition(bad)
    with pytest.raises(InvalidTransition):
        pos("closing").transition("open")  # an exit under way is never silently reopened
    with pytest.raises(ValueError):
        pos("archived")  # not a status at all
    assert POSITION_TRANSITIONS[PositionStatus.CLOSED] == frozenset()


def test_position_status_survives_the_store_as_its_enum(tmp_path):
    from core.models import PositionStatus

    async def main():
        async with Store.open(tmp_path / "paper.db") as s:
            p = await s.save_position(Position("ETH/USDT", "m", Decimal(1), Decimal(1), Decimal(1), Decimal(2), 0))
            p.transition(PositionStatus.CLOSING)
            await s.save_position(p)
            return await s.position(p.id), await s.positions("open"), await s.positions("closing")

    one, opened, closing = asyncio.run(main())
    assert one.status is PositionStatus.CLOSING and f"{one.status}" == "closing"
    assert [p.id for p in opened] == [one.id] == [p.id for p in closing]


def test_read_only_access_refuses_an_empty_file_and_writes_nothing(tmp_path):
    """`status` reads beside the service: an empty file is refused there too (exit 74), untouched."""
    from core.store.errors import StateDatabaseError
    from core.store.readonly import StateReader, read_state, write_state

    path = tmp_path / "paper.db"
    path.write_bytes(b"")
    with pytest.raises(StateDatabaseError, match="empty"):
        StateReader(path)
    with pytest.raises(StateDatabaseError):
        write_state(path, "resume_request", {"by": "test"})
    assert path.stat().st_size == 0
    path.unlink()
    _filled_db(path)
    write_state(path, "resume_request", {"by": "test"})
    assert read_state(path, "resume_request") == {"by": "test"}
    with StateReader(path) as db:
        assert db.has_state() and [p.symbol for p in db.positions()] == ["ETH/USDT"]


def test_a_version_1_database_gains_the_lookup_indexes_and_keeps_its_rows(tmp_path):
    """Migration 2 indexes what the executors query per fill and exit (issue 14 item 1): without
    them each recorded fill scanned the whole history. The plan must use them."""
    from core.store.schema import MIGRATIONS

    path = tmp_path / "live.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("BEGIN;" + MIGRATIONS[0] + "; PRAGMA user_version=1; COMMIT;")
    conn.execute("INSERT INTO orders (client_id, symbol, side, type, amount, intent, position_id, status, created_ms,"
                 " updated_ms) VALUES ('c1', 'ETH/USDT', 'buy', 'market', '1', 'entry', 1, 'filled', 1, 1)")
    conn.close()
    conn = connect_sync(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    assert conn.execute("SELECT client_id FROM orders").fetchall() == [("c1",)]
    plan = " ".join(r[-1] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT o.intent, f.id FROM fills f JOIN orders o ON f.order_id = o.client_id "
        "WHERE o.position_id = ? ORDER BY f.ts_ms, f.id", (1,)))
    assert "orders_position" in plan and "fills_order" in plan, plan
    plan = " ".join(r[-1] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM orders WHERE position_id=? AND intent='exit'", (1,)))
    assert "orders_position" in plan, plan
    conn.close()
