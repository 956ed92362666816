"""glibc's allocator: settings for the processes that are this tool's own (the worker processes it starts and
the `iqa` executable's process; never a caller's process), and giving freed memory back to the operating
system after a large pair.

Scoring allocates and frees image-sized buffers for every pair. Dask's nanny starts worker processes with
`MALLOC_TRIM_THRESHOLD_=65536`, so glibc hands each freed buffer back to the operating system and the next
pair page-faults it in again, zero-filled. `keep_freed_memory` raises the mmap and trim thresholds with
`mallopt`, so freed buffers are reused; memory above `TRIM_THRESHOLD_BYTES` of free heap is still returned,
and buffers above `MMAP_THRESHOLD_BYTES` are still mapped on their own. The `iqa` executable's process, where
the embedded cluster's in-process worker scores, starts with glibc's defaults, which also give some of those
buffers back; it raises the thresholds too (`pipeline.executable`). Where the C library is not glibc, nothing
is changed.

Example:
    >>> keep_freed_memory() in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 16 << 20
TRIM_THRESHOLD_BYTES = 64 << 20


def glibc_mallopt() -> ctypes._CFuncPtr | None:
    """glibc's `mallopt`, or None where the C library is not glibc (other systems, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def glibc_malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's `malloc_trim`, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    return malloc_trim


def return_freed_memory() -> bool:
    """Give the free memory of every malloc arena back to the operating system (`malloc_trim(0)`); False
    where glibc is not used. Changes no setting: the buffers a large pair left free between live blocks
    stop counting in the process's resident memory.
    """
    malloc_trim = glibc_malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


def keep_freed_memory() -> bool:
    """Raise this process's mmap and trim thresholds; False (nothing changed) where glibc is not used.

    Call it only in a process that is this tool's own: a worker process of its own cluster, or the `iqa`
    executable's process (`pipeline.executable`).
    """
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
