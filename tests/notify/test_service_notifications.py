"""Notifications from the real service (`pitrader run` in a subprocess) against the exchange emulator,
a loopback Telegram Bot API and a webhook receiver: fills, start/stop and commands arrive; a receiver
outage and a SIGKILL between a fill and its delivery lose nothing and duplicate nothing."""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support.emulator import running_emulator
from tests.support.fast_clock import MARKET_T0, FastService, churn_config
from tests.support.http_fakes import FakeTelegram, WebhookReceiver

TOKEN = "123456:TEST-token-abcdefghijklmnop"


def _config(d: Path, emu_url: str, tg_url: str) -> Path:
    cfg = churn_config(emu_url)
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
        config = _config(tmp_path, emu.url, tg.url)
        env_file = tmp_path / "pitrader.env"
        env_file.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nNOTIFY_WEBHOOK_URL={hook.url}/hook/SECRETPART\n")
        state = tmp_path / "state"
        db = state / "paper.db"

        def kinds() -> list[str]:
            return [b["kind"] for b in hook.bodies()]

        with FastService(emu, tmp_path, config, env_file, state) as svc:
            logs, launch = svc.logs, svc.launch
            proc = launch()
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

        delivered = [i for b in hook.bodies() for i in b["ids"]]
        texts = "\n".join(tg.texts("42"))
        log_text = "\n".join(p.read_text() for p in logs)

    assert len(delivered) == len(set(delivered)), "a delivered event was sent again"
    # the clean stop is recorded (delivered now, or at the next start if the minute's budget is spent)
    assert [k for _, k in _outbox(db)][-1] == "stop"
    assert "ignored a message from chat 666" in log_text
    assert "BUY " in texts and "SELL " in texts
    assert TOKEN not in log_text and "SECRETPART" not in log_text
