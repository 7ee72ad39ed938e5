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


def test_sighup_is_acknowledged_and_applied_during_the_wait_not_at_the_next_cycle(tmp_path, monkeypatch):
    """Issue 14 item 4: a reload between cycles wakes the wait (RELOADING=1, then READY=1) while the
    next cycle is an hour away; before, it waited for the cycle boundary."""
    import asyncio
    from dataclasses import replace as dc_replace

    from core.config import Config
    from core.engine.loop import Engine
    from core.exchange.setup import replay_setup
    from core.service.hooks import ServiceHooks
    from core.store.state import Store
    from tests.conftest import SAMPLE
    from tests.service.test_systemd import FakeSystemd
    from tests.engine.test_resilience import FollowClock

    sock_dir = tmp_path / "n"
    sock_dir.mkdir()
    fake = FakeSystemd(str(sock_dir / "s"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_dir / "s"))
    cfg = Config()
    cfg = dc_replace(cfg, scanner=dc_replace(cfg.scanner, interval_s=3600),
                     trading=dc_replace(cfg.trading, monitor_interval_s=0.5))
    new_cfg = dc_replace(cfg, risk=dc_replace(cfg.risk, max_open_positions=2))

    async def go():
        gw, vclock, _ = replay_setup(cfg, SAMPLE)
        async with Store.open(tmp_path / "p.db") as store:
            hooks = ServiceHooks(cfg, tmp_path, store, lambda: {})
            engine = Engine(cfg, gw, store, FollowClock(vclock), hooks=hooks, config_loader=lambda: new_cfg)
            task = asyncio.create_task(engine.run())
            while engine.cycles < 1:  # the first cycle done: the engine now waits an hour
                assert not task.done()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            engine.request_reload()
            try:
                for _ in range(600):  # liveness, not speed: before the fix this never happened
                    if engine.cfg is new_cfg:
                        break
                    await asyncio.sleep(0.05)
                assert engine.cfg is new_cfg and engine.cycles == 1
            finally:
                engine.request_stop()
                await task

    asyncio.run(go())
    msgs = fake.messages()
    fake.close()
    i = next(i for i, m in enumerate(msgs) if m.startswith("RELOADING=1"))
    assert any(m.startswith("READY=1") and "reloaded" in m for m in msgs[i + 1:])


def _sighup_caught(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_signal_handlers_are_installed_before_the_heavy_imports():
    """Issue 15 item 6: the CLI records SIGHUP/SIGTERM before numba/ccxt are imported (start-up
    takes ~18 s on a Pi with a cold cache; a SIGHUP then killed the process with exit 129)."""
    probe = ("import signal, sys\n"
             "import core.cli\n"
             "from core.service import signals\n"
             "seen = []\n"
             "orig = signals.install_if_run\n"
             "def spy(argv):\n"
             "    r = orig(argv)\n"
             "    seen.append((sorted(m for m in ('numba', 'ccxt', 'numpy', 'aiosqlite') if m in sys.modules),\n"
             "                 signal.getsignal(signal.SIGHUP) == signals.EARLY._record))\n"
             "    raise SystemExit(0)\n"
             "signals.install_if_run = spy\n"
             "try:\n"
             "    core.cli.main(['run', '--max-cycles', '1'])\n"
             "except SystemExit:\n"
             "    pass\n"
             "print(seen)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[([], True)]", out.stdout + out.stderr


def test_sighup_during_start_up_is_deferred_to_a_reload(tmp_path):
    """SIGHUP as soon as the process catches it (long before the engine runs): it must not die,
    and the reload is applied once the loop runs."""
    log = tmp_path / "out.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("STATE_DIRECTORY", None)
    env.pop("NOTIFY_SOCKET", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "core", "--config", str(ROOT / "config.json"), "--state-dir",
                                 str(tmp_path / "state"), "run", "--replay", str(ROOT / "data" / "sample"),
                                 "--max-cycles", "3"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not _sighup_caught(proc.pid):
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.001)
        engine_up = "numba" in open(f"/proc/{proc.pid}/maps").read()
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert not engine_up  # the handler was in place before numba was loaded
    assert "configuration reloaded" in text, text[-3000:]
