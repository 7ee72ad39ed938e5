"""Fault injection against the running service (issue 15): a full disk, a corrupt database and a
hung exchange, each while `pitrader run` (the real CLI, paper mode) trades against the loopback
emulator; each must end in a documented state with nothing lost.

    sudo .venv/bin/python benchmarks/fault_injection.py [--only disk|corrupt|hang]

- disk: the state directory is a 24 MiB tmpfs (needs root for `mount`; without it the scenario
  is skipped and tests/engine/test_storage.py's sqlite-layer injection is what covers it). Once
  READY, a filler file takes every free byte. Expected: the service keeps running (exit monitor
  alive), one WARNING "cannot be written", no traceback; after the filler is removed one INFO
  "writable again"; SIGTERM -> exit 0; the database passes integrity_check and holds every
  position and fill it had before the disk filled.
- corrupt: every page but the header is overwritten while it runs (its page cache hides the
  damage; the hourly check, shortened here to 2 s, reads the file). Expected: exit 74 with one
  line; a restart is refused with 74 (no restart loop); `backup restore` of the newest backup
  (taken at the first cycle) keeps the damaged file as *.replaced-*, and the service starts again.
- hang: every exchange request is held 120 s (client timeout 3 s). Expected: the service keeps
  running and logs the failed cycles; WATCHDOG=1 keeps coming; after the exchange recovers the
  cycles resume (STATUS=); SIGTERM during a hang stops it with exit 0 within TimeoutStopSec=30.

Prints one verdict line per scenario and exits 1 if any expectation failed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.emulator import running_emulator  # noqa: E402

START = int(datetime(2021, 5, 10, tzinfo=timezone.utc).timestamp() * 1000)
WRAPPER = ("import sys\nimport core.service.backups as b\nb.CHECK_EVERY_S = float(sys.argv[1])\n"
           "from core.cli import main\nraise SystemExit(main(sys.argv[2:]))\n")


class Service:
    """`pitrader run` in a child process with a notify socket, as systemd runs it."""

    def __init__(self, work: Path, state: Path, cfg: Path, check_s: float = 3600.0) -> None:
        self.log = work / f"service-{time.monotonic_ns()}.log"
        self.sock_path = str(work / "notify.sock")
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.setblocking(False)
        self.messages: list[str] = []
        env = {**os.environ, "NOTIFY_SOCKET": self.sock_path, "PYTHONUNBUFFERED": "1",
               "WATCHDOG_USEC": "4000000"}
        env.pop("STATE_DIRECTORY", None)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WRAPPER, str(check_s), "--config", str(cfg), "--env-file", "/dev/null",
                 "--state-dir", str(state), "run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode("latin-1"))
            except BlockingIOError:
                return self.messages

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pred, timeout: float = 120) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.drain()
            if pred():
                return True
            if self.proc.poll() is not None:
                return pred()
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.sock.close()


def counts(db: Path) -> tuple[str, int, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return ok, conn.execute("SELECT COUNT(*) FROM positions").fetchone()[0], \
            conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    finally:
        conn.close()


def config(work: Path, url: str) -> Path:
    base = json.loads((ROOT / "config.json").read_text())
    base["exchange"].update(api_url=url, timeout_s=3.0)
    base["universe"]["min_quote_volume"] = 0
    base["scanner"].update(interval_s=2, min_opportunity_score=0.3)
    base["health"].update(disk_soft_mb=0, disk_hard_mb=0)  # the storage fault itself, not the health gate
    path = work / "config.json"
    path.write_text(json.dumps(base))
    return path


def ready(svc: Service) -> bool:
    return any(m.startswith("READY=1") for m in svc.messages)


def scenario_disk(work: Path, url: str) -> list[str]:
    problems = []
    state = work / "tmpfs"
    state.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(state)],
                                           capture_output=True).returncode != 0:
        return ["SKIPPED: mounting a tmpfs needs root"]
    try:
        svc = Service(work, state, config(work, url))
        if not svc.wait_for(lambda: ready(svc) and svc.text().count("cycle:") >= 2):
            return problems + ["never READY: " + svc.text()[-1500:]]
        time.sleep(3)
        before = counts(state / "paper.db")
        filler = state / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        if not svc.wait_for(lambda: "cannot be written" in svc.text(), 60):
            problems.append("no storage WARNING within 60 s")
        time.sleep(10)  # cycles and exit checks under the full disk
        if svc.proc.poll() is not None:
            problems.append(f"exited under a full disk (code {svc.proc.returncode})")
        filler.unlink()
        if not svc.wait_for(lambda: "writable again" in svc.text(), 60):
            problems.append("no 'writable again' INFO within 60 s of freeing space")
        code = svc.stop()
        text = svc.text()
        if code != 0:
            problems.append(f"SIGTERM exit {code}")
        if text.count("cannot be written") != 1:
            problems.append(f"{text.count('cannot be written')} storage warnings (expected 1)")
        if "Traceback" in text:
            problems.append("a traceback in the log")
        after = counts(state / "paper.db")
        if after[0] != "ok" or after[1] < before[1] or after[2] < before[2]:
            problems.append(f"database before {before}, after {after}")
        return problems or [f"ok: kept running under a full disk, one warning, resumed; db {before} -> {after}"]
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True)


def scenario_corrupt(work: Path, url: str) -> list[str]:
    problems = []
    state = work / "state-corrupt"
    cfg = config(work, url)
    svc = Service(work, state, cfg, check_s=2.0)
    db = state / "paper.db"
    if not svc.wait_for(lambda: ready(svc) and "backed up to" in svc.text()):
        return ["never READY with a backup: " + svc.text()[-1500:]]
    time.sleep(2)
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes((i * 37 + 11) % 256 for i in range(len(data) - page))
    db.write_bytes(bytes(data))
    svc.wait_for(lambda: False, 30)
    code = svc.stop()
    err = [ln for ln in svc.text().splitlines() if ln.startswith("pitrader:")]
    if code != 74:
        problems.append(f"running service on a damaged file: exit {code} (expected 74): {svc.text()[-800:]}")
    if len(err) != 1 or "Traceback" in svc.text():
        problems.append(f"expected one line, got {err}")
    again = Service(work, state, cfg)
    code2 = again.stop(timeout=120) if again.proc.wait(timeout=120) is not None else None
    if code2 != 74:
        problems.append(f"restart on the damaged file: exit {code2} (expected 74: no restart loop)")
    listing = subprocess.run([sys.executable, "-m", "core", "--config", str(cfg), "--state-dir", str(state),
                              "backup", "list"], cwd=ROOT, capture_output=True, text=True)
    newest = listing.stdout.split()[0] if listing.stdout.strip() else ""
    rest = subprocess.run([sys.executable, "-m", "core", "--config", str(cfg), "--state-dir", str(state),
                           "backup", "restore", newest], cwd=ROOT, capture_output=True, text=True)
    if rest.returncode != 0 or not list(state.glob("paper.db.replaced-*")):
        problems.append(f"restore failed: {rest.stdout} {rest.stderr}")
    svc3 = Service(work, state, cfg)
    if not svc3.wait_for(lambda: ready(svc3)):
        problems.append("no READY after the restore: " + svc3.text()[-800:])
    code3 = svc3.stop()
    if code3 != 0:
        problems.append(f"after restore: exit {code3}")
    return problems or [f"ok: exit 74 with one line ({err[0][:110]}...), restart refused with 74, "
                        f"restored {newest}, damaged file kept, service READY again"]


def scenario_hang(work: Path, url: str, emu) -> list[str]:
    problems = []
    state = work / "state-hang"
    svc = Service(work, state, config(work, url))
    if not svc.wait_for(lambda: ready(svc) and svc.text().count("cycle:") >= 2):
        return ["never READY: " + svc.text()[-1500:]]
    before = counts(state / "paper.db")
    emu.faults.hang_s, emu.faults.timeout_rate = 120.0, 1.0
    t0 = len(svc.drain())
    time.sleep(25)
    pings = sum(m == "WATCHDOG=1" for m in svc.drain()[t0:])
    if svc.proc.poll() is not None:
        problems.append(f"exited while the exchange hung (code {svc.proc.returncode})")
    if pings == 0:
        problems.append("no WATCHDOG=1 in 25 s of hang (WatchdogSec would restart it)")
    emu.faults.clear()
    n = len(svc.drain())
    if not svc.wait_for(lambda: any(m.startswith("STATUS=") and "pairs in" in m for m in svc.messages[n:]), 90):
        problems.append("cycles did not resume within 90 s after the exchange recovered")
    emu.faults.hang_s, emu.faults.timeout_rate = 120.0, 1.0
    time.sleep(3)
    t = time.time()
    code = svc.stop(timeout=30)
    took = time.time() - t
    emu.faults.clear()
    if code != 0:
        problems.append(f"SIGTERM during a hang: exit {code} after {took:.0f} s (TimeoutStopSec=30)")
    if "Traceback" in svc.text():
        problems.append("a traceback in the log")
    after = counts(state / "paper.db")
    if after[0] != "ok" or after[1] < before[1]:
        problems.append(f"database before {before}, after {after}")
    return problems or [f"ok: ran through a 25 s hang ({pings} watchdog pings), resumed, stopped in {took:.1f} s "
                        f"with exit 0; db {before} -> {after}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("disk", "corrupt", "hang"))
    args = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="pt-faults-", dir="/tmp") as tmp, \
            running_emulator(start_ms=START, realtime=True) as emu:
        work = Path(tmp)
        for name in ("disk", "corrupt", "hang"):
            if args.only and name != args.only:
                continue
            t = time.time()
            if name == "hang":
                result = scenario_hang(work, emu.url, emu)
            else:
                result = {"disk": scenario_disk, "corrupt": scenario_corrupt}[name](work, emu.url)
            bad = not (result[0].startswith("ok") or result[0].startswith("SKIPPED"))
            failed |= bad
            print(f"{name:8s} {'FAIL' if bad else 'pass'} ({time.time() - t:.0f} s): " + " | ".join(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
