"""The engine over real recorded data: cycles, limits, clean shutdown, restart/resume, demo."""
import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from core.config import Config, config_from_dict
from core.engine.hooks import CycleReport
from core.engine.loop import Engine
from core.models import ScanResult
from core.exchange.setup import replay_setup
from core.store.state import Store
from tests.conftest import ALL_STRATEGIES, ROOT, SAMPLE


def _cfg(**trading) -> Config:
    cfg = config_from_dict(ALL_STRATEGIES)  # every shipped strategy, opened up, so the short sample slice has plenty to trade
    return replace(cfg, scanner=replace(cfg.scanner, min_opportunity_score=0.3),
                   trading=replace(cfg.trading, **trading))


async def _run(cfg, db, cycles, start_at=None):
    gw, clock, end = replay_setup(cfg, SAMPLE)
    if start_at:
        clock.advance_to(start_at)
    async with Store.open(db) as store:
        engine = Engine(cfg, gw, store, clock)
        await engine.run(max_cycles=cycles, until_ms=end, interval_s=3600)
        return engine, clock.now_ms(), await store.positions(), await store.fills(), await store.equity_curve()


def test_engine_trades_real_data_within_limits(tmp_path):
    cfg = _cfg()
    engine, _, positions, fills, curve = asyncio.run(_run(cfg, tmp_path / "p.db", 150))
    assert engine.cycles == 150 and len(curve) == 150
    assert positions, "150 hours of real data with a low score threshold should produce trades"
    open_pos = [p for p in positions if p.status != "closed"]
    assert len(open_pos) <= cfg.risk.max_open_positions
    assert len({p.symbol for p in open_pos}) == len(open_pos)  # one position per pair
    peak = max(e for _, e in curve)
    for p in positions:
        assert p.stop < p.entry_price < p.target
        # the cap applies to equity at entry (never above the peak); 1 % covers modelled slippage
        assert p.cost <= peak * Decimal(str(cfg.trading.position_size_pct)) * Decimal("1.01")
    closed = [p for p in positions if p.status == "closed"]
    assert all(p.exit_reason for p in closed)
    buys = [f for f in fills if f.side == "buy"]
    sells = [f for f in fills if f.side == "sell"]
    assert len(buys) == len(positions) and len(sells) == len(closed)


def test_restart_resumes_positions_and_cash(tmp_path):
    """A restart changes nothing: 20 cycles, a restart, 10 more give the same equity to the last digit,
    the same positions and the same fills as 30 cycles in one go (the replay is deterministic, and
    everything a cycle needs is in the store or re-derived from it)."""
    cfg = _cfg()
    db = tmp_path / "p.db"
    _, t1, pos1, fills1, curve1 = asyncio.run(_run(cfg, db, 20))
    _, _, pos2, fills2, curve2 = asyncio.run(_run(cfg, db, 10, start_at=t1 + 3_600_000))
    _, _, pos_once, fills_once, curve_once = asyncio.run(_run(cfg, tmp_path / "once.db", 30))
    assert any(p.status != "closed" for p in pos1), "positions must be open across the restart"
    assert len(fills2) > len(fills1), "the resumed run must trade"
    assert len(curve2) == 30
    assert curve2 == curve_once
    assert pos2 == pos_once
    assert fills2 == fills_once


