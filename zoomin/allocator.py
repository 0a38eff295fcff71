"""Fixed heap settings for streamed stage I (glibc ``mallopt``), so memory and speed stay predictable.

Stage I on a gigapixel slide allocates and frees the same few-MB buffers for every piece, next to
a few maps of the view's size. glibc's defaults adapt to that badly: after a large map is freed its
*dynamic* thresholds rise, so up to ~64 MB of freed heap is kept out of the system's reach (peak RSS
then depends on the order of allocations, not on what is alive), and every thread decoding pixels
gets an arena of its own that holds its own transients. ``steady()`` fixes the thresholds: buffers
up to ``MMAP_BYTES`` (the pieces' activations) come from the heap and are reused piece after
piece; larger ones (the maps) are mapped on their own and given back when freed; the heap's free
top is trimmed above ``TRIM_BYTES``; one arena. Measured on the 2-core reference machine with
``zoomin predict`` on a 100,000² slide: see ``docs/slide_memory.md``.

``zoomin predict`` and ``zoomin train`` on slides (``data.task: manifest``) call it;
``ZOOMIN_MALLOC=default`` keeps glibc's defaults. Training on in-memory canvases (``zoomin demo``,
Megapixel MNIST) does not: there every step frees and reallocates activations and batches of 10-25 MB,
which the fixed 8 MB threshold maps and faults in afresh each time (measured in docs/demo.md,
"glibc's heap"), where glibc's adaptive threshold reuses them. Elsewhere
(musl, macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameter numbers
MMAP_BYTES = 8 * 2**20  # allocations above this are mapped on their own
TRIM_BYTES = 8 * 2**20  # the heap's free top is given back above this
ARENAS = 1


def steady() -> bool:
    """Fix glibc's heap settings (see the module); True when glibc took them."""
    if os.environ.get("ZOOMIN_MALLOC", "").strip().lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(M_MMAP_THRESHOLD, MMAP_BYTES), mallopt(M_TRIM_THRESHOLD, TRIM_BYTES),
                mallopt(M_ARENA_MAX, ARENAS)])
