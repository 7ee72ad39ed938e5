"""A real headless browser for the tests that look at pages: Debian's chromium, installed on first use.

``screenshot(html_file, png_file)`` renders a page at 700 px width the way a person would see it.
``browser()`` finds chromium, and when it is missing and we are root, runs ``apt-get install -y
chromium`` once (Debian's package, no other source); it returns None with the reason in
``why_not`` when that is impossible (not root, no apt, no network), so the tests skip saying why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars")
why_not = ""
_tried = False


def _find() -> str | None:
    return next((p for p in (shutil.which(n) for n in NAMES) if p), None)


def browser() -> str | None:
    """Path of chromium, installing Debian's package once if needed; None (see ``why_not``) if impossible."""
    global why_not, _tried
    found = _find()
    if found or _tried:
        return found
    _tried = True
    if os.geteuid() != 0:
        why_not = "chromium is not installed and installing it needs root (apt-get install chromium)"
        return None
    if not shutil.which("apt-get"):
        why_not = "chromium is not installed and there is no apt-get to install it"
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                ["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why_not = f"{' '.join(cmd)} failed: {exc}"
            return None
        if cmd[1] == "install" and out.returncode == 0 and _find():
            return _find()
        if out.returncode != 0:
            why_not = f"{' '.join(cmd)} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"
    return _find()


def screenshot(page: Path, png: Path, width: int = 700, height: int = 3000, timeout: float = 120) -> Path:
    """Render ``page`` headless into ``png`` (``width`` x ``height`` pixels)."""
    exe = browser()
    if exe is None:
        raise RuntimeError(why_not)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", Path(page).resolve().as_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or not Path(png).exists():
        raise RuntimeError(f"chromium failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return Path(png)
