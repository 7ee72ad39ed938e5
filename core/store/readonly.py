"""Synchronous access to a state database for commands beside a running service (``status``).

Reads open the file read-only (``mode=ro``): nothing is migrated, created or locked for long;
a file that cannot be a healthy database is refused like everywhere else (``StateDatabaseError``).
The one write, a request for the service (``status --resume``), is a single small transaction.
"""
from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.models import Position
from core.store.errors import StateDatabaseError
from core.store.schema import SCHEMA_VERSION, check_file, connect_readonly
from core.store.state import POSITION_COLUMNS, position_from_row


class StateReader:
    """``with StateReader(path) as db``: what ``status`` shows, without touching the service."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = connect_readonly(self.path)
        try:  # a newer schema would fail on a renamed table or column with a traceback: say what it is
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StateDatabaseError(self.path, f"cannot be read as a database ({exc})") from exc
        if version > SCHEMA_VERSION:
            self.conn.close()
            raise StateDatabaseError(self.path, f"database schema v{version} is newer than this pitrader "
                                                f"(v{SCHEMA_VERSION})", "upgrade pitrader (or use the matching version)")

    def __enter__(self) -> "StateReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def has_state(self) -> bool:
        """False for a database the service has not created its tables in yet."""
        return self.conn.execute("SELECT name FROM sqlite_master WHERE name='bot_state'").fetchone() is not None

    def state(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM bot_state WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def last_equity(self) -> tuple[int, str] | None:
        """The newest equity snapshot ``(ts_ms, equity as text)``."""
        row = self.conn.execute("SELECT ts_ms, equity FROM equity ORDER BY ts_ms DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], row[1])

    def positions(self) -> list[Position]:
        rows = self.conn.execute(f"SELECT {POSITION_COLUMNS} FROM positions ORDER BY id").fetchall()
        return [position_from_row(tuple(r)) for r in rows]

    def equity_since(self, since_ms: int) -> list[tuple[int, Decimal]]:
        return [(ts, Decimal(e)) for ts, e in self.conn.execute(
            "SELECT ts_ms, equity FROM equity WHERE ts_ms >= ? ORDER BY ts_ms", (since_ms,))]


def read_state(path: str | Path, key: str) -> Any:
    """One ``bot_state`` value of an existing database (None when absent)."""
    with StateReader(path) as db:
        return db.state(key) if db.has_state() else None


def write_state(path: str | Path, key: str, value: Any) -> None:
    """Set one ``bot_state`` key in an existing database: a request the service picks up."""
    check_file(path)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("INSERT OR REPLACE INTO bot_state (key, value) VALUES (?, ?)", (key, json.dumps(value)))
    finally:
        conn.close()