def _spawn(args, tmp_path):
    """The CLI in a child process, its output in a file (a pipe nobody reads would fill and block it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("STATE_DIRECTORY", None)
    log = open(tmp_path / "out.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "core", "--config", str(ROOT / "config.json"),
                             "--state-dir", str(tmp_path), *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.output = lambda: (log.seek(0), log.read())[1]
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_flushes_and_exits_0(tmp_path, sig):
    proc = _spawn(["run", "--replay", str(SAMPLE)], tmp_path)
    db = tmp_path / "replay.db"
    deadline = time.time() + 120
    while time.time() < deadline and not (db.exists() and _equity_rows(db) >= 1):
        time.sleep(0.2)
        assert proc.poll() is None, proc.output()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    out = proc.output()
    assert proc.returncode == 0, out
    assert "finishing the current step" in out and "engine stopped" in out
    rows = _equity_rows(db)
    assert rows >= 1
    # stopped early: nowhere near the 500 cycles of the full replay
    assert rows < 500


def _equity_rows(db) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT count(*) FROM equity").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_demo_end_to_end():
    proc = subprocess.run([sys.executable, "-m", "core", "--config", str(ROOT / "config.json"), "demo", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cycles"] >= 300 and summary["pairs"] >= 100
    assert summary["trades"] > 0
    assert 0 <= summary["win_rate"] <= 1 and 0 <= summary["max_drawdown"] < 1


# --- entries: cheap checks first; refusals logged once; one summary line a cycle ----------------

POLICY_CHECKS = {"side", "halt", "min_score", "quote", "one_per_pair", "max_positions", "cooldown", "price"}


async def _spied_run(cfg, db, cycles):
    """A replay run recording, in order, every order book the engine asks for (the paper executor's
    own look at the book when it fills is not one), every refusal by the risk gate and every
    decision of ``RiskGate.evaluate``."""
    gw, clock, end = replay_setup(cfg, SAMPLE)
    events = []
    async with Store.open(db) as store:
        engine = Engine(cfg, gw, store, clock)
        book = engine._book

        async def spied_book(symbol):
            events.append(("book", symbol))
            return await book(symbol)

        engine._book = spied_book
        reject = engine.risk._reject

        def spy(symbol, check, reason):
            events.append(("refused", symbol, check))
            return reject(symbol, check, reason)

        engine.risk._reject = spy
        evaluate = engine.risk.evaluate

        async def evaluated(opp, *args):
            decision = await evaluate(opp, *args)
            events.append(("decided", opp.symbol, type(decision).__name__))
            return decision

        engine.risk.evaluate = evaluated
        await engine.run(max_cycles=cycles, until_ms=end, interval_s=3600)
    return events


def test_no_book_is_fetched_for_a_candidate_refused_by_a_cheap_check(tmp_path):
    events = asyncio.run(_spied_run(_cfg(), tmp_path / "p.db", 12))
    cheap = [(i, e) for i, e in enumerate(events) if e[0] == "refused" and e[2] in POLICY_CHECKS]
    assert len(cheap) > 20 and any(e[0] == "book" for e in events)  # both happen in these 12 hours
    for i, (_, sym, check) in cheap:
        assert events[i - 1] != ("book", sym), f"book fetched for {sym}, then refused by {check}"
    # and every fetched book was for a candidate past those checks
    for i, e in enumerate(events):
        if e[0] == "book" and i + 1 < len(events) and events[i + 1][:2] == ("refused", e[1]):
            assert events[i + 1][2] not in POLICY_CHECKS


def _refusal_key(msg):
    m = re.match(r"risk: (\S+) rejected by (\w+):", msg) or re.match(r"risk: entries refused by (\w+):", msg)
    if m is None:
        return None
    return (m.group(1), m.group(2)) if m.lastindex == 2 else ("*", m.group(1))


def test_each_refusal_is_logged_once_with_one_summary_a_cycle(tmp_path, caplog):
    """Issue 14: 1,100 of 1,365 lines of a 50-cycle replay were the same refusals, cycle after cycle."""
    caplog.set_level(logging.DEBUG)
    cycles = 40
    asyncio.run(_run(_cfg(), tmp_path / "p.db", cycles))
    per_cycle, info, refusals = [[]], [[]], 0
    for rec in caplog.records:
        msg = rec.getMessage()
        if rec.name == "core.engine" and msg.startswith("cycle: "):
            per_cycle.append([])
            info.append([])
            continue
        key = _refusal_key(msg)
        if key is not None:
            refusals += 1
            per_cycle[-1].append(key)
            if rec.levelno >= logging.INFO:
                info[-1].append(key)
    assert len(per_cycle) == cycles + 1  # a summary line closes every cycle
    for n in range(1, cycles):
        assert len(info[n]) == len(set(info[n]))  # once within a cycle...
        assert not set(info[n]) & set(per_cycle[n - 1]), f"cycle {n}: refused in cycle {n - 1} already"
    logged = sum(len(i) for i in info)
    assert refusals > 300 and logged * 5 < refusals
    halts = [r for r in caplog.records if r.getMessage().startswith("halt: ")]
    halt_refusals = [k for i in info for k in i if k == ("*", "halt")]
    # since issue 17 the loss limits are caps (entries sized to a loss budget): a halt in 40 cycles
    # needs a gap through a stop, so it may not happen here; when it does, it is logged once
    assert len(halt_refusals) <= len(halts)


def test_cycle_summary_at_info_only_when_it_changes_or_hourly(tmp_path, caplog, monkeypatch):
    """The hour is wall time (the journal's heartbeat), so a replay's market hours do not repeat it."""
    wall = [0]
    monkeypatch.setattr("core.engine.loop.wall_ms", lambda: wall[0])

    async def main():
        gw, clock, _ = replay_setup(_cfg(), SAMPLE)
        async with Store.open(tmp_path / "s.db") as store:
            engine = Engine(_cfg(), gw, store, clock)
            scan = ScanResult(119, 0, {}, 0.1, [])
            levels = []
            for ts, refused in [(0, {"max_positions": 3}), (10_000, {"max_positions": 3}),
                                (20_000, {"max_positions": 4}), (30_000, {"max_positions": 4}),
                                (20_000 + 3_600_000, {"max_positions": 4})]:
                caplog.clear()
                wall[0] = ts
                engine._log_summary(CycleReport(ts, scan, Decimal(1000), Decimal(500), 5, refused=refused))
                [rec] = [r for r in caplog.records if r.getMessage().startswith("cycle: ")]
                levels.append(rec.levelno)
            caplog.clear()  # a replay: ten market hours later, the same moment of wall time
            engine._log_summary(CycleReport(10 * 3_600_000, scan, Decimal(1000), Decimal(500), 5,
                                            refused={"max_positions": 4}))
            [replayed] = [r for r in caplog.records if r.getMessage().startswith("cycle: ")]
            levels.append(replayed.levelno)
            return levels, rec.getMessage()

    caplog.set_level(logging.DEBUG, logger="core.engine")
    levels, text = asyncio.run(main())
    assert levels == [logging.INFO, logging.DEBUG, logging.INFO, logging.DEBUG, logging.INFO, logging.DEBUG]
    assert text == ("cycle: 119 pairs (0 skipped), 0 opportunities, entries 0, exits 0, positions 5/5, "
                    "refused 4 (max_positions 4)")


def test_each_strategy_exits_by_its_own_time_and_trailing_rules(tmp_path):
    """strategies.params.<name>.max_hold_hours / trailing_stop_pct win over trading.*; null follows it."""
    doc = json.loads(json.dumps(ALL_STRATEGIES))
    params = doc["strategies"]["params"]
    params["mean_reversion"].update(max_hold_hours=4, trailing_stop_pct=0)
    params["trend_following"].update(max_hold_hours=0, trailing_stop_pct=0.02)
    params["momentum"].update(max_hold_hours=None, trailing_stop_pct=None)
    cfg = config_from_dict(doc)
    cfg = replace(cfg, scanner=replace(cfg.scanner, min_opportunity_score=0.3),
                  trading=replace(cfg.trading, max_hold_hours=6, trailing_stop_pct=0.05))
    _, _, positions, _, _ = asyncio.run(_run(cfg, tmp_path / "p.db", 200))
    hold = {"mean_reversion": 4, "momentum": 6}
    trail = {"mean_reversion": Decimal(0), "trend_following": Decimal("0.02"), "momentum": Decimal("0.05")}
    reasons: dict[str, set[str]] = {}
    for p in positions:
        assert p.trail_pct == trail[p.strategy], p
        if p.status != "closed":
            continue
        kind = p.exit_reason.split(":")[0]
        reasons.setdefault(p.strategy, set()).add(kind)
        held_h = (p.closed_ms - p.opened_ms) / 3_600_000
        if p.strategy in hold:
            assert held_h <= hold[p.strategy], p  # the time exit comes in the cycle the limit is reached
        if kind == "time_exit":
            assert held_h == hold.get(p.strategy), p
        if kind == "trailing_stop":
            assert p.strategy != "mean_reversion", p
    assert "time_exit" not in reasons.get("trend_following", set())
    assert {"mean_reversion", "trend_following", "momentum"} <= set(reasons), reasons
    assert "time_exit" in reasons["mean_reversion"] and "trailing_stop" in reasons["trend_following"], reasons


def test_replay_settles_a_candles_stop_before_the_risk_gate_judges_the_marks(tmp_path):
    """FIL/USDT's candle of 2021-05-13 01:00 UTC opened at 127.09, fell to 87.26 and closed at 106.92.
    A position with a stop at 124.55 is sold there (as the exchange-side stop would be live): the
    day loses that stop-out, about 0.2 % of equity, not the 1.6 % a mark at the close would show,
    so a 1 % daily cap does not fire; the equity curve records the same."""
    from core.models import Opportunity
    from core.trading.risk import Approval

    cfg = config_from_dict({"risk": {"max_daily_loss_pct": 0.01}})
    t0 = 1_620_864_000_000  # 2021-05-13 00:00 UTC: that candle opens, the one before has closed

    async def main():
        gw, clock, _ = replay_setup(cfg, SAMPLE)
        clock.advance_to(t0)
        async with Store.open(tmp_path / "p.db") as store:
            engine = Engine(cfg, gw, store, clock)
            await engine.start()
            await engine.pause("test")  # only the position below trades
            await engine.cycle()  # the UTC day starts at 1000
            opp = Opportunity("FIL/USDT", "mean_reversion", "buy", 80.0, 127.09, 124.55, 140.0, "test")
            pos = await engine.executor.open_position(opp, Approval(Decimal("0.78"), Decimal("127.09"),
                                                                    Decimal("124.55"), Decimal("140"), "test"))
            assert pos is not None and pos.amount > 0
            clock.advance_to(t0 + 3_600_000)
            report = await engine.cycle()
            return report, engine.risk.halts, await store.positions(), await store.equity_curve()

    report, halts, (pos,), curve = asyncio.run(main())
    assert pos.exit_reason == "stop_loss" and pos.exit_price < Decimal("124.55") and pos.exit_price > Decimal("124")
    assert halts == [] and report.exits == ["FIL/USDT stop_loss"]
    loss = 1 - curve[-1][1] / curve[0][1]
    assert Decimal("0.001") < loss < Decimal("0.004"), curve
