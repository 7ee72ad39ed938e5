"""The engine over real recorded data: cycles, limits, clean shutdown, restart/resume, demo."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from core.config import Config
from core.engine import Engine
from core.exchange.setup import replay_setup
from core.store.state import Store
from tests.conftest import ROOT, SAMPLE


def _cfg(**trading) -> Config:
    cfg = Config()
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
    cfg = _cfg()
    db = tmp_path / "p.db"
    engine1, t1, pos1, _, curve1 = asyncio.run(_run(cfg, db, 60))
    engine2, _, pos2, _, curve2 = asyncio.run(_run(cfg, db, 1, start_at=t1 + 3_600_000))
    # the second run continued the same positions (same ids) and the same money
    assert {p.id for p in pos1} <= {p.id for p in pos2}
    assert curve2[:len(curve1)] == curve1
    first_after_restart = curve2[len(curve1)][1]
    assert abs(first_after_restart - curve1[-1][1]) / curve1[-1][1] < Decimal("0.05")


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
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "core", "--config", str(ROOT / "config.json"), "demo", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cycles"] >= 300 and summary["pairs"] >= 100
    assert summary["trades"] > 0
    assert 0 <= summary["win_rate"] <= 1 and 0 <= summary["max_drawdown"] < 1
    assert time.time() - t0 < 300
