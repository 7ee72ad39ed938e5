"""Give memory back between the backtest's stages, so one stage's peak does not stack on another's.

The signal table, the reference check and the engine each allocate and free large temporaries;
glibc keeps freed heap pages mapped (``malloc_trim`` returns them), and numba's LLVM keeps ~75 MB
of code pages resident although kernels loaded from the cache never run it again
(``core.service.memory``, which the service uses after its first scan).
"""
from __future__ import annotations

import ctypes

from core.service.memory import release_library_pages

_trim = None


def release_memory() -> None:
    """Return freed heap pages (glibc's ``malloc_trim``; elsewhere a no-op) and LLVM's code pages."""
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)
    release_library_pages()
