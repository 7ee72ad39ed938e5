"""Manual control of a running engine (Telegram, CLI): pause survives a restart, close sells now."""
import asyncio
import logging
from dataclasses import replace

from core.config import Config, config_from_dict
from core.engine.loop import Engine
from core.engine.manual import PAUSE_KEY
from core.exchange.setup import replay_setup
from core.service.remote import EngineRemote
from core.store.state import Store
from tests.conftest import ALL_STRATEGIES, SAMPLE


def _cfg() -> Config:
    cfg = config_from_dict(ALL_STRATEGIES)  # signals on the sample's falling market
    return replace(cfg, scanner=replace(cfg.scanner, min_opportunity_score=0.3))


async def _engine_session(db, cycles, act=None, start_at=None):
    cfg = _cfg()
    gw, clock, end = replay_setup(cfg, SAMPLE)
    if start_at:
        clock.advance_to(start_at)
    async with Store.open(db) as store:
        engine = Engine(cfg, gw, store, clock)
        await engine.run(max_cycles=cycles, until_ms=end, interval_s=3600)
        out = await act(engine) if act else None
        return engine, clock.now_ms(), out, await store.positions()


def test_pause_stops_entries_across_a_restart_and_resume_allows_them(tmp_path, caplog):
    db = tmp_path / "paper.db"

    async def pause(engine):
        return await engine.pause("telegram chat 42"), await engine.pause("again")

    with caplog.at_level(logging.WARNING):
        _, t, (first, second), before = asyncio.run(_engine_session(db, 20, pause))
    assert (first, second) == (True, False)
    assert any("entries paused by telegram chat 42" in r.getMessage() for r in caplog.records)

    async def check(engine):
        return engine.pause_reason(), await engine.store.get_state(PAUSE_KEY)

    engine, t2, (reason, stored), after = asyncio.run(_engine_session(db, 60, check, start_at=t))
    assert reason == "paused by telegram chat 42" and stored["by"] == "telegram chat 42"
    opened_after_pause = [p for p in after if p.opened_ms > t]
    assert opened_after_pause == [], "no entry while paused"
    assert len(after) == len(before)

    async def resume(engine):
        return await engine.resume("cli")

    _, t3, resumed, _ = asyncio.run(_engine_session(db, 0, resume, start_at=t2))
    assert resumed is True
    _, _, _, final = asyncio.run(_engine_session(db, 80, None, start_at=t3))
    assert any(p.opened_ms > t3 for p in final), "entries again after resume"


def test_close_symbol_sells_that_position_and_the_remote_says_so(tmp_path):
    db = tmp_path / "paper.db"

    async def close_one(engine):
        remote = EngineRemote(engine, wall_ms=engine.clock.now_ms)
        open_now = []
        while not open_now and engine.cycles < 300:  # run on until something is open
            await engine.run(max_cycles=engine.cycles + 1, interval_s=3600)
            open_now = [p for p in engine.executor.positions if str(p.status) == "open"]
        assert open_now, "the low threshold opens positions on the sample data"
        sym = open_now[0].symbol
        preview = await remote.close_preview(sym)
        answer = await remote.close(sym, "telegram chat 42")
        positions = await remote.positions()
        return sym, preview, answer, positions, await remote.close_preview(sym), await remote.profit(None)

    _, _, (sym, preview, answer, listing, after, profit), positions = asyncio.run(_engine_session(db, 1, close_one))
    assert sym in preview and answer == f"Sold {sym} at market (1 position)."
    assert after is None and sym not in listing
    closed = [p for p in positions if p.symbol == sym and p.exit_reason == "manual: telegram chat 42"]
    assert len(closed) == 1 and closed[0].status == "closed"
    assert "trades" in profit


def test_a_remote_action_waits_for_the_step_the_loop_is_in(tmp_path):
    """/pause or /close from the Telegram task runs between the loop's steps, not inside a cycle
    (where it would race the cycle's own exit and its transactions on the shared connection)."""
    order: list[str] = []

    async def go():
        cfg = _cfg()
        gw, clock, end = replay_setup(cfg, SAMPLE)
        async with Store.open(tmp_path / "paper.db") as store:
            engine = Engine(cfg, gw, store, clock)
            inside, release = asyncio.Event(), asyncio.Event()
            real_cycle, real_pause = engine.cycle, engine.pause

            async def held_cycle():
                order.append("cycle")
                inside.set()
                await release.wait()
                report = await real_cycle()
                order.append("cycle done")
                return report

            async def pause(who):
                order.append("pause")
                return await real_pause(who)

            engine.cycle, engine.pause = held_cycle, pause
            run = asyncio.create_task(engine.run(max_cycles=1, interval_s=3600))
            await inside.wait()
            act = asyncio.create_task(EngineRemote(engine, wall_ms=clock.now_ms).pause("telegram chat 42"))
            for _ in range(20):
                await asyncio.sleep(0)
            order.append("released")
            release.set()
            answer = await act
            await run
            return answer

    answer = asyncio.run(go())
    assert answer.startswith("New entries paused")
    assert order.index("pause") > order.index("cycle done"), order
