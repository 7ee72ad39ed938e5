"""`pitrader backup rebuild` (issue 15 item 2): after restoring a backup taken hours earlier, the
orders, fills and positions made since come back from the exchange's own records (loopback
emulator), each fill once, and a new position never reuses a client order id."""
from __future__ import annotations

import asyncio
from decimal import Decimal

from core.clock import WallClock
from core.exchange.ccxt_gateway import CcxtGateway
from core.secrets import Secrets
from core.store.backup import make_backup, restore
from core.store.state import Store
from core.trading.rebuild import rebuild
from tests.support.emulator import running_emulator
from tests.trading.test_live import check_books, enter, live_cfg, price, session

D = Decimal
ETH, BTC = "ETH/USDT", "BTC/USDT"


def test_rebuild_after_restoring_an_old_backup_loses_nothing_the_exchange_knows(tmp_path):
    db = tmp_path / "live.db"
    with running_emulator(balances={"USDT": "3000"}) as emu:
        async def main():
            cfg = live_cfg(emu.url)
            async with session(emu, db, cfg) as (ex, store, gw):
                first = await enter(ex, gw, "0.1")  # position 1: in the backup, still open there
                backup = make_backup(db, 7)
                emu.advance(3_600_000)
                second = await enter(ex, gw, "0.05")  # position 2: opened after the backup, still open
                third = await enter(ex, gw, "0.001", BTC)  # position 3: another pair, after the backup
                emu.advance(3_600_000)
                await ex.close_position(first, "take_profit", float(await price(gw)))  # closed after the backup
                assert first.status == "closed"
                expected = {p.id: (p.symbol, p.status, p.amount) for p in await store.positions()}
            assert sorted(expected) == [1, 2, 3] and second.id == 2 and third.id == 3

            kept = restore(backup, db)  # the SD card died: the backup is all that is left
            assert kept is not None
            gw = CcxtGateway(cfg, Secrets(emu.api_key, emu.api_secret), WallClock())
            try:
                async with Store.open(db) as store:
                    assert len(await store.positions()) == 1
                    rep = await rebuild(cfg, store, gw, ex.clock)
                    got = {p.id: (p.symbol, p.status, p.amount) for p in await store.positions()}
                    assert got == expected
                    assert rep.positions == [2, 3] and rep.fills_after > rep.fills_before
                    rebuilt = {p.id: p for p in await store.positions()}
                    assert rebuilt[2].strategy == "rebuilt" and rebuilt[2].stop < rebuilt[2].entry_price
                    await check_books(emu, store, D("3000"))
            finally:
                await gw.close()

            async with session(emu, db, cfg) as (ex, store, gw):  # the service starts again: a new id
                fourth = await enter(ex, gw, "0.01")
                assert fourth.id == 4
                await check_books(emu, store, D("3000"))

        asyncio.run(main())
