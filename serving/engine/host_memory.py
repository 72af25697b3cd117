"""How the engine process keeps the CPU memory it frees: fewer page faults per step.

glibc's malloc returns large freed blocks to the kernel. It unmaps those above its mmap threshold at once, and it
trims the top of its heap when more than its trim threshold lies free there; both thresholds adapt to at most 32 MiB
and 64 MiB. A CPU step allocates and frees tens of megabytes of activations, so every step mapped its memory again,
and the kernel zeroed each 4 KiB page on its first write. Measured on the 2-core development machine, a server at 64
concurrent requests of the 8/700-word mix took 0.47-0.54 million page faults and 1.9-2.4 s of system time in a 14 s
run, 8-9% of the engine's CPU time (`docs/performance.md`). `keep_freed_memory` fixes both thresholds, so that
freed activations stay mapped for the next step; the process keeps up to `TRIM_THRESHOLD` of freed heap. Where
it does not apply (not Linux, not glibc) nothing changes but speed.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring); whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library's, among the process's symbols
    if mallopt is None:
        return False
    taken = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not taken:
        logger.info("the C library refused the malloc thresholds; freed memory is unmapped as before")
    return taken
