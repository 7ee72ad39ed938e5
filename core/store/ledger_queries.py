"""Reads of the fills table for the tax ledger (synchronous: the `tax` commands).

The import validates the whole ledger outside the write transaction (a 100k-fill ledger takes
seconds on a Pi, longer than the service's busy timeout), then inserts only if ``last_fill_id``
is unchanged: fills are append-only with AUTOINCREMENT ids, so an unchanged last id means the
ledger it validated is the ledger it writes to.
"""
from __future__ import annotations

import sqlite3

from core.store.state import FILL_COLUMNS

# FILL_COLUMNS then ``reverses`` (index 11): what ``core.tax`` turns into ledger entries.
LEDGER_COLUMNS = f"{FILL_COLUMNS}, reverses"


def ledger_rows(conn: sqlite3.Connection) -> list[tuple]:
    """Every row of the fills table, reversals included, in no particular order."""
    return conn.execute(f"SELECT {LEDGER_COLUMNS} FROM fills").fetchall()


def last_fill_id(conn: sqlite3.Connection) -> int:
    """The highest fill id so far (0 for an empty ledger)."""
    return conn.execute("SELECT COALESCE(MAX(id), 0) FROM fills").fetchone()[0]
