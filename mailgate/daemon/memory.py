"""Give memory back to the system after a big mail.

glibc's malloc serves large requests from mmap and returns them on free, but it
raises that threshold each time such a block is freed (up to 32 MiB), so after
one big mail the next ones are carved from the heap and their pages stay with
the process: a daemon that took in one 24 MiB mail kept hundreds of MiB. A fixed
threshold keeps every block of a megabyte or more in its own mapping, returned
the moment Python frees it. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h
THRESHOLD = 1 << 20


def return_big_blocks() -> bool:
    """Call once at the start of each long-running process; True when the allocator took the setting."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    return False
