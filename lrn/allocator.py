"""Keep freed CPU memory in the process instead of handing it back to the OS.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on free, so each training step of a large model page-faults its
activations in again: on the 2-core development machine that costs ~7 GB/s, as much as the
recurrence itself, and it made a (16384, 768) projection 1.7x slower than the same product
into a reused buffer.  PyTorch's CPU performance guide answers this with jemalloc or
tcmalloc; with glibc the same effect is two ``mallopt`` settings, applied here at run time.

The price is that the process keeps its peak heap (freed memory is reused, not returned),
which is what a training or benchmark process wants.  Importing ``lrn`` never changes the
allocator.  It is applied where it pays: by the ``lrn`` command at start, and in any other
program by the first CPU kernel call that allocates a buffer of 8 MiB or more (a layer
large enough to page-fault); ``LRN_KEEP_FREED_MEMORY=0`` opts out of both.  Calling
:func:`keep_freed_memory` early also covers what the program allocates before that.
"""

from __future__ import annotations

import ctypes
import functools
import os

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # bytes: allocations below this come from the reusable heap
_TRIM_THRESHOLD = 2**31 - 1  # bytes of free heap top kept before trimming (i.e. never)

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory for large tensors; True if the setting is in force.

    Idempotent.  False (and nothing changed) when the C library is not glibc or when
    ``LRN_KEEP_FREED_MEMORY=0`` is set.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("LRN_KEEP_FREED_MEMORY", "1") == "0":
        return False
    libc = glibc()
    if libc is None:
        return False
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _applied


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` is in force in this process."""
    return _applied


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (mallopt, malloc_trim, madvise), else None.

    Looked up among the symbols already loaded (``CDLL(None)``): no search of the file system."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.gnu_get_libc_version  # only glibc has mallopt / malloc_trim with these meanings
    except (OSError, AttributeError):
        return None
    return libc
