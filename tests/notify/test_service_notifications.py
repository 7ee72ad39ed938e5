"""Notifications from the real service (`pitrader run` in a subprocess) against the exchange emulator,
a loopback Telegram Bot API and a webhook receiver: fills, start/stop and commands arrive; a receiver
outage and a SIGKILL between a fill and its delivery lose nothing and duplicate nothing."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.emulator import running_emulator
from tests.support.fast_clock import market_ms
from tests.support.http_fakes import FakeTelegram, WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456:TEST-token-abcdefghijklmnop"
SPEED = 720.0
MARKET_T0 = 1_615_420_800_000  # 2021-03-11 00:00 UTC


def _config(d: Path, emu_url: str, tg_url: str) -> Path:
    cfg = json.loads((ROOT / "config.json").read_text())
    cfg["exchange"].update({"api_url": emu_url, "timeout_s": 5.0, "weight_budget_pct": 0.9})
    cfg["universe"].update({"max_pairs": 12, "min_quote_volume": 0})
    cfg["scanner"].update({"interval_s": 2, "timeframes": ["1h"], "confirm_timeframe": None, "candles": 300,
                           "min_opportunity_score": 0.0})
    cfg["trading"].update({"stop_loss_pct": 0.003, "take_profit_pct": 0.006, "monitor_interval_s": 0.5,
                           "max_hold_hours": 1})
    cfg["risk"].update({"cooldown_minutes": 0, "max_daily_loss_pct": 0.5, "max_drawdown_pct": 0.5})
    cfg["notify"]["telegram"].update({"enabled": True, "chat_ids": ["42"], "api_url": tg_url})
    cfg["notify"]["webhook"].update({"enabled": True, "format": "json"})
    path = d / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _outbox(db: Path) -> list[tuple[int, str]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, kind FROM outbox ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _until(cond, seconds: float, proc=None, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the service exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_the_service_notifies_and_survives_outages_and_a_kill(tmp_path):
    with running_emulator(balances={"USDT": "10000"}, start_ms=MARKET_T0, seed=7) as emu, \
            FakeTelegram(TOKEN) as tg, WebhookReceiver() as hook:
        wall_t0 = int(time.time() * 1000)
        stop_clock = threading.Event()

        def market_clock():
            while not stop_clock.is_set():
                emu.set_time(max(emu.now_ms, market_ms(time.time() * 1000, MARKET_T0, wall_t0, SPEED)))
                time.sleep(0.02)

        threading.Thread(target=market_clock, daemon=True).start()
        config = _config(tmp_path, emu.url, tg.url)
        env_file = tmp_path / "pitrader.env"
        env_file.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nNOTIFY_WEBHOOK_URL={hook.url}/hook/SECRETPART\n")
        state = tmp_path / "state"
        db = state / "paper.db"
        env = dict(os.environ, PT_MARKET_T0_MS=str(MARKET_T0), PT_WALL_T0_MS=str(wall_t0), PT_SPEED=str(SPEED))
        env.pop("STATE_DIRECTORY", None)
        cmd = [sys.executable, "-m", "tests.support.fast_clock", "--config", str(config), "--env-file",
               str(env_file), "--state-dir", str(state), "run"]
        logs: list[Path] = []

        def launch() -> subprocess.Popen:
            logs.append(tmp_path / f"run-{len(logs)}.log")
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logs[-1].open("w"), stderr=subprocess.STDOUT)

        def kinds() -> list[str]:
            return [b["kind"] for b in hook.bodies()]

        proc = launch()
        try:
            # 1. start and fills arrive on both channels; commands are answered, strangers ignored
            _until(lambda: "start" in kinds() and "entry_fill" in kinds() and "exit_fill" in kinds(), 90, proc,
                   "start, entry and exit notifications")
            tg.say(42, "/status")
            tg.say(666, "/pause")
            _until(lambda: any(t.startswith("pitrader paper") for t in tg.texts("42")), 30, proc, "/status answer")
            assert tg.texts("666") == []
            # 2. the receiver goes down; a fill is recorded; the service is killed before it is delivered
            hook.down = True
            seen = len(_outbox(db))
            _until(lambda: any(k.endswith("_fill") for _, k in _outbox(db)[seen:]), 60, proc, "a fill during the outage")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            hook.down = False
            # 3. after the restart everything recorded is delivered exactly once
            proc = launch()
            _until(lambda: sum(k == "start" for _, k in _outbox(db)) >= 2, 60, proc, "the second start")
            recorded = [i for i, k in _outbox(db)]
            _until(lambda: set(recorded) <= {i for b in hook.bodies() for i in b["ids"]}, 60, proc,
                   "delivery of every recorded event")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, logs[-1].read_text()[-3000:]
        finally:
            stop_clock.set()
            if proc.poll() is None:
                proc.kill()
        delivered = [i for b in hook.bodies() for i in b["ids"]]
        texts = "\n".join(tg.texts("42"))
        log_text = "\n".join(p.read_text() for p in logs)

    assert len(delivered) == len(set(delivered)), "a delivered event was sent again"
    # the clean stop is recorded (delivered now, or at the next start if the minute's budget is spent)
    assert [k for _, k in _outbox(db)][-1] == "stop"
    assert "ignored a message from chat 666" in log_text
    assert "BUY " in texts and "SELL " in texts
    assert TOKEN not in log_text and "SECRETPART" not in log_text
