"""`pitrader scan --once` and `pitrader run` against the loopback exchange over real HTTP.

The emulator runs in realtime mode: the recorded candles of 2021-05-10 are served as if they were
today, so the real CLI on the real wall clock sees fresh data, exactly as against Binance.
"""
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from tests.conftest import ALL_STRATEGIES, ROOT
from tests.support.emulator import running_emulator

START = int(datetime(2021, 5, 10, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture(scope="module")
def emu():
    with running_emulator(start_ms=START, realtime=True) as e:
        yield e


def _cli(config, state_dir, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "core", "--config", str(config), "--state-dir", str(state_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})


def test_scan_once_json_and_table(emu, config_file, tmp_path):
    cfg = config_file({"exchange": {"api_url": emu.url}, "universe": {"min_quote_volume": 0}, **ALL_STRATEGIES})
    proc = _cli(cfg, tmp_path, "scan", "--once", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"pairs_scanned", "pairs_skipped", "skipped", "duration_s", "opportunities"}
    assert out["pairs_scanned"] >= 100 and out["pairs_scanned"] + out["pairs_skipped"] <= 150
    opps = out["opportunities"]
    assert opps, "a real market day with 100+ pairs has at least one signal above the default 60"
    assert [o["score"] for o in opps] == sorted((o["score"] for o in opps), reverse=True)
    for o in opps:
        assert set(o) == {"symbol", "strategy", "side", "score", "price", "stop", "target", "reason"}
        assert o["stop"] < o["price"] < o["target"] and o["score"] >= 60 and o["reason"]
    table = _cli(cfg, tmp_path, "scan", "--once")
    assert table.returncode == 0, table.stderr
    assert "opportunities at" in table.stdout and opps[0]["symbol"] in table.stdout
    assert "pairs scanned" in table.stdout


def test_paper_engine_runs_against_the_exchange(emu, config_file, tmp_path):
    cfg = config_file({"exchange": {"api_url": emu.url}, "universe": {"min_quote_volume": 0},
                       "scanner": {"interval_s": 1, "min_opportunity_score": 0.3}, **ALL_STRATEGIES})
    proc = _cli(cfg, tmp_path, "run", "--max-cycles", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with sqlite3.connect(tmp_path / "paper.db") as db:
        assert db.execute("SELECT count(*) FROM equity").fetchone()[0] == 1  # a snapshot a minute at most
        entries = db.execute("SELECT count(*) FROM positions").fetchone()[0]
        fills = db.execute("SELECT count(*) FROM fills WHERE side='buy'").fetchone()[0]
    assert entries >= 1 and fills == entries  # paper fills at the exchange's real order book
    assert emu.order_list == []  # paper mode never sends an order


def test_live_run_with_a_refused_key_exits_78_with_one_line(emu, config_file, tmp_path):
    """-2015 at start: a configuration error, not an outage to retry forever (issue 15 item 7)."""
    secret = "wrong-secret-5f3a9c"
    env = tmp_path / "pitrader.env"
    env.write_text(f"BINANCE_API_KEY=wrong-key-81c2e7\nBINANCE_API_SECRET={secret}\n")
    env.chmod(0o600)
    cfg = config_file({"mode": "live", "exchange": {"api_url": emu.url, "timeout_s": 2},
                       "universe": {"min_quote_volume": 0}, "scanner": {"interval_s": 1}})
    proc = _cli(cfg, tmp_path, "--env-file", str(env), "run", "--max-cycles", "3", timeout=120)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("pitrader:")]
    assert len(lines) == 1 and "code -2015" in lines[0] and "refused the API key" in lines[0], proc.stderr
    assert secret not in proc.stderr + proc.stdout and "wrong-key-81c2e7" not in proc.stderr + proc.stdout
    assert emu.order_list == []
