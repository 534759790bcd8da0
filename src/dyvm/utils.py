"""Small helpers shared by the measuring and reporting modules (bench, evaluate, demo).

The lowest layer of the package above models/kernels: it imports no other dyvm module.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import time
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of ``fn()`` for each of ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def interleaved_latency(fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int, repeats: int = 1,
                        warmup: int = 2) -> dict[str, list[float]]:
    """Per call seconds of each of ``fns``, measured in ``rounds`` interleaved A/B rounds (the order of
    the calls alternates from round to round, so drifts of a shared machine hit every one alike):
    name → ``rounds × repeats`` times."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name] += time_call(fns[name], device, repeats, warmup=0)
    return times


# glibc's malloc keeps freed memory for reuse: no mmap per large block, the heap never trimmed (see below)
MALLOC_ENV_VAR = "DYVM_MALLOC"
_TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt accepts: the heap is never trimmed
GLIBC_TUNABLES = f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={_TRIM_THRESHOLD}"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h)


def retain_freed_memory() -> bool:
    """Make glibc's malloc, which serves PyTorch's CPU tensors, keep freed memory in the process for reuse.

    By default glibc serves each block above a threshold (128 KiB, growing with use up to 32 MiB) by a fresh
    mmap and gives freed heap tops back to the kernel, so a model page-faults its activations in again at every
    call: Vim-T at batch 8 took from 59 to 16,900 page faults (up to 34 ms of kernel time) per forward here,
    depending on what the process had allocated before, which moved benchmark ratios by up to 17% from run to
    run; with this, 0-150. Memory then stays at the process's peak. Applied by the ``dyvm`` command; ``DYVM_MALLOC=system``
    leaves malloc as it is. Returns whether it was applied (glibc only)."""
    if os.environ.get(MALLOC_ENV_VAR, "") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc, not musl
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def child_malloc_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child process (a benchmark worker of any build) with :func:`retain_freed_memory`'s setting
    through glibc's tunables, unless ``DYVM_MALLOC=system``."""
    if env.get(MALLOC_ENV_VAR, "") == "system":
        return env
    tunables = [t for t in (env.get("GLIBC_TUNABLES", ""), GLIBC_TUNABLES) if t]
    return dict(env, GLIBC_TUNABLES=":".join(tunables))


def _cpuinfo() -> dict[str, str]:
    """The first "model name" and "flags" lines of /proc/cpuinfo ({} where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if "model name" in info and "flags" in info:
                    break
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags (e.g. "avx2", "avx512f"; empty where /proc/cpuinfo has none)."""
    return set(_cpuinfo().get("flags", "").split())


def cpu_name() -> str:
    """The CPU's model name and its widest x86 vector extensions, e.g. "AMD EPYC (AVX2)": speed results
    differ between machines of one name with and without AVX-512, and bf16 matmuls with and without AMX."""
    name = _cpuinfo().get("model name") or platform.processor() or platform.machine()
    flags = cpu_flags()
    isa = ("AVX-512" + (", AVX512-BF16" if "avx512_bf16" in flags else "")
           + (", AMX-BF16" if "amx_bf16" in flags else "") if "avx512f" in flags
           else "AVX2" if "avx2" in flags else "")
    return f"{name} ({isa})" if isa else name


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats with one decimal, columns right-aligned."""
    cells = [[str(h) for h in headers]] + [[("%.1f" % c) if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])
