"""The state database's schema, its migrations, and the checks that run before a file is used.

An existing file is never taken for a new one: one that is empty, truncated, not SQLite, corrupt,
of a newer schema or holding tables without a pitrader schema version raises
``StateDatabaseError`` (the CLI exits with ``EX_STATE``) and is left exactly as it was found.
Only a missing file, or one SQLite created but nothing ever wrote a table to, starts empty.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from core.store.errors import StateDatabaseError
from core.store.outbox import SCHEMA as OUTBOX_SCHEMA
from core.store.protections import SCHEMA as PROTECTIONS_SCHEMA

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE orders (
        client_id   TEXT PRIMARY KEY,
        exchange_id TEXT,
        symbol      TEXT NOT NULL,
        side        TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        type        TEXT NOT NULL CHECK (type IN ('market', 'limit')),
        amount      TEXT NOT NULL,
        price       TEXT,
        intent      TEXT NOT NULL CHECK (intent IN ('entry', 'exit')),
        position_id INTEGER,
        status      TEXT NOT NULL,
        filled      TEXT NOT NULL DEFAULT '0',
        average     TEXT,
        reason      TEXT NOT NULL DEFAULT '',
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    CREATE INDEX orders_status ON orders(status);
    CREATE TABLE order_events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id TEXT NOT NULL REFERENCES orders(client_id),
        ts_ms     INTEGER NOT NULL,
        status    TEXT NOT NULL,
        detail    TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE fills (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_id   TEXT NOT NULL,
        ts_ms      INTEGER NOT NULL,
        symbol     TEXT NOT NULL,
        side       TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        quantity   TEXT NOT NULL,
        price      TEXT NOT NULL,
        fee        TEXT NOT NULL DEFAULT '0',
        fee_asset  TEXT,
        order_id   TEXT,
        source     TEXT NOT NULL CHECK (source IN ('bot', 'import')),
        reverses   INTEGER REFERENCES fills(id),
        created_ms INTEGER NOT NULL,
        UNIQUE (source, symbol, trade_id)
    );
    CREATE INDEX fills_ts ON fills(ts_ms);
    CREATE TRIGGER fills_no_update BEFORE UPDATE ON fills
        BEGIN SELECT RAISE(ABORT, 'fills are append-only: add a reversal entry instead'); END;
    CREATE TRIGGER fills_no_delete BEFORE DELETE ON fills
        BEGIN SELECT RAISE(ABORT, 'fills are append-only: add a reversal entry instead'); END;
    CREATE TABLE positions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        symbol      TEXT NOT NULL,
        strategy    TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('open', 'closing', 'closed')),
        amount      TEXT NOT NULL,
        entry_price TEXT NOT NULL,
        stop        TEXT NOT NULL,
        target      TEXT NOT NULL,
        trail_pct   TEXT NOT NULL DEFAULT '0',
        highest     TEXT NOT NULL DEFAULT '0',
        entry_fees  TEXT NOT NULL DEFAULT '0',
        score       REAL NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        opened_ms   INTEGER NOT NULL,
        closed_ms   INTEGER,
        exit_price  TEXT,
        exit_reason TEXT,
        exit_fees   TEXT NOT NULL DEFAULT '0',
        pnl         TEXT
    );
    CREATE INDEX positions_status ON positions(status);
    CREATE TABLE equity (
        ts_ms  INTEGER PRIMARY KEY,
        equity TEXT NOT NULL,
        cash   TEXT NOT NULL
    );
    CREATE TABLE bot_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: what the executors look up on every fill and exit (cost grew with the history)
    """
    CREATE INDEX orders_position ON orders(position_id);
    CREATE INDEX fills_order ON fills(order_id);
    """,
    # 3: the notification outbox (core/store/outbox.py)
    OUTBOX_SCHEMA,
    # 4: exchange-side protections (OCO / stop-limit) and the manual command queue (core/store/protections.py)
    PROTECTIONS_SCHEMA,
]

SCHEMA_VERSION = len(MIGRATIONS)
SQLITE_HEADER = b"SQLite format 3\x00"


def check_file(path: str | Path) -> None:
    """Refuse an existing file that cannot be a healthy SQLite database, from its header alone
    (cheap: also used by read-only commands such as ``status``). A missing file passes."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateDatabaseError(path, f"cannot be read ({exc.strerror or exc})",
                                 "check the file's permissions and the storage") from exc
    if size == 0:
        raise StateDatabaseError(path, "the file is empty (0 bytes) where a database was expected")
    if head[:16] != SQLITE_HEADER or len(head) < 100:
        raise StateDatabaseError(path, "not a SQLite database (truncated, overwritten or corrupt)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    wal = path.with_name(path.name + "-wal")
    checkpointing = wal.exists() and wal.stat().st_size > 0  # a checkpoint may be growing the file right now
    if pages and head[24:28] == head[92:96] and size < pages * page_size and not checkpointing:
        raise StateDatabaseError(path, f"truncated: {size} bytes of the {pages * page_size} its header records")


def migrate(conn: sqlite3.Connection, path: str | Path | None = None, existed: bool = False) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before.

    ``existed``: the file was there before this connection; version 0 then counts as new only
    when the file holds no table at all (SQLite created it, nothing was ever written)."""
    where = path if path is not None else "(connection)"
    try:  # read-only checks first: a file that is refused is left byte for byte as it was
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        if existed and found:
            bad = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if bad != "ok":
                raise StateDatabaseError(where, f"corrupt (integrity check: {bad})")
    except sqlite3.DatabaseError as exc:
        raise StateDatabaseError(where, f"cannot be read as a database ({exc})") from exc
    if found > SCHEMA_VERSION:
        raise StateDatabaseError(where, f"database schema v{found} is newer than this pitrader (v{SCHEMA_VERSION})",
                                 "upgrade pitrader (or restore the backup that matches this version)")
    if found == 0 and tables:
        raise StateDatabaseError(where, f"holds {tables} schema objects but no pitrader schema version "
                                        "(not a pitrader database?)")
    if existed and path is not None and 0 < found < SCHEMA_VERSION:
        _backup_before_migrating(conn, Path(path), found)
    conn.execute("PRAGMA journal_mode=WAL")
    for version in range(found, SCHEMA_VERSION):
        with conn:  # one transaction per step: a crash mid-migration leaves the old version intact
            conn.executescript("BEGIN;" + MIGRATIONS[version] + f"; PRAGMA user_version={version + 1};")
    return found


def _backup_before_migrating(conn: sqlite3.Connection, path: Path, found: int) -> None:
    """A migration rewrites the schema in place: keep a verified copy of the old one first
    (``core.store.backup``); never migrate without it."""
    from core.store.snapshot import PRE_MIGRATION_KEEP, make_backup

    try:
        make_backup(path, PRE_MIGRATION_KEEP, kind=f"pre-v{SCHEMA_VERSION}", source=conn)
    except (OSError, sqlite3.Error) as exc:
        raise StateDatabaseError(path, f"no backup could be written before migrating schema v{found} to "
                                       f"v{SCHEMA_VERSION} ({exc})", "free space in the state directory") from exc


def connect_sync(path: str | Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the schema checked and migrated (the service, `tax`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    check_file(path)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA synchronous=FULL")
        migrate(conn, path, existed)
    except sqlite3.DatabaseError as exc:  # OperationalError included: locked, unreadable, disk I/O
        conn.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        raise StateDatabaseError(path, f"cannot be used ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Read without writing anything (``status`` beside a running service); the file must exist."""
    check_file(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn
