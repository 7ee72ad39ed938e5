"""`pitrader status`: what a state DB written by the real executor and risk gate shows."""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from core.cli import main
from core.clock import VirtualClock
from core.trading.paper import PaperExecutor
from core.exchange.replay import ReplayGateway
from core.trading.risk import RESUME_KEY, Approval, RiskGate
from core.store.state import Store, db_path
from tests.support.trading import SAMPLE, make_cfg, opp

D = Decimal
T = 1_619_827_200_000  # 2021-05-01 00:00 UTC


def build_state(state_dir, now_ms: int):
    """Two entries and one exit in paper mode, a drawdown halt, a scan summary, like a running bot."""
    cfg = make_cfg(risk={"max_drawdown_pct": 0.01, "max_daily_loss_pct": 0.01})

    async def go():
        clock = VirtualClock(now_ms)
        gw = ReplayGateway(SAMPLE, clock, symbols=["BTC/USDT", "ETH/USDT"])
        async with Store.open(db_path(state_dir, "paper")) as store:
            ex, gate = PaperExecutor(cfg, store, gw, clock), RiskGate(cfg, store, clock)
            await ex.start()
            await gate.load()
            prices = {s: t.last for s, t in (await gw.fetch_tickers()).items()}
            pf = await ex.portfolio(prices)
            await gate.on_equity(pf.equity, clock.now_ms())
            for sym, amount in (("BTC/USDT", "0.001"), ("ETH/USDT", "0.02")):
                px = D(str(prices[sym]))
                await ex.open_position(opp(sym, price=float(px)), Approval(D(amount), px, px * D("0.97"),
                                                                            px * D("1.06"), "t"))
            eth = ex.positions[1]
            await ex.close_position(eth, "stop_loss", float(eth.entry_price) * 0.5)  # a painful exit
            pf = await ex.portfolio(prices)
            await gate.on_equity(pf.equity, now_ms)
            store.record_equity(now_ms, pf.equity, pf.cash)
            await store.set_state("last_scan", {"ts_ms": now_ms, "pairs_scanned": 119, "pairs_skipped": 7,
                                                "duration_s": 0.8, "opportunities": [
                                                    {"symbol": "SOL/USDT", "strategy": "momentum", "score": 81.0}]})
            return pf.equity, gate.halts, ex.positions[0]

    return asyncio.run(go())


def test_status_json_and_table(tmp_path, config_file, capsys):
    cfg_path = config_file()
    state = tmp_path / "state"
    state.mkdir()
    # "today" for the status command is the wall clock: put the bot's day there
    import time

    now = int(time.time() * 1000)
    equity, halts, btc = build_state(state, now)
    assert any(h.startswith("drawdown") for h in halts)

    assert main(["--config", str(cfg_path), "--state-dir", str(state), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == ["mode", "equity", "open_positions", "day_pnl", "halts", "last_scan", "health"]
    assert doc["mode"] == "paper" and doc["equity"] == float(equity)
    assert [p["symbol"] for p in doc["open_positions"]] == ["BTC/USDT"]
    first = doc["open_positions"][0]
    assert first["amount"] == 0.001 and first["entry_price"] == float(btc.entry_price)
    assert doc["day_pnl"] < -5  # the ETH stop-loss at half price, the same UTC day
    assert {h["halt"] for h in doc["halts"]} == {"drawdown", "daily_loss"}
    assert doc["last_scan"]["pairs_scanned"] == 119 and doc["health"] is None

    assert main(["--config", str(cfg_path), "--state-dir", str(state), "status"]) == 0
    out = capsys.readouterr().out
    assert "HALT drawdown" in out and "BTC/USDT" in out and "119 pairs" in out and "1 trades" in out


def test_status_resume_request_reaches_the_gate(tmp_path, config_file, capsys):
    cfg_path = config_file()
    state = tmp_path / "state"
    state.mkdir()
    assert main(["--config", str(cfg_path), "--state-dir", str(state), "status", "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    build_state(state, T + 86_400_000)
    assert main(["--config", str(cfg_path), "--state-dir", str(state), "status", "--resume"]) == 0
    assert "resume requested" in capsys.readouterr().out

    async def restart():
        async with Store.open(db_path(state, "paper")) as store:
            gate = RiskGate(make_cfg(risk={"max_drawdown_pct": 0.01, "max_daily_loss_pct": 0.01}), store,
                            VirtualClock(T + 86_400_000))
            await gate.load()
            return gate.emergency, await store.get_state(RESUME_KEY)

    assert asyncio.run(restart()) == (False, None)


def test_status_without_state(tmp_path, config_file, capsys):
    assert main(["--config", str(config_file()), "--state-dir", str(tmp_path), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["equity"] is None and doc["open_positions"] == [] and doc["halts"] == []


def test_status_on_a_corrupt_database_is_one_line_and_exit_74(tmp_path, config_file, capsys):
    """Issue 15 item 3: pages damaged behind an intact header (what a failing SD card leaves)."""
    state = tmp_path / "state"
    build_state(state, T)
    path = db_path(state, "paper")
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes((i * 37 + 11) % 256 for i in range(len(data) - page))
    path.write_bytes(bytes(data))
    for args in ([], ["--json"]):
        code = main(["--config", str(config_file()), "--state-dir", str(state), "status", *args])
        out = capsys.readouterr()
        assert code == 74, out
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.err, out.err
        assert "malformed" in lines[0] or "not a database" in lines[0], lines


def test_status_on_a_newer_schema_is_one_line_and_exit_74(tmp_path, config_file, capsys):
    """A database a newer pitrader wrote (a renamed table here) is named as such, not a traceback."""
    import sqlite3

    state = tmp_path / "state"
    build_state(state, T)
    conn = sqlite3.connect(db_path(state, "paper"))
    conn.execute("PRAGMA user_version=99")
    conn.execute("ALTER TABLE positions RENAME TO positions_v99")
    conn.commit()
    conn.close()
    code = main(["--config", str(config_file()), "--state-dir", str(state), "status"])
    out = capsys.readouterr()
    assert code == 74 and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == 1 and "newer" in out.err
