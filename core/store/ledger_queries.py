"""Reads and writes of the fills table for the tax ledger (synchronous: the `tax` commands).

The import validates the whole ledger outside the write transaction (a 100k-fill ledger takes
seconds on a Pi, longer than the service's busy timeout), then inserts only if ``last_fill_id``
is unchanged (``begin_write_if_unchanged``): fills are append-only with AUTOINCREMENT ids, so an
unchanged last id means the ledger it validated is the ledger it writes to.

Transactions are explicit (``BEGIN IMMEDIATE``: the write lock is taken at the start, so a busy
service makes the command wait its busy timeout instead of failing at COMMIT).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from core.models import Fill
from core.store.state import FILL_COLUMNS

# FILL_COLUMNS then ``reverses`` (index 11): what ``core.tax`` turns into ledger entries.
LEDGER_COLUMNS = f"{FILL_COLUMNS}, reverses"

_INSERT_IMPORTED = ("INSERT OR IGNORE INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset,"
                    " order_id, source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)")
_INSERT_REVERSAL = ("INSERT INTO fills (trade_id, ts_ms, symbol, side, quantity, price, fee, fee_asset, order_id,"
                    " source, reverses, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")


# --- reads ---------------------------------------------------------------------------------------

def ledger_rows(conn: sqlite3.Connection) -> list[tuple]:
    """Every row of the fills table, reversals included, in no particular order."""
    return conn.execute(f"SELECT {LEDGER_COLUMNS} FROM fills").fetchall()


def last_fill_id(conn: sqlite3.Connection) -> int:
    """The highest fill id so far (0 for an empty ledger)."""
    return conn.execute("SELECT COALESCE(MAX(id), 0) FROM fills").fetchone()[0]


def ledger_row(conn: sqlite3.Connection, fill_id: int) -> tuple | None:
    """Fill ``fill_id`` as a ledger row (``LEDGER_COLUMNS``), or None if there is no such fill."""
    return conn.execute(f"SELECT {LEDGER_COLUMNS} FROM fills WHERE id=?", (fill_id,)).fetchone()


def reversal_rows(conn: sqlite3.Connection, fill_id: int) -> list[tuple]:
    """Fill ``fill_id`` and every reversal entry in the ledger: what decides whether the fill
    stands or is cancelled right now (a reversal can itself be reversed)."""
    return conn.execute(f"SELECT {LEDGER_COLUMNS} FROM fills WHERE reverses IS NOT NULL OR id=?",
                        (fill_id,)).fetchall()


# --- transactions --------------------------------------------------------------------------------

def begin_write(conn: sqlite3.Connection) -> None:
    """Take the write lock now (``BEGIN IMMEDIATE``); end it with ``commit`` or ``rollback``."""
    conn.execute("BEGIN IMMEDIATE")


def begin_write_if_unchanged(conn: sqlite3.Connection, last_id: int) -> bool:
    """Take the write lock if the last fill id is still ``last_id``. False (and no lock held) when
    a fill was recorded meanwhile: what the caller checked is no longer the ledger."""
    begin_write(conn)
    if last_fill_id(conn) != last_id:
        conn.execute("ROLLBACK")
        return False
    return True


def commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if there is one (safe to call in any error path)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


@contextmanager
def write_lock(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed at the end of the block, rolled back if it raises."""
    begin_write(conn)
    try:
        yield
    except BaseException:
        rollback(conn)
        raise
    commit(conn)


# --- writes (inside the caller's transaction) ---------------------------------------------------

def insert_imported(conn: sqlite3.Connection, fills: Iterable[Fill], created_ms: int) -> int:
    """Store imported fills; returns how many were new (a row whose (source, symbol, trade_id) is
    already stored is ignored). Amounts are stored as plain digits exactly as given (1E-05 becomes
    0.00001), never rounded."""
    rows = [(f.trade_id, f.ts_ms, f.symbol, f.side, format(f.quantity, "f"), format(f.price, "f"),
             format(f.fee, "f"), f.fee_asset, f.order_id, f.source, created_ms) for f in fills]
    before = conn.total_changes
    conn.executemany(_INSERT_IMPORTED, rows)
    return conn.total_changes - before


def insert_reversal(conn: sqlite3.Connection, trade_id: str, fill: Fill, fill_id: int, created_ms: int) -> int:
    """Append the entry that cancels fill ``fill_id`` (``fill``: its contents); returns its id."""
    cur = conn.execute(_INSERT_REVERSAL, (trade_id, fill.ts_ms, fill.symbol, fill.side, str(fill.quantity),
                                          str(fill.price), str(fill.fee), fill.fee_asset, fill.order_id, fill.source,
                                          fill_id, created_ms))
    return cur.lastrowid
