"""Writing rotating copies of a state database with SQLite's online backup API.

The copy is written to a temporary file, checked with ``PRAGMA integrity_check``, fsynced and
renamed into place, so a crash or a full disk never leaves a half-written file under a backup's
name. Used by the service (daily, ``core.service.backups``), before each schema migration
(``core.store.schema``) and by `pitrader backup now`; ``core.store.backup`` verifies and restores.
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from core.store.errors import StateDatabaseError

BACKUP_DIR = "backups"
PRE_MIGRATION_KEEP = 7  # copies taken before schema migrations (rare: one per upgrade)
_NAME = re.compile(r"^(?P<stem>[a-z]+)-(?P<ts>\d{8}T\d{4,6}Z)(?P<kind>-pre-v\d+)?\.db$")


def backup_dir(db: Path) -> Path:
    return Path(db).parent / BACKUP_DIR


def _utc(now: float | None = None, seconds: bool = False) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ" if seconds else "%Y%m%dT%H%MZ", time.gmtime(now))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    stem: str  # the database it copies: paper, live
    taken: str  # UTC time from the name, e.g. 20261206T0300Z
    kind: str  # "daily" or "pre-vN" (taken before migrating to schema N)
    size: int


def list_backups(directory: Path, stem: str | None = None) -> list[BackupInfo]:
    """Backups in ``directory``, oldest first (by the time in their names)."""
    out = []
    if not directory.is_dir():
        return out
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file() and (stem is None or m["stem"] == stem):
            out.append(BackupInfo(p, m["stem"], m["ts"], (m["kind"] or "-daily")[1:], p.stat().st_size))
    return sorted(out, key=lambda b: (b.taken.ljust(16, "0"), b.path.name))


def make_backup(db: Path, keep: int, kind: str = "daily", now: float | None = None,
                source: sqlite3.Connection | None = None) -> Path:
    """Copy ``db`` (or the open ``source`` connection) into its backup directory; returns the new file.

    ``kind``: "daily", or "pre-vN" before a migration to schema N. Raises ``OSError`` /
    ``sqlite3.Error`` (a full disk) with nothing left behind but the older backups."""
    db = Path(db)
    directory = backup_dir(db)
    directory.mkdir(mode=0o700, exist_ok=True)
    stem = db.stem
    name = f"{stem}-{_utc(now)}{'' if kind == 'daily' else '-' + kind}.db"
    final = directory / name
    if final.exists():  # twice in one minute (a restart loop): the newer copy wins
        final = directory / f"{stem}-{_utc(now, seconds=True)}{'' if kind == 'daily' else '-' + kind}.db"
    tmp = directory / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    src = source or sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(str(tmp))
        try:
            src.backup(dst)  # all pages in one step: a consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
        problem = _integrity(tmp)
        if problem is not None:
            raise StateDatabaseError(tmp, f"backup failed its check ({problem})", "the source may be damaged")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if source is None:
            src.close()
    rotate(directory, stem, keep)
    return final


def rotate(directory: Path, stem: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups of each kind; returns what was deleted."""
    gone = []
    by_kind: dict[str, list[BackupInfo]] = {}
    for b in list_backups(directory, stem):
        by_kind.setdefault("daily" if b.kind == "daily" else "pre", []).append(b)
    for items in by_kind.values():
        for b in items[: max(len(items) - max(keep, 1), 0)]:
            b.path.unlink(missing_ok=True)
            gone.append(b.path)
    return gone


def due(db: Path, every_s: float, now: float | None = None) -> bool:
    """Whether the newest daily backup of ``db`` is older than ``every_s`` (or there is none)."""
    now = time.time() if now is None else now
    daily = [b for b in list_backups(backup_dir(db), Path(db).stem) if b.kind == "daily"]
    if not daily:
        return True
    return now - taken_s(daily[-1].taken) >= every_s


def taken_s(taken: str) -> float:
    """The UTC time in a backup's name as a POSIX timestamp."""
    import calendar

    fmt = "%Y%m%dT%H%M%SZ" if len(taken) == 16 else "%Y%m%dT%H%MZ"
    return float(calendar.timegm(time.strptime(taken, fmt)))




def _integrity(path: Path) -> str | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return None if rows == ["ok"] else "; ".join(rows)


def quick_check(path: Path) -> str | None:
    """``PRAGMA quick_check`` through a fresh read-only connection (it reads the file, not the
    service's page cache, which can hide damage for days); the problem, or None if it passed or
    the file could not be read for another reason (a lock, an I/O error: reported elsewhere)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        from core.store.errors import storage_fault

        return str(exc) if storage_fault(exc) == "corrupt" else None
    finally:
        conn.close()
    return None if rows == ["ok"] else "; ".join(rows)
