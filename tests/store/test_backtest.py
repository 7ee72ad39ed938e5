"""The backtest store serves bot_state from memory and writes it at flush: reads must see every write
at once, and the kept file (``--db``) must end up holding what the store would have written."""
from __future__ import annotations

import asyncio
import sqlite3

from core.store.backtest import backtest_store


def _file_state(path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM bot_state"))
    finally:
        conn.close()


def test_state_reads_see_writes_and_the_file_gets_them_at_flush(tmp_path):
    db = tmp_path / "bt.db"

    async def go():
        async with backtest_store(db) as store:
            assert await store.get_state("risk", {"x": 1}) == {"x": 1}
            await store.set_state("risk", {"peak": 2})
            value = {"n": [1, 2]}
            await store.set_state("last_scan", value)
            value["n"].append(3)  # the stored value is the one at the call
            assert await store.get_state("risk") == {"peak": 2}
            assert await store.get_state("last_scan") == {"n": [1, 2]}
            await store.set_state("gone", 1)
            await store.flush()
            await store.delete_state("gone")
            await store.delete_state("never_there")
            assert await store.get_state("gone") is None
            async with store.transaction() as conn:  # inside a transaction: written with it, at once
                await store.set_state("durable", "yes", conn)
            assert store.db.conn.execute("SELECT value FROM bot_state WHERE key='durable'").fetchone() == ('"yes"',)
            await store.set_state("risk", {"peak": 3})

    asyncio.run(go())
    assert _file_state(db) == {"risk": '{"peak": 3}', "last_scan": '{"n": [1, 2]}', "durable": '"yes"'}
