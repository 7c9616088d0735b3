"""Freed memory kept for reuse: glibc's malloc tuned for long runs of same-size tensors.

A forward of a batch allocates and frees the same large tensors again and
again (a stitched CAM's 32 passes hold 33 MB activations). glibc's malloc
serves blocks above its mmap threshold with fresh ``mmap`` calls, and trims
freed memory at the top of its heap back to the system, so each of those
allocations starts on untouched pages: the kernel faults and zeroes every
4 KiB page on first write. On this project's 2-core machine that was about
100,000 page faults and 10-15% of one image's evidence on one thread (docs/speed.md,
"Freed memory kept for reuse").

:func:`reuse_freed_memory` raises both limits once per process (mmap
threshold 32 MiB, the most glibc allows; trim threshold 1 GiB), so the heap
keeps what a forward freed and the next forward reuses it. Numbers are
unchanged (only where memory comes from); a process keeps up to 1 GiB of
freed memory instead of returning it (its peak grew by about 0.2 GiB in the
pseudo-label workers). The CLIs and their worker processes call it at start.
Torch-free.
"""
from __future__ import annotations

import logging
import os

__all__ = ["reuse_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "OPT_OUT"]

_logger = logging.getLogger(__name__)

#: glibc's ``M_MMAP_THRESHOLD``: blocks this large are ``mmap``ed (its maximum: ``HEAP_MAX_SIZE / 2``).
MMAP_THRESHOLD = 32 << 20
#: glibc's ``M_TRIM_THRESHOLD``: free memory at the heap's top above this goes back to the system.
TRIM_THRESHOLD = 1 << 30
#: ``GLMIX_REUSE_MEMORY=0`` in the environment leaves malloc as it is (as glibc's ``MALLOC_*`` variables do).
OPT_OUT = "GLMIX_REUSE_MEMORY"

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_applied = False


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse (glibc; once per process).

    Does nothing, and returns ``False``, where the C library is not glibc, under
    ``GLMIX_REUSE_MEMORY=0``, or when the environment sets glibc's own malloc
    variables (``MALLOC_TRIM_THRESHOLD_`` and the like, or ``GLIBC_TUNABLES``
    naming malloc): the user's settings win.

    Returns:
        Whether the thresholds are (now or already) raised.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT, "1") == "0" or any(v in os.environ for v in _GLIBC_VARIABLES) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    except (AttributeError, OSError, ValueError):  # not glibc (no such name), no ctypes
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # each returns 1 on success; set the mmap threshold first (setting either turns glibc's own
    # adjustment of both off)
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                 TRIM_THRESHOLD))
    if not _applied:
        _logger.debug("mallopt refused the thresholds: malloc left as it is")
    return _applied
