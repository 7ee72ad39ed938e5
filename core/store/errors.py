"""Errors of the state store that the command line maps to their own exit code (no heavy imports here)."""
from __future__ import annotations

from pathlib import Path


class StateDatabaseError(RuntimeError):
    """An existing state database that cannot be used as it is (empty, truncated, corrupt, newer schema).

    It is never replaced or reset: the message names the file and what to do, and ``pitrader``
    exits with ``EX_STATE`` (listed in the unit's ``RestartPreventExitStatus=``)."""

    def __init__(self, path: str | Path, problem: str, advice: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        advice = advice or ("restore it from a backup, or move it aside to start from an empty state "
                            "(open positions are then no longer watched)")
        super().__init__(f"state database {self.path}: {problem}; {advice}")


def storage_fault(exc: BaseException) -> str | None:
    """What a database error says about the storage: ``"full"`` (no space: SQLITE_FULL, ENOSPC),
    ``"io"`` (I/O error, read-only remount: a failing card), ``"corrupt"`` (malformed, not a
    database), or None (anything else: a bug, a lock). The service rides out the first two and
    stops on corruption with ``EX_STATE``."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        return "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "disk is full" in text:
        return "full"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "corrupt"
    if name.startswith(("SQLITE_IOERR", "SQLITE_READONLY")) or "disk i/o error" in text or "readonly database" in text:
        return "io"
    return None
