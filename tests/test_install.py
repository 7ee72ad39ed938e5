"""install.sh in staging mode (DESTDIR): layout, permissions, idempotence, uninstall/purge, refusals.

The staged venv gets pitrader built and installed non-editable from this checkout; its third-party
dependencies are linked from the venv running the tests (--deps-from) instead of downloaded again.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install.sh"
CHECKOUT_FILES = ("install.sh", "pyproject.toml", "README.md", "config.json", ".env.example", "core", "strategies",
                  "deploy")
IN_VENV = sys.prefix != sys.base_prefix
pytestmark = pytest.mark.skipif(not IN_VENV, reason="needs a virtualenv to take the dependencies from")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A frozen copy of the checkout: what a user clones, unaffected by edits while tests run."""
    dest = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def run_install(*args: str, destdir: Path | None = None, env: dict | None = None, check: bool = True,
                script: Path = INSTALL) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYTHON", "PITRADER_UNAME_M")}
    if destdir is not None:
        e["DESTDIR"] = str(destdir)
    e.update(env or {})
    r = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=e, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def staged_install(checkout: Path, destdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_install("--no-systemctl", "--deps-from", sys.prefix, *extra, destdir=destdir,
                       script=checkout / "install.sh")


@pytest.fixture(scope="module")
def staged(tmp_path_factory, checkout):
    root = tmp_path_factory.mktemp("root")
    result = staged_install(checkout, root)  # with the numba warm-up, like on a Pi
    return root, result, checkout


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_size, st.st_mtime_ns)
    return out


def test_layout(staged):
    root, result, checkout = staged
    venv = root / "opt/pitrader/venv"
    # Non-editable: the code imported is the installed copy, from anywhere (cwd /).
    r = subprocess.run([str(venv / "bin/python"), "-c", "import core, core.commands; print(core.__file__)"],
                       capture_output=True, text=True, cwd="/", check=True)
    assert Path(r.stdout.strip()).is_relative_to(venv)
    r = subprocess.run([str(venv / "bin/pitrader"), "--version"], capture_output=True, text=True, cwd="/",
                       check=True)
    assert r.stdout.startswith("pitrader ")
    assert (root / "etc/pitrader/config.json").read_text() == (checkout / "config.json").read_text()
    assert (root / "etc/pitrader/pitrader.env").read_text() == (checkout / ".env.example").read_text()
    assert (root / "etc/systemd/system/pitrader.service").read_bytes() == \
        (checkout / "deploy/systemd/pitrader.service").read_bytes()
    # The installed program accepts the installed config and secrets template.
    r = subprocess.run([str(venv / "bin/pitrader"), "--config", str(root / "etc/pitrader/config.json"),
                        "--env-file", str(root / "etc/pitrader/pitrader.env"), "config", "check", "--json"],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["mode"] == "paper"
    assert "WARNING" not in result.stdout
    # `sudo pitrader status` on the Pi: the service's config and state, as the service user
    wrapper = root / "usr/local/bin/pitrader"
    text = wrapper.read_text()
    assert wrapper.stat().st_mode & 0o777 == 0o755
    assert "runuser -u pitrader" in text and "/var/lib/pitrader" in text and "/etc/pitrader/config.json" in text
    r = subprocess.run(["sh", "-n", str(wrapper)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_permissions(staged):
    root, _, checkout = staged
    env_file = root / "etc/pitrader/pitrader.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/pitrader/config.json").stat().st_mode) == 0o644
    me = os.geteuid()  # root on CI and on a Pi: the venv is root owned, read-only for the service
    for p in [root / "opt/pitrader", *(root / "opt/pitrader").rglob("*")]:
        if p.is_symlink():
            continue
        st = p.stat()
        assert st.st_uid == me, p
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), f"{p} is group/world writable"
        assert st.st_mode & stat.S_IROTH, f"{p} unreadable for the service user"


def test_numba_cache_warmed(staged):
    root, result, _ = staged
    cache = root / "var/cache/pitrader/numba"
    assert "pitrader warmup" in result.stdout
    index_files = list(cache.rglob("*.nbi"))
    assert index_files, f"no numba cache index under {cache}"


def test_rerun_keeps_user_files_and_changes_nothing_else(staged):
    root, _, checkout = staged
    cfg_path, env_path = root / "etc/pitrader/config.json", root / "etc/pitrader/pitrader.env"
    cfg = json.loads(cfg_path.read_text())
    cfg["scanner"]["interval_s"] = 30.0
    cfg_path.write_text(json.dumps(cfg, indent=2))
    env_path.write_text(env_path.read_text().replace("BINANCE_API_KEY=\n", "BINANCE_API_KEY=userkey12345\n"))
    env_path.chmod(0o644)  # a user loosened it
    user_cfg, user_env = cfg_path.read_text(), env_path.read_text()
    before = snapshot(root)

    r = staged_install(checkout, root)
    out = r.stdout
    assert "program up to date" in out and "unit up to date" in out
    assert "keeping existing" in out and "tightening" in out
    assert cfg_path.read_text() == user_cfg and env_path.read_text() == user_env
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    after = snapshot(root)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"etc/pitrader/pitrader.env"}  # only the tightened mode

    r = staged_install(checkout, root, "--no-warmup")  # third run: nothing to do at all
    assert "tightening" not in r.stdout
    assert snapshot(root) == after


