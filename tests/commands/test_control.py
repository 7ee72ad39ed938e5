"""`pitrader pause / resume / exclude / buy / close` with the service running (through the command queue)
and stopped (acting directly), live against the loopback exchange over real HTTP (realtime mode)."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from core.cli import main
from tests.conftest import ROOT
from tests.support.emulator import running_emulator

START = int(datetime(2021, 5, 10, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture()
def live(tmp_path, config_file):
    with running_emulator(start_ms=START, realtime=True, balances={"USDT": "1000"}) as emu:
        cfg = config_file({"mode": "live", "exchange": {"api_url": emu.url},
                           "universe": {"min_quote_volume": 0, "max_pairs": 5, "include": ["ETH/USDT"]},
                           "scanner": {"interval_s": 2, "min_opportunity_score": 1.0},
                           "trading": {"monitor_interval_s": 0.5}})
        env = tmp_path / "pitrader.env"
        env.write_text(f"BINANCE_API_KEY={emu.api_key}\nBINANCE_API_SECRET={emu.api_secret}\n")
        env.chmod(0o600)
        yield emu, cfg, env, tmp_path / "state"


def cli(capsys, cfg, env, state, *args) -> tuple[int, str]:
    code = main(["--config", str(cfg), "--env-file", str(env), "--state-dir", str(state), *args])
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


def db_state(state, key):
    with sqlite3.connect(state / "live.db") as db:
        row = db.execute("SELECT value FROM bot_state WHERE key=?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def positions(state):
    with sqlite3.connect(state / "live.db") as db:
        return db.execute("SELECT id, symbol, status, exit_reason FROM positions ORDER BY id").fetchall()


def resting(emu):
    return sorted(o.type for o in emu.order_list if o.status in ("NEW", "PARTIALLY_FILLED"))


def test_commands_act_directly_when_no_service_runs(live, capsys):
    emu, cfg, env, state = live
    assert cli(capsys, cfg, env, state, "pause")[0] == 0
    assert db_state(state, "entries_paused")["by"].endswith(")")
    code, out = cli(capsys, cfg, env, state, "pause")
    assert code == 0 and "already paused" in out and "done directly" in out
    assert cli(capsys, cfg, env, state, "resume")[0] == 0 and db_state(state, "entries_paused") is None
    assert cli(capsys, cfg, env, state, "exclude", "btcusdt")[0] == 0
    assert list(db_state(state, "excluded_symbols")) == ["BTC/USDT"]
    assert cli(capsys, cfg, env, state, "exclude", "--remove", "BTC/USDT")[0] == 0
    assert db_state(state, "excluded_symbols") == {}

    code, out = cli(capsys, cfg, env, state, "buy", "ETHUSDT", "--quote", "100", "--force")
    assert code == 0 and "bought ETH/USDT: position #1" in out, out
    assert resting(emu) == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]  # protected before the command returned
    code, out = cli(capsys, cfg, env, state, "buy", "ETH/USDT", "--quote", "100")
    assert code == 1 and "one_per_pair" in out  # through the risk gate
    code, out = cli(capsys, cfg, env, state, "buy", "ETH/USDT", "--quote", "1", "--force")
    assert code == 1 and "notional" in out  # the exchange's rules are never skipped
    code, out = cli(capsys, cfg, env, state, "close", "ETH/USDT")
    assert code == 0 and "ETH/USDT: 1 position(s) (closed)" in out, out
    ((pid, sym, status, reason),) = positions(state)
    assert status == "closed" and reason.startswith("manual: root (cli")
    assert resting(emu) == [] and emu.balances.get("ETH", 0) < Decimal("0.0001")  # dust below the lot step
    code, out = cli(capsys, cfg, env, state, "close", "--all")
    assert code == 0 and "no open position" in out


def test_commands_are_carried_out_by_the_running_service(live, capsys):
    emu, cfg, env, state = live
    log = state.parent / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "core", "--config", str(cfg), "--env-file", str(env),
                             "--state-dir", str(state), "run"], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items()
                                                           if k != "STATE_DIRECTORY"})
    try:
        deadline = time.monotonic() + 120
        while "protection check done" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        code, out = cli(capsys, cfg, env, state, "pause")
        assert code == 0 and "entries paused" in out and "by the running service" in out, out
        assert db_state(state, "entries_paused") is not None
        code, out = cli(capsys, cfg, env, state, "exclude", "ETH/USDT")
        assert code == 0 and "excluded" in out
        code, out = cli(capsys, cfg, env, state, "buy", "ETH/USDT", "--quote", "100")
        assert code == 1 and "excluded" in out  # refused: excluded (and --force not given)
        assert cli(capsys, cfg, env, state, "exclude", "--remove", "ETH/USDT")[0] == 0
        code, out = cli(capsys, cfg, env, state, "buy", "ETH/USDT", "--quote", "100", "--force")
        assert code == 0 and "bought ETH/USDT" in out, out
        deadline = time.monotonic() + 30
        while resting(emu) != ["LIMIT_MAKER", "STOP_LOSS_LIMIT"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert resting(emu) == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]
        code, out = cli(capsys, cfg, env, state, "close", "--all")
        assert code == 0 and "ETH/USDT: 1 position(s)" in out, out
        assert [p[2] for p in positions(state)] == ["closed"] and resting(emu) == []
        code, out = cli(capsys, cfg, env, state, "resume")
        assert code == 0 and "entries resumed" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    assert "entries paused by" in text and "manual close of ETH/USDT" in text and "manual buy of" in text
