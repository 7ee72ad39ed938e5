"""deploy/systemd/pitrader.service: systemd accepts it, it scores <= 1.2, and it keeps what the
program needs (numba JIT memory, psutil's /proc, network) and the paths install.sh uses."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "pitrader.service"
MAX_EXPOSURE = 1.2

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    analyze is None, reason="systemd-analyze not installed (./install.sh --dev installs it as root on Debian)")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


UNIT_DATA = parse_unit(UNIT.read_text())
SERVICE = UNIT_DATA["Service"]


def one(key: str) -> str:
    assert key in SERVICE, f"{key}= missing"
    return SERVICE[key][-1]


def test_notify_watchdog_restart_policy():
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert 10 <= int(one("WatchdogSec")) <= 600
    assert one("Restart") == "on-failure"
    assert "78" in one("RestartPreventExitStatus").split()
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_codes_that_need_a_person_are_not_restarted():
    """Issue 15 item 3: a refused or corrupt state database (74), an unusable directory (77) and a bad
    config (78) end the service for good; restarting every 30 s cannot mend them."""
    from core.exitcodes import EX_CONFIG, EX_NOPERM, EX_STATE

    prevent = set(one("RestartPreventExitStatus").split())
    assert {str(EX_STATE), str(EX_NOPERM), str(EX_CONFIG)} <= prevent


def test_waits_for_network_and_clock():
    unit = UNIT_DATA["Unit"]
    for key in ("After", "Wants"):
        targets = " ".join(unit[key]).split()
        assert "network-online.target" in targets and "time-sync.target" in targets


def test_paths_match_install_sh():
    install = (ROOT / "install.sh").read_text()
    exec_start = one("ExecStart").split()
    assert exec_start[0] == "/opt/pitrader/venv/bin/pitrader"  # not under /home: ProtectHome=yes
    assert 'VENV="$OPT/venv"' in install and 'OPT="$ROOT/opt/pitrader"' in install
    assert exec_start[exec_start.index("--config") + 1] == "/etc/pitrader/config.json"
    assert exec_start[-1] == "run"
    # Secrets: the root-only env file, delivered as a credential the program reads via --env-file.
    cred_id, _, source = one("LoadCredential").partition(":")
    assert source == "/etc/pitrader/pitrader.env"
    assert exec_start[exec_start.index("--env-file") + 1] == f"%d/{cred_id}"
    assert one("User") == "pitrader"
    for key in ("StateDirectory", "CacheDirectory", "LogsDirectory"):
        assert one(key) == "pitrader"
    # %C = /var/cache for a system unit: the directory install.sh warms.
    assert "NUMBA_CACHE_DIR=%C/pitrader/numba" in SERVICE["Environment"]
    assert 'CACHE="$ROOT/var/cache/pitrader"' in install and 'local cache="$CACHE/numba"' in install


def test_keeps_what_numba_psutil_and_https_need():
    assert SERVICE.get("MemoryDenyWriteExecute", ["no"])[-1] == "no"  # numba JIT
    assert SERVICE.get("ProcSubset", ["all"])[-1] == "all"  # psutil: /proc/stat, /proc/meminfo
    assert SERVICE.get("PrivateNetwork", ["no"])[-1] == "no"
    families = one("RestrictAddressFamilies").split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)  # HTTPS + the notify socket
    assert one("ProtectSystem") == "strict"
    if any("@resources" in v for v in SERVICE.get("SystemCallFilter", [])):
        assert one("SystemCallErrorNumber") == "EPERM"  # OpenBLAS mbind() must fail softly


def test_memory_limits():
    def mib(v: str) -> float:
        m = re.fullmatch(r"(\d+)([KMG])", v)
        assert m, v
        return int(m[1]) * {"K": 1 / 1024, "M": 1, "G": 1024}[m[2]]

    assert 200 <= mib(one("MemoryHigh")) < mib(one("MemoryMax")) <= 1024


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an existing binary (verify checks it is executable)."""
    exe = shutil.which("true")
    text = UNIT.read_text().replace("/opt/pitrader/venv/bin/pitrader", exe)
    copy = tmp_path / "pitrader.service"
    copy.write_text(text)
    return copy


@needs_analyze
def test_systemd_analyze_verify(tmp_path):
    copy = runnable_copy(tmp_path)
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "pitrader.service" in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr


@needs_analyze
def test_verify_complains_only_about_the_missing_binary_on_the_original(tmp_path):
    copy = tmp_path / "pitrader.service"
    shutil.copy(UNIT, copy)
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "pitrader.service" in line]
    if Path("/opt/pitrader/venv/bin/pitrader").exists():
        assert not complaints
    else:
        assert complaints and all("/opt/pitrader/venv/bin/pitrader is not executable" in c for c in complaints)


@needs_analyze
def test_security_exposure_at_most_1_2(tmp_path):
    copy = runnable_copy(tmp_path)
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(copy)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for pitrader\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m[1]) <= MAX_EXPOSURE, r.stdout
