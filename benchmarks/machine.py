"""What this machine does per second, measured in the same run as a benchmark, so that the
benchmark's figures are ratios that carry over to other machines."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence

import numpy as np


def best_seconds(fn: Callable[[], object], repeats: int, warm_up: bool = False) -> float:
    """The fastest of `repeats` timed calls of `fn` (after one untimed call with `warm_up`)."""
    if warm_up:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def timings_interleaved(fns: Sequence[Callable[[], object]], repeats: int) -> list[list[float]]:
    """Seconds of `repeats` calls of each of `fns`, called in turn (after one untimed call of
    each), so that a change in the machine's load falls on all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def memory_copy(mib: int = 256) -> tuple[Callable[[], object], int]:
    """A large array copy and the bytes it moves, counting those read and those written."""
    src = np.ones(mib << 18, dtype=np.float32)
    dst = np.empty_like(src)
    return (lambda: np.copyto(dst, src)), 2 * src.nbytes


def memory_copy_gb_s(mib: int = 256, repeats: int = 4) -> float:
    """GB/s of a large array copy, counting the bytes read and the bytes written."""
    copy, moved = memory_copy(mib)
    return moved / best_seconds(copy, repeats, warm_up=True) / 1e9


def sha256_gb_s(mib: int = 4, repeats: int = 10) -> float:
    """GB/s of hashlib's SHA-256 over one large buffer."""
    data = np.random.default_rng(0).integers(0, 255, mib << 20, dtype=np.uint8).tobytes()
    best = best_seconds(lambda: hashlib.sha256(data).digest(), repeats)
    return len(data) / best / 1e9


def describe() -> str:
    """One line: the date, this machine's CPUs, memory copy and SHA-256 rates."""
    return (f"this machine, {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs, memory copy "
            f"{memory_copy_gb_s():.2f} GB/s (read + written), SHA-256 {sha256_gb_s():.2f} GB/s")
