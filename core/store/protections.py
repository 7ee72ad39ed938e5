"""Exchange-side protections (OCO lists and lone stop-limits) and the manual command queue: SQL.

A protection row is written *before* its request is sent (like an order row): its client ids are
ours and derived from its row id, so a crash between sending and storing the reply is resolved by
looking the legs up by those ids. The legs themselves are ordinary ``orders`` rows (type limit,
intent exit), so their fills land in ``fills`` (and the tax ledger) through the one order path.

The command queue carries `pitrader close/pause/resume/buy/exclude` from the CLI to a running
service: the CLI inserts a row and waits; the service executes it within a monitor interval and
writes the outcome back.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

SCHEMA = """
CREATE TABLE protections (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    position_id INTEGER NOT NULL,
    symbol      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('oco', 'stop')),
    list_id     TEXT,
    stop_id     TEXT NOT NULL,
    target_id   TEXT,
    amount      TEXT NOT NULL,
    stop        TEXT NOT NULL,
    limit_price TEXT NOT NULL,
    target      TEXT,
    status      TEXT NOT NULL CHECK (status IN ('new', 'active', 'done', 'failed')),
    reason      TEXT NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE INDEX protections_position ON protections(position_id);
CREATE INDEX protections_status ON protections(status);
CREATE TABLE commands (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    action     TEXT NOT NULL,
    args       TEXT NOT NULL DEFAULT '{}',
    who        TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    outcome    TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    done_ms    INTEGER
);
CREATE INDEX commands_status ON commands(status);
"""

COLUMNS = ("id, position_id, symbol, kind, list_id, stop_id, target_id, amount, stop, limit_price, target, status, "
           "reason, created_ms, updated_ms")


@dataclass(slots=True)
class ProtectionRow:
    """One protective placement; ``status`` follows ``core.trading.protection.TRANSITIONS``."""

    position_id: int
    symbol: str
    kind: str  # "oco" | "stop"
    amount: Decimal
    stop: Decimal
    limit: Decimal
    target: Decimal | None
    created_ms: int
    status: str = "new"
    id: int | None = None
    list_id: str | None = None
    stop_id: str = ""
    target_id: str | None = None
    reason: str = ""
    updated_ms: int = 0

    @property
    def leg_ids(self) -> list[str]:
        return [self.stop_id] + ([self.target_id] if self.target_id else [])


def _row(r: Any) -> ProtectionRow:
    return ProtectionRow(id=r[0], position_id=r[1], symbol=r[2], kind=r[3], list_id=r[4], stop_id=r[5],
                         target_id=r[6], amount=Decimal(r[7]), stop=Decimal(r[8]), limit=Decimal(r[9]),
                         target=Decimal(r[10]) if r[10] is not None else None, status=r[11], reason=r[12],
                         created_ms=r[13], updated_ms=r[14])


async def insert(conn, p: ProtectionRow, ids) -> ProtectionRow:
    """Insert ``p`` and name it: ``ids(row_id) -> (list_id, stop_id, target_id)``."""
    cur = await conn.execute(
        "INSERT INTO protections (position_id, symbol, kind, stop_id, amount, stop, limit_price, target, status, "
        "reason, created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (p.position_id, p.symbol, p.kind, "", str(p.amount), str(p.stop), str(p.limit),
         None if p.target is None else str(p.target), p.status, p.reason, p.created_ms, p.created_ms))
    p.id = cur.lastrowid
    p.list_id, p.stop_id, p.target_id = ids(p.id)
    await conn.execute("UPDATE protections SET list_id=?, stop_id=?, target_id=? WHERE id=?",
                       (p.list_id, p.stop_id, p.target_id, p.id))
    return p


async def update(conn, p: ProtectionRow) -> None:
    await conn.execute("UPDATE protections SET status=?, reason=?, updated_ms=? WHERE id=?",
                       (p.status, p.reason[:300], p.updated_ms, p.id))


async def live(db) -> list[ProtectionRow]:
    """Protections not finished yet (new or active), oldest first."""
    async with db.execute(f"SELECT {COLUMNS} FROM protections WHERE status IN ('new', 'active') ORDER BY id") as c:
        return [_row(r) for r in await c.fetchall()]


async def of_position(db, position_id: int) -> list[ProtectionRow]:
    async with db.execute(f"SELECT {COLUMNS} FROM protections WHERE position_id=? ORDER BY id",
                          (position_id,)) as c:
        return [_row(r) for r in await c.fetchall()]


def resting_sync(conn) -> dict[int, list[ProtectionRow]]:
    """Read-only view for `pitrader status`: position id -> its protections not finished."""
    try:
        rows = conn.execute(f"SELECT {COLUMNS} FROM protections WHERE status IN ('new', 'active') ORDER BY id")
    except Exception:  # noqa: BLE001 - a database from before the protections table
        return {}
    out: dict[int, list[ProtectionRow]] = {}
    for r in rows:
        p = _row(r)
        out.setdefault(p.position_id, []).append(p)
    return out


def count_sync(conn, status: str) -> int:
    try:
        return conn.execute("SELECT COUNT(*) FROM protections WHERE status=?", (status,)).fetchone()[0]
    except Exception:  # noqa: BLE001
        return 0


# --- the manual command queue --------------------------------------------------------------------
def enqueue_sync(conn, action: str, args: dict, who: str) -> int:
    cur = conn.execute("INSERT INTO commands (action, args, who, created_ms) VALUES (?,?,?,?)",
                       (action, json.dumps(args, sort_keys=True), who, int(time.time() * 1000)))
    return int(cur.lastrowid)


def command_sync(conn, command_id: int) -> tuple[str, str] | None:
    row = conn.execute("SELECT status, outcome FROM commands WHERE id=?", (command_id,)).fetchone()
    return (row[0], row[1]) if row else None


def cancel_sync(conn, command_id: int, why: str) -> bool:
    """Withdraw a command nobody picked up (the service did not answer in time)."""
    cur = conn.execute("UPDATE commands SET status='failed', outcome=?, done_ms=? WHERE id=? AND status='queued'",
                       (why, int(time.time() * 1000), command_id))
    return cur.rowcount == 1


async def take_commands(db) -> list[tuple[int, str, dict, str]]:
    """Queued commands, oldest first, marked running (one service executes each once)."""
    async with db.execute("SELECT id, action, args, who FROM commands WHERE status='queued' ORDER BY id") as c:
        rows = list(await c.fetchall())
    out = []
    for cid, action, args, who in rows:
        cur = await db.execute("UPDATE commands SET status='running' WHERE id=? AND status='queued'", (cid,))
        if cur.rowcount == 1:
            out.append((cid, action, json.loads(args or "{}"), who))
    await db.commit()
    return out


async def finish_command(db, command_id: int, ok: bool, outcome: str) -> None:
    await db.execute("UPDATE commands SET status=?, outcome=?, done_ms=? WHERE id=?",
                     ("done" if ok else "failed", outcome[:2000], int(time.time() * 1000), command_id))
    await db.commit()
