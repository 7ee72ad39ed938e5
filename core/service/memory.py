"""Give back the resident pages of big shared libraries the loop no longer runs.

``libllvmlite.so`` (numba's LLVM, ~170 MB on disk) has ~75 MB of its code resident right after
``import numba`` (LLVM's start-up touches most of it), yet once the kernels are loaded from the
cache the loop never enters LLVM again: that is over a third of the service's RSS. After the
first scan ``MADV_PAGEOUT`` asks the kernel to reclaim those pages. Only read-only and executable
*file* mappings are advised, so nothing can be lost: a page needed again is read back from the
file (a page-cache hit, microseconds). Linux 5.4+ (Pi OS has 6.x); elsewhere a no-op.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21  # <linux/mman.h>
MADV_DONTNEED = 4
LIBRARIES = ("libllvmlite",)  # the library worth it (numpy, OpenBLAS, libpython keep running)


def _mappings(names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, length) of the read-only or executable file mappings of ``names`` with no private
    (copy-on-write) pages, from /proc/self/smaps."""
    out, cur, anon = [], None, 0
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return []
    for line in lines + ["end 0-0 ---- 0 0 0"]:
        parts = line.split()
        if parts and ":" not in parts[0]:  # a mapping header: "start-end perms offset dev inode [path]"
            if cur is not None and anon == 0:
                out.append(cur)
            cur, anon = None, 0
            if len(parts) >= 6 and any(n in parts[5] for n in names) and parts[1] in ("r-xp", "r--p"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = (lo, hi - lo)
        elif cur is not None and parts[0] == "Anonymous:":
            anon = int(parts[1])
    return out


def release_library_pages(names: tuple[str, ...] = LIBRARIES) -> int:
    """Advise the kernel to reclaim those mappings; returns the bytes advised (0 off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    done = 0
    for start, length in _mappings(names):
        madvise(start, length, MADV_PAGEOUT)  # reclaims the pages no other process maps (kernel 5.4+)
        if madvise(start, length, MADV_DONTNEED) == 0:  # unmaps the rest: clean file pages, re-read on use
            done += length
    return done
