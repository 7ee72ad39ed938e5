"""Storage faults while the service runs (issue 15 item 3): a full disk or I/O errors pause entries
(one WARNING, one INFO when writes work again) while the exit monitor keeps going; corruption stops
with StateDatabaseError (the CLI's exit 74, which the unit does not restart). The faults are
injected at the sqlite layer here; benchmarks/fault_injection.py does it with a real full tmpfs."""
from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from core.engine.loop import Engine
from core.exchange.setup import replay_setup
from core.store.errors import StateDatabaseError, storage_fault
from core.store.state import Store
from tests.conftest import SAMPLE
from tests.engine.test_resilience import FollowClock, _cfg


class SqliteFaults:
    """Wraps ``store.db.execute``: ``full`` fails every COMMIT as a full disk does, ``corrupt`` fails reads."""

    def __init__(self, store):
        self.full = self.corrupt = False
        self._execute = store.db.execute
        store.db.execute = self.execute

    def execute(self, sql, *args, **kw):
        if self.full and sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        if self.corrupt and sql.lstrip().upper().startswith("SELECT"):
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self._execute(sql, *args, **kw)


async def _run(tmp_path, script):
    """Run the engine in service mode (wall-type clock over the sample); ``script(engine, faults)``
    is awaited per cycle."""
    cfg = _cfg()
    gw, vclock, _ = replay_setup(cfg, SAMPLE)
    async with Store.open(tmp_path / "p.db") as store:
        engine = Engine(cfg, gw, store, FollowClock(vclock))
        faults = SqliteFaults(store)
        entries = []
        real_open = engine.executor.open_position

        async def open_position(*a, **kw):
            entries.append((engine.cycles, faults.full))
            return await real_open(*a, **kw)
        engine.executor.open_position = open_position

        async def advance():
            while not engine.stopping:
                await asyncio.sleep(0.005)
                vclock.advance_to(vclock.now_ms() + 60_000)
                await script(engine, faults)

        ticker = asyncio.create_task(advance())
        try:
            await engine.run(max_cycles=12, interval_s=0.01)
        finally:
            engine.request_stop()
            await ticker
        return engine, entries, faults


def test_full_disk_pauses_entries_warns_once_and_resumes(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    marks = {}

    async def script(engine, faults):
        if engine.cycles >= 3 and "full" not in marks:
            marks["full"] = engine.cycles
            faults.full = True
        elif engine.cycles >= 3 and "full" in marks and "free" not in marks and engine.storage_fault:
            # a few monitor checks and at least two cycle attempts under the full disk
            marks.setdefault("seen", 0)
            marks["seen"] += 1
            if marks["seen"] > 40:
                marks["free"] = True
                faults.full = False

    engine, entries, _ = asyncio.run(_run(tmp_path, script))
    assert engine.cycles == 12  # it kept running: no crash, no exit
    assert engine.storage_fault is None  # resumed
    assert not any(full for _, full in entries)  # no entry while the disk was full
    warns = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warns) == 1 and warns[0].levelno == logging.WARNING
    infos = [r for r in caplog.records if "writable again" in r.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.exc_info]  # no traceback


def test_corruption_while_running_stops_with_the_state_error(tmp_path):
    async def script(engine, faults):
        if engine.cycles >= 2:
            faults.corrupt = True

    with pytest.raises(StateDatabaseError) as err:
        asyncio.run(_run(tmp_path, script))
    assert "p.db" in str(err.value) and "unreadable while running" in str(err.value)


@pytest.mark.parametrize("exc,kind", [
    (sqlite3.OperationalError("database or disk is full"), "full"),
    (sqlite3.OperationalError("disk I/O error"), "io"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "io"),
    (sqlite3.DatabaseError("database disk image is malformed"), "corrupt"),
    (sqlite3.DatabaseError("file is not a database"), "corrupt"),
    (OSError(28, "No space left on device"), "full"),
    (sqlite3.OperationalError("database is locked"), None),
    (sqlite3.IntegrityError("UNIQUE constraint failed"), None),
    (ValueError("x"), None),
])
def test_storage_fault_kinds(exc, kind):
    assert storage_fault(exc) == kind


def test_real_sqlite_full_is_recognised(tmp_path):
    """The error SQLite itself raises at its page limit (what a full file system gives)."""
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.commit()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.DatabaseError) as err:
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
        conn.commit()
    assert storage_fault(err.value) == "full"
