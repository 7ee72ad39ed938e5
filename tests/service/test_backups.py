"""The service's backup schedule (issue 15 items 2, 3): a daily copy, want of space warned once,
damage on disk found by the hourly check (a fresh connection, not the service's cache) stops it."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from core.config import Config
from core.service import backups as sched
from core.store.errors import StateDatabaseError
from core.store.snapshot import list_backups
from tests.store.test_backup import _db_with_positions


def _damage(path):
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes((i * 31 + 7) % 256 for i in range(len(data) - page))
    path.write_bytes(bytes(data))


def test_daily_backup_and_want_of_space_warned_once(tmp_path, monkeypatch, caplog):
    db = tmp_path / "paper.db"
    _db_with_positions(db, 3)
    cfg = Config()
    s = sched.BackupSchedule(db)
    t = 1_800_000_000.0
    assert asyncio.run(s.maybe_backup(cfg, t)) is not None
    assert asyncio.run(s.maybe_backup(cfg, t + 3600)) is None  # not due: a day apart
    caplog.set_level(logging.INFO)

    def full(*a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sched, "make_backup", full)
    for i in range(5):  # due, failing: one warning, tried again hourly (not every cycle)
        asyncio.run(s.maybe_backup(replace(cfg), t + 86_400 + i * 4000))
    assert sum("backup of" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records) == 1
    monkeypatch.undo()
    assert asyncio.run(s.maybe_backup(cfg, t + 86_400 + 6 * 4000)) is not None
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert len(list_backups(tmp_path / "backups")) == 2


def test_damage_on_disk_stops_the_service(tmp_path):
    db = tmp_path / "paper.db"
    _db_with_positions(db, 200)
    s = sched.BackupSchedule(db)
    asyncio.run(s.check(1.0))  # healthy
    _damage(db)
    asyncio.run(s.check(2.0))  # an hour has not passed: not looked at again yet
    with pytest.raises(StateDatabaseError) as err:
        asyncio.run(s.check(1.0 + sched.CHECK_EVERY_S))
    assert "damaged on disk while running" in str(err.value)
    with pytest.raises(StateDatabaseError):  # a backup of a damaged file is no backup
        asyncio.run(sched.BackupSchedule(db).maybe_backup(Config(), 1.0))
    assert not list_backups(tmp_path / "backups")