def test_invalid_user_config_is_kept_and_reported(staged):
    root, _, checkout = staged
    cfg_path = root / "etc/pitrader/config.json"
    good = cfg_path.read_text()
    try:
        cfg_path.write_text('{"mode": "paper", "scanner": {"interval_s": "fast"}}')
        r = staged_install(checkout, root, "--no-warmup")
        assert "scanner.interval_s" in r.stderr  # the program's own one-line error
        assert "would exit with code 78" in r.stdout and "not starting" in r.stdout
        assert cfg_path.read_text() == '{"mode": "paper", "scanner": {"interval_s": "fast"}}'
    finally:
        cfg_path.write_text(good)


def test_uninstall_keeps_config_and_state_then_purge_removes_them(tmp_path, checkout):
    staged_install(checkout, tmp_path, "--no-warmup")
    (tmp_path / "var/lib/pitrader").mkdir(parents=True)
    (tmp_path / "var/lib/pitrader/paper.db").write_bytes(b"ledger")
    (tmp_path / "var/log/pitrader").mkdir(parents=True)
    (tmp_path / "var/log/pitrader/audit.log").write_text("{}\n")

    r = run_install("--uninstall", "--no-systemctl", destdir=tmp_path)
    assert not (tmp_path / "opt/pitrader").exists()
    assert not (tmp_path / "usr/local/bin/pitrader").exists()
    assert not (tmp_path / "etc/systemd/system/pitrader.service").exists()
    assert not (tmp_path / "var/cache/pitrader").exists()
    assert (tmp_path / "etc/pitrader/config.json").exists() and (tmp_path / "etc/pitrader/pitrader.env").exists()
    assert (tmp_path / "var/lib/pitrader/paper.db").read_bytes() == b"ledger"
    assert (tmp_path / "var/log/pitrader/audit.log").exists()
    assert "kept" in r.stdout

    run_install("--uninstall", "--no-systemctl", destdir=tmp_path)  # twice is fine
    r = run_install("--uninstall", "--purge", "--no-systemctl", destdir=tmp_path)
    for gone in ("etc/pitrader", "var/lib/pitrader", "var/log/pitrader"):
        assert not (tmp_path / gone).exists(), gone
    assert "purged" in r.stdout


@pytest.mark.parametrize("machine", ["armv7l", "armv6l"])
def test_refuses_32_bit_arm(tmp_path, machine):
    r = run_install("--no-systemctl", destdir=tmp_path, env={"PITRADER_UNAME_M": machine}, check=False)
    assert r.returncode != 0
    assert "numba/llvmlite have no 32-bit wheels; flash 64-bit Raspberry Pi OS" in r.stderr
    assert list(tmp_path.iterdir()) == []  # refused before touching anything


def test_refuses_too_old_python(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.9.2" && exit 0\nexit 1\n')
    fake.chmod(0o755)
    root = tmp_path / "root"
    r = run_install("--no-systemctl", destdir=root, env={"PYTHON": str(fake)}, check=False)
    assert r.returncode != 0
    assert "Python 3.11 or newer is required (found: Python 3.9.2)" in r.stderr
    assert not (root / "opt").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root to run as another user")
def test_real_install_requires_root():
    r = subprocess.run(["runuser", "-u", "nobody", "--", "bash", str(INSTALL), "--no-systemctl"],
                       capture_output=True, text=True, cwd="/", timeout=60,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert r.returncode != 0 and "run as root (sudo ./install.sh)" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--purge"], "--purge only goes with --uninstall"),
    (["--deps-from", "/nonexistent"], "--deps-from /nonexistent: no such directory"),
])
def test_usage_errors(tmp_path, args, message):
    r = run_install(*args, destdir=tmp_path, check=False)
    assert r.returncode != 0 and message in r.stderr


def test_help():
    r = run_install("--help")
    assert "--uninstall" in r.stdout and "DESTDIR" in r.stdout and "--dev" in r.stdout


def test_dev_mode_second_run_changes_nothing():
    venv = ROOT / ".venv"
    stamp = venv / ".pitrader-installed"
    want = subprocess.run(["sha256sum", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.skip(".venv was not made by the current ./install.sh --dev (CI runs it right before pytest)")
    before = stamp.stat().st_mtime_ns
    r = run_install("--dev")
    assert "up to date" in r.stdout and "installing" not in r.stdout
    assert "compiling the numba kernels" in r.stdout  # the first demo must not sit ~15 s compiling
    assert stamp.stat().st_mtime_ns == before


@pytest.mark.parametrize("script, message", [
    ('[ "$1" = --version ] && echo "Python 3.9.2" && exit 0\nexit 1\n',
     "Python 3.11 or newer is required (found: Python 3.9.2)"),
    # new enough, but Debian's python3 without the python3-venv package
    ('[ "$1" = --version ] && echo "Python 3.11.2" && exit 0\ncase "$2" in *venv*) exit 1;; esac\nexit 0\n',
     "the Python 'venv' module is missing; on Debian/Pi OS: sudo apt-get install python3-venv"),
])
def test_dev_mode_fails_loudly_and_touches_nothing(tmp_path, script, message):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    venv_before = sorted(p.name for p in (ROOT / ".venv").iterdir()) if (ROOT / ".venv").exists() else None
    r = subprocess.run(["bash", str(INSTALL), "--dev"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": str(fake)})
    assert r.returncode != 0
    assert message in r.stderr and r.stderr.count("\n") <= 3
    after = sorted(p.name for p in (ROOT / ".venv").iterdir()) if (ROOT / ".venv").exists() else None
    assert after == venv_before
