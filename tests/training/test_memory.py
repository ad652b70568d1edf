"""retain_cpu_memory: glibc keeps freed memory mapped inside the context (fewer page faults) and gives it back after.

``mallopt`` settings are process-wide and permanent, so every behavioural check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from meta_learning.training.memory import available, retain_cpu_memory

GLIBC = sys.platform.startswith("linux") and available()
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc's mallopt is what the context sets")

# Rounds of: malloc 8 blocks of 12 MB (96 MB, each under the 32 MiB mmap threshold; PyTorch's CPU tensors come
# from malloc the same way), touch every page, free them all. With glibc's defaults the freed heap top (96 MB) is
# above the trim threshold and goes back to the kernel after every round, so each round faults its 24,576 pages
# in again; with the heap kept, only the first round does. Raw malloc keeps other allocations from landing above
# the blocks, which would block the trim by chance (torch's small C++ objects did, in 2 of 5 probe runs).
_PROBE = textwrap.dedent(
    """
    import ctypes, json, resource, sys
    from meta_learning.training.memory import retain_cpu_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 12 * 2**20

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def rounds(n):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ptrs = [0] * 8
        for _ in range(n):
            for i in range(8):
                ptrs[i] = libc.malloc(SIZE)
                ctypes.memset(ptrs[i], 1, SIZE)
            for i in range(8):
                libc.free(ptrs[i])
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    p = libc.malloc(SIZE)  # one large free first, as in any PyTorch program: glibc's dynamic threshold adapts
    ctypes.memset(p, 1, SIZE)
    libc.free(p)
    mode = sys.argv[1]
    out = {"rss_start": rss_mb()}
    if mode == "plain":
        out["faults"] = rounds(20)
    else:
        with retain_cpu_memory() as on:
            out["on"] = on
            if mode == "nested":
                with retain_cpu_memory():
                    out["faults"] = rounds(20)
                out["rss_after_inner"] = rss_mb()
            else:
                out["faults"] = rounds(20)
            out["rss_inside"] = rss_mb()
        out["rss_after"] = rss_mb()
        out["faults_after"] = rounds(20)
    print(json.dumps(out))
    """
)


def _probe(mode: str, env: dict[str, str] | None = None) -> dict:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    run_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=run_env,
                          check=True, timeout=120)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_glibc
def test_retained_heap_faults_once_and_is_given_back_after() -> None:
    plain, kept = _probe("plain"), _probe("kept")
    assert kept["on"] is True
    pages_per_round = 8 * 12 * 2**20 // 4096
    assert plain["faults"] > 15 * pages_per_round, plain  # glibc's defaults: (nearly) every round faults again
    assert kept["faults"] < 1.5 * pages_per_round, kept  # kept: the first round only
    assert kept["rss_inside"] > kept["rss_start"] + 80, kept  # the freed 96 MB stay mapped inside the context ...
    assert kept["rss_after"] < kept["rss_inside"] - 80, kept  # ... and go back to the system on the way out
    # afterwards malloc behaves as glibc's own dynamic rule ends up (32 MiB mmap threshold, 64 MiB trim): the
    # 96 MB rounds are trimmed again, as with the defaults, and nothing is worse
    assert kept["faults_after"] <= 1.01 * plain["faults"], (kept, plain)


@needs_glibc
def test_nested_contexts_release_only_at_the_outermost_exit() -> None:
    nested = _probe("nested")
    assert nested["faults"] < 1.5 * 8 * 12 * 2**20 // 4096, nested
    assert nested["rss_after_inner"] > nested["rss_start"] + 80, nested  # the inner exit did not trim
    assert nested["rss_after"] < nested["rss_after_inner"] - 80, nested


@needs_glibc
@pytest.mark.parametrize("env", [{"MALLOC_TOP_PAD_": "1048576"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_user_malloc_settings_win(env: dict[str, str]) -> None:
    assert _probe("kept", env)["on"] is False


def test_bad_pad_bytes() -> None:
    with pytest.raises(TypeError, match="pad_bytes"), retain_cpu_memory(1.5):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match=r"pad_bytes=-1"), retain_cpu_memory(-1):
        pass
    with pytest.raises(ValueError, match="C int"), retain_cpu_memory(2**31):
        pass
