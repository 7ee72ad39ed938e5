"""`pitrader run` as systemd runs it: notify sequence, SIGHUP reload of a good and a bad config.

The real CLI in a child process against the loopback exchange (realtime mode), with
NOTIFY_SOCKET pointing at a unix datagram socket this test reads, as systemd would.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

from tests.conftest import ROOT
from tests.support.emulator import running_emulator

START = int(datetime(2021, 5, 10, tzinfo=timezone.utc).timestamp() * 1000)


def _wait(pred, what, proc, log, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        assert proc.poll() is None, f"exited while waiting for {what}:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_notify_and_reload_good_then_bad_config(tmp_path, config_file):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.setblocking(False)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    with running_emulator(start_ms=START, realtime=True) as emu:
        overrides = {"exchange": {"api_url": emu.url}, "universe": {"min_quote_volume": 0},
                     "scanner": {"interval_s": 1}}
        cfg = config_file(overrides)
        log = tmp_path / "out.log"
        env = {**os.environ, "NOTIFY_SOCKET": sock_path, "PYTHONUNBUFFERED": "1"}
        env.pop("STATE_DIRECTORY", None)
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "core", "--config", str(cfg), "--state-dir",
                                     str(tmp_path / "state"), "run"], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            _wait(lambda: any("READY=1" in m for m in drain()), "READY=1", proc, log)
            _wait(lambda: any(m.startswith("STATUS=") and "pairs in" in m for m in drain()), "STATUS", proc, log)
            status = next(m for m in messages if m.startswith("STATUS=") and "pairs in" in m)
            assert status.isascii() and "\n" not in status and " open" in status

            # a good change: applied at the next cycle, RELOADING=1 then READY=1
            cfg.write_text(json.dumps({**json.loads(cfg.read_text()),
                                       "risk": {**json.loads(cfg.read_text())["risk"], "max_open_positions": 2}}))
            seen = len(drain())
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: "configuration reloaded" in log.read_text(), "reload", proc, log)
            after = drain()[seen:]
            assert any("RELOADING=1" in m for m in after)
            assert any("READY=1" in m for m in after[[i for i, m in enumerate(after) if "RELOADING=1" in m][0]:])

            # a bad change: rejected with the reason, the running config kept, still running
            cfg.write_text(json.dumps({**json.loads(cfg.read_text()),
                                       "risk": {**json.loads(cfg.read_text())["risk"], "max_open_positions": 0}}))
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: "reload rejected" in log.read_text(), "rejected reload", proc, log)
            text = log.read_text()
            assert "risk.max_open_positions" in text.split("reload rejected", 1)[1].splitlines()[0]
            time.sleep(1.5)
            assert proc.poll() is None  # a bad file never stops the service
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert any("STOPPING=1" in m for m in drain())
    sock.close()
