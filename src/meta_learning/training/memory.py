"""Keep freed CPU memory in the process while training: fewer page faults from glibc's allocator.

PyTorch's CPU tensors come from ``malloc``. A meta-training step allocates and frees the same large activations
(a 75 x 64 x 28 x 28 Conv4 map is 15 MB) hundreds of times; glibc returns the top of its heap to the kernel as
soon as more than its trim threshold is free, so the next step's tensors land on fresh pages and every 4 KiB page
costs a page fault on first touch. Measured on MAML Conv4 meta-batches of 32 tasks (benchmarks/RESULTS.md,
2026-12-08): a fresh process running 10 of them took 0.9-3.9 million minor faults and 1.7-8.1 s of kernel time;
inside this context 0.11-0.17 million and under 1 s, and 4-13% more tasks per second (one thread, medians of four
fresh-process rounds). learn2learn run inside it gained 10-28% (two threads), as much or more.

:func:`retain_cpu_memory` sets glibc's ``M_TOP_PAD`` (heap growth and what a trim keeps) for the duration and
fixes ``M_MMAP_THRESHOLD`` at 32 MiB, the largest value glibc's dynamic threshold reaches on its own, so that
tensors under it come from the heap instead of fresh ``mmap`` s. On the way out it restores glibc's default pad
(128 KiB), sets the trim threshold glibc would use with that ``mmap`` threshold (64 MiB) and calls
``malloc_trim(0)``, so the memory goes back to the system once training ends. Effects to know:

- While active, up to ``pad_bytes`` of freed memory per ``malloc`` arena stay mapped: the resident size after a
  peak does not shrink until the context ends (the peak itself was unchanged within the runs' spread in the
  benchmarks).
- Setting these parameters turns glibc's dynamic ``mmap`` threshold off for the rest of the process (it is
  frozen at 32 MiB), the largest value the dynamic rule can reach (it follows the largest freed ``mmap`` block).
- Nothing is done (and ``False`` is yielded) where the C library is not glibc (macOS, Windows, musl) or where the
  user tuned ``malloc`` already (``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``
  or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``): their settings win.

Contexts nest (a counter; only the outermost enter and exit touch ``malloc``) and are thread-safe.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["retain_cpu_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_GLIBC_DEFAULT_TOP_PAD = 128 * 1024
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD  # what glibc's dynamic rule pairs with that mmap threshold
_USER_SETTINGS = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
DEFAULT_PAD_BYTES = 512 * 1024 * 1024

_lock = threading.Lock()
_depth = 0
_acting = False  # whether the outermost context's mallopt calls succeeded


@functools.cache
def _glibc() -> Any | None:
    """The process's C library if it is glibc (it has ``gnu_get_libc_version``), else None (looked up once)."""
    if os.name != "posix":
        return None
    try:  # the symbols already loaded into the process (no ldconfig subprocess, as find_library runs)
        lib = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(lib, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.mallopt.restype = ctypes.c_int
    lib.malloc_trim.argtypes = [ctypes.c_size_t]
    return lib


def _user_tuned_malloc() -> bool:
    return any(k in os.environ for k in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def available() -> bool:
    """Whether :func:`retain_cpu_memory` acts in this process (glibc, and no ``malloc`` settings of the user's)."""
    return _glibc() is not None and not _user_tuned_malloc()


@contextmanager
def retain_cpu_memory(pad_bytes: int = DEFAULT_PAD_BYTES) -> Iterator[bool]:
    """Keep up to ``pad_bytes`` of freed memory per ``malloc`` arena mapped for the duration (module notes).

    Yields whether it acts (glibc, no user ``malloc`` settings). ``pad_bytes`` must be an int in [0, 2**31 - 1]
    (``mallopt`` takes an ``int``).
    """
    if isinstance(pad_bytes, bool) or not isinstance(pad_bytes, int):
        raise TypeError(f"pad_bytes must be an int, got {type(pad_bytes).__name__} ({pad_bytes!r})")
    if not 0 <= pad_bytes <= 2**31 - 1:
        raise ValueError(f"pad_bytes={pad_bytes} must be in [0, 2**31 - 1] (mallopt takes a C int)")
    global _depth, _acting
    libc = _glibc() if available() else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:  # mallopt returns 1 on success
            _acting = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
            _acting = libc.mallopt(_M_TOP_PAD, pad_bytes) == 1 and _acting
        _depth += 1
        acting = _acting
    try:
        yield acting
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_TOP_PAD, _GLIBC_DEFAULT_TOP_PAD)
                libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                libc.malloc_trim(0)
