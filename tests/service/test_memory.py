"""core/service/memory.py (issue 14 item 2): LLVM's code pages leave the resident set after the
kernels are loaded, and numba keeps working (calling and compiling) afterwards."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = """
import numpy as np
from numba import njit
from core.service.memory import release_library_pages

def llvm_rss_kb():
    total, inside = 0, False
    for line in open('/proc/self/smaps'):
        parts = line.split()
        if parts and ':' not in parts[0]:
            inside = len(parts) >= 6 and 'libllvmlite' in parts[5]
        elif inside and parts[0] == 'Rss:':
            total += int(parts[1])
    return total

@njit(cache=False)
def f(x):
    return x.sum() * 2

x = np.arange(10.0)
assert f(x) == 90.0
before = llvm_rss_kb()
advised = release_library_pages()
after = llvm_rss_kb()
assert f(x) == 90.0  # compiled code runs from its own memory

@njit(cache=False)
def g(x):  # a new compilation re-reads what it needs from the file
    return x.max() + 1

assert g(x) == 10.0
print(before, after, advised)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise are Linux's")
def test_llvm_pages_are_released_and_numba_still_works():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    before, after, advised = map(int, out.stdout.split())
    assert advised > 0
    assert before > 20_000 and after < before / 4, (before, after)


def test_only_clean_read_only_file_mappings_are_advised():
    from core.service.memory import _mappings

    with open("/proc/self/maps") as f:
        perms = {ln.split()[0]: ln.split()[1] for ln in f}
    for start, length in _mappings(("libpython", "libc.so", "libllvmlite")):
        key = f"{start:x}-{start + length:x}"
        assert perms[key] in ("r-xp", "r--p")
