"""Give the memory of large payloads back to the OS in worker processes (glibc).

glibc serves an allocation above its mmap threshold (128 KiB to start) with
a mapping of its own, returned to the OS on free, but each such free raises
the threshold to the freed size (up to 32 MiB). After one 10 MB job body,
later bodies of that size come from the heap, where freed memory stays with
the process: a Redis worker that read one 10 MB poison body grew 23 MiB and
kept it. Fixing the threshold at 1 MiB stops that adjustment, so every
payload of 1 MiB or more is mapped and unmapped on its own (a syscall pair
per such payload; smaller allocations are untouched).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["ENV_KEEP_MALLOC", "return_large_frees"]

ENV_KEEP_MALLOC = "UPNEXT_KEEP_MALLOC"
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_THRESHOLD = 1 << 20


def return_large_frees() -> bool:
    """Fix glibc's mmap threshold at 1 MiB; False where there is no glibc or it is opted out."""
    if os.environ.get(ENV_KEEP_MALLOC):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
