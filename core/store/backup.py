"""Rotating online backups of a state database, their verification, and restoring one.

A dead SD card or a corrupt file must cost a restore, not the books: the service copies its
database with SQLite's online backup API (a consistent snapshot while it keeps writing; WAL
readers do not block it) once a day and before each schema migration, into
``STATE/backups/<mode>-<UTC time>[-pre-vN].db``. Each copy is written to a temporary file,
checked with ``PRAGMA integrity_check``, fsynced and renamed into place, so a crash or a full
disk never leaves a half-written backup under a backup's name. The newest ``keep`` of each kind
are kept.

``restore`` refuses while a service holds ``STATE/service.lock`` (``ServiceLock``), and keeps
the file it replaces as ``<name>.replaced-<UTC time>``: nothing is ever deleted by a restore.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
from pathlib import Path

from core.store.errors import StateDatabaseError
from core.store.schema import SCHEMA_VERSION, check_file
from core.store.snapshot import (BackupInfo, _fsync_dir, _utc, backup_dir, due, list_backups,  # noqa: F401
                                 make_backup, rotate)

LOCK_FILE = "service.lock"


def verify(path: Path) -> str | None:
    """None if ``path`` is a healthy pitrader database this version can open, else the problem."""
    try:
        check_file(path)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check(5)").fetchall()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except StateDatabaseError as exc:
        return exc.problem
    except sqlite3.DatabaseError as exc:
        return f"cannot be read ({exc})"
    if [r[0] for r in result] != ["ok"]:
        return "integrity check: " + "; ".join(r[0] for r in result)
    if version == 0:
        return "not a pitrader database (no schema version)"
    if version > SCHEMA_VERSION:
        return f"schema v{version} is newer than this pitrader (v{SCHEMA_VERSION})"
    return None


class ServiceLock:
    """An exclusive ``flock`` on ``STATE/service.lock`` held by `pitrader run` for its lifetime.

    The kernel drops it when the process dies (even by SIGKILL), so a stale file never blocks a
    restore; ``holder()`` tells another command whether a service is running on this directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> str | None:
        """The pid (as written) of a running service holding the lock, else None."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return (self.path.read_text().strip() or "?")
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def restore(backup: Path, db: Path, now: float | None = None) -> Path | None:
    """Put ``backup`` in place of ``db`` (checked first); returns where the replaced file went
    (``<db>.replaced-<UTC time>``, with its -wal/-shm), or None when there was none.
    The caller makes sure no service runs (``ServiceLock.holder``)."""
    backup, db = Path(backup), Path(db)
    problem = verify(backup)
    if problem is not None:
        raise StateDatabaseError(backup, f"cannot be restored: {problem}", "pick another backup (pitrader backup list)")
    stamp = _utc(now, seconds=True)
    tmp = db.with_name(f".{db.name}.restore.tmp")
    shutil.copyfile(backup, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    kept = None
    if db.exists():
        kept = db.with_name(f"{db.name}.replaced-{stamp}")
        os.replace(db, kept)
    for suffix in ("-wal", "-shm"):  # they belong to the replaced file, never to the backup
        side = db.with_name(db.name + suffix)
        if side.exists():
            os.replace(side, kept.with_name(kept.name + suffix) if kept else side.with_name(side.name + f".replaced-{stamp}"))
    os.replace(tmp, db)
    _fsync_dir(db.parent)
    return kept
