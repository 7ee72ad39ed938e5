"""Directories pitrader must write (state directory, numba cache): checked up front, one line each.

An unwritable or invalid state directory or numba cache used to surface as a 29-line traceback
and exit 70, which systemd restarts every 30 s for ever. Restarting never fixes a permission or
a path: these exit ``EX_NOPERM`` (77), which the unit lists in ``RestartPreventExitStatus=``.
``doctor`` runs the same checks (``problems``) and reports them as a failed check.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class StorageError(Exception):
    """``str()`` is the one line for the user: what, the path, the problem, what to do."""

    def __init__(self, what: str, path: str | Path, problem: str, advice: str = "") -> None:
        self.what, self.path, self.problem = what, str(path), problem
        super().__init__(f"{what} {self.path}: {problem}" + (f"; {advice}" if advice else ""))


def _problem(path: Path) -> str | None:
    """None when ``path`` is (or can be made) a directory we can create files in, else why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "exists but is not a directory"
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc.__class__.__name__})"
    if not path.is_dir():
        return "exists but is not a directory"
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc.__class__.__name__})"
    return None


def numba_cache_dir() -> Path | None:
    value = os.environ.get("NUMBA_CACHE_DIR")
    return Path(value) if value else None


def problems(state_dir: Path | None) -> list[StorageError]:
    """Every unusable directory among the state directory and ``$NUMBA_CACHE_DIR``."""
    out = []
    if state_dir is not None and (why := _problem(state_dir)):
        out.append(StorageError("state directory", state_dir, why,
                                "fix its owner/permissions or choose another with --state-dir "
                                "(under systemd: StateDirectory=)"))
    cache = numba_cache_dir()
    if cache is not None and (why := _problem(cache)):
        out.append(StorageError("numba cache (NUMBA_CACHE_DIR)", cache, why,
                                "make it writable for the service user or point NUMBA_CACHE_DIR elsewhere"))
    return out


def require(state_dir: Path | None) -> None:
    """Raise the first problem (the CLI prints it as one line and exits 77)."""
    found = problems(state_dir)
    if found:
        raise found[0]


def from_numba(exc: BaseException) -> StorageError | None:
    """numba's "cannot cache function ...: no locator available" (no writable cache) as a StorageError."""
    text = str(exc)
    if isinstance(exc, RuntimeError) and "cannot cache function" in text:
        cache = numba_cache_dir()
        return StorageError("numba cache", cache or "(NUMBA_CACHE_DIR unset: next to the package)",
                            "no writable location for compiled kernels",
                            "set NUMBA_CACHE_DIR to a writable directory (the unit uses %C/pitrader/numba)")
    return None
