"""Online backups of the state database (issue 15 item 2): taken with the SQLite backup API while
the store is open, verified, rotated, taken before a migration, restored only while no service
runs, the replaced file kept."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from decimal import Decimal

import pytest

from core.cli import main
from core.models import Position
from core.store.backup import ServiceLock, backup_dir, due, list_backups, make_backup, restore, verify
from core.store.errors import StateDatabaseError
from core.store.schema import MIGRATIONS, SCHEMA_VERSION, connect_sync
from core.store.state import Store
from tests.conftest import ROOT

D = Decimal


def _position(symbol="ETH/USDT") -> Position:
    return Position(symbol=symbol, strategy="t", amount=D("1"), entry_price=D("100"), stop=D("97"),
                    target=D("106"), opened_ms=1)


def _db_with_positions(path, n=2):
    async def go():
        async with Store.open(path) as store:
            for _ in range(n):
                await store.save_position(_position())
    asyncio.run(go())


def test_backup_while_the_store_is_open_is_consistent_verified_and_rotated(tmp_path):
    db = tmp_path / "paper.db"

    async def go():
        async with Store.open(db) as store:
            await store.save_position(_position())
            made = []
            for i in range(4):  # four "days"
                made.append(await asyncio.to_thread(make_backup, db, 2, "daily", 1_800_000_000 + i * 86_400))
                await store.save_position(_position())  # the service keeps writing
            return made
    made = asyncio.run(go())
    kept = list_backups(backup_dir(db))
    assert [b.path for b in kept] == made[-2:]  # the newest two kept
    assert all(b.kind == "daily" and verify(b.path) is None for b in kept)
    assert kept[0].path.name == "paper-20270117T0800Z.db"
    conn = sqlite3.connect(kept[-1].path)
    assert conn.execute("SELECT COUNT(*) FROM positions").fetchone()[0] == 4  # the snapshot of its moment
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    conn.close()
    assert not list(backup_dir(db).glob(".*"))  # no temp file left behind
    assert not due(db, 86_400, now=1_800_000_000 + 3 * 86_400 + 10)


def test_a_migration_is_preceded_by_a_verified_backup(tmp_path):
    db = tmp_path / "live.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("BEGIN;" + MIGRATIONS[0] + "; PRAGMA user_version=1; COMMIT;")
    conn.execute("INSERT INTO bot_state (key, value) VALUES ('order_tag', '\"abc123\"')")
    conn.close()
    connect_sync(db).close()
    pre = [b for b in list_backups(backup_dir(db)) if b.kind == f"pre-v{SCHEMA_VERSION}"]
    assert len(pre) == 1 and verify(pre[0].path) is None
    old = sqlite3.connect(pre[0].path)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1  # the schema before the migration
    assert old.execute("SELECT value FROM bot_state").fetchone()[0] == '"abc123"'
    old.close()
    connect_sync(db).close()  # no migration now: no second copy
    assert len(list_backups(backup_dir(db))) == 1


def test_verify_finds_a_damaged_backup(tmp_path):
    db = tmp_path / "paper.db"
    _db_with_positions(db, 50)
    b = make_backup(db, 3)
    data = bytearray(b.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page * 2: page * 3] = b"\xa5" * page
    b.write_bytes(bytes(data))
    assert verify(b) is not None
    (tmp_path / "empty.db").write_bytes(b"")
    assert "empty" in verify(tmp_path / "empty.db")


def test_restore_keeps_the_replaced_file_and_refuses_while_the_service_runs(tmp_path, config_file):
    state = tmp_path / "state"
    state.mkdir()
    db = state / "paper.db"
    _db_with_positions(db, 1)
    b = make_backup(db, 7)
    _db_with_positions(db, 2)  # three positions now, one in the backup
    cfg = str(config_file())
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from core.store.backup import ServiceLock\n"
                               f"assert ServiceLock({str(state)!r}).acquire()\n"
                               "print('locked', flush=True)\ntime.sleep(60)\n"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert ServiceLock(state).holder() == str(holder.pid)
        assert main(["--config", cfg, "--state-dir", str(state), "backup", "restore", b.name]) == 74
    finally:
        holder.kill()
        holder.wait()
    assert ServiceLock(state).holder() is None  # the kernel dropped the lock with the process
    assert main(["--config", cfg, "--state-dir", str(state), "backup", "restore", b.name]) == 0
    replaced = list(state.glob("paper.db.replaced-*"))
    assert len(replaced) == 1
    count = lambda p: sqlite3.connect(p).execute("SELECT COUNT(*) FROM positions").fetchone()[0]  # noqa: E731
    assert count(db) == 1 and count(replaced[0]) == 3
    assert main(["--config", cfg, "--state-dir", str(state), "backup", "verify"]) == 0


def test_a_bad_backup_is_never_restored(tmp_path):
    db = tmp_path / "paper.db"
    _db_with_positions(db, 1)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    with pytest.raises(StateDatabaseError):
        restore(bad, db)
    assert verify(db) is None and not list(tmp_path.glob("*.replaced-*"))


def test_second_run_on_the_same_state_directory_is_refused(tmp_path):
    lock = ServiceLock(tmp_path)
    assert lock.acquire()
    try:
        assert not ServiceLock(tmp_path).acquire()
    finally:
        lock.release()
    assert ServiceLock(tmp_path).acquire()


def test_backup_list_and_now_commands(tmp_path, config_file, capsys):
    state = tmp_path / "s"
    _db_with_positions(state / "paper.db", 1)
    cfg = str(config_file())
    assert main(["--config", cfg, "--state-dir", str(state), "backup", "list"]) == 0
    assert "no backups" in capsys.readouterr().out
    assert main(["--config", cfg, "--state-dir", str(state), "backup", "now"]) == 0
    assert main(["--config", cfg, "--state-dir", str(state), "backup", "list"]) == 0
    out = capsys.readouterr().out
    assert "paper-" in out and "daily" in out
