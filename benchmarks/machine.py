"""What this machine does per second, measured in the same run as a benchmark, so that the
benchmark's figures are ratios that carry over to other machines."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

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


def memory_copy_gb_s(mib: int = 256, repeats: int = 4) -> float:
    """GB/s of a large array copy, counting the bytes read and the bytes written."""
    src = np.ones(mib << 18, dtype=np.float32)
    dst = np.empty_like(src)
    best = best_seconds(lambda: np.copyto(dst, src), repeats, warm_up=True)
    return 2 * src.nbytes / best / 1e9


def sha256_gb_s(mib: int = 4, repeats: int = 10) -> float:
    """GB/s of hashlib's SHA-256 over one large buffer."""
    data = np.random.default_rng(0).integers(0, 255, mib << 20, dtype=np.uint8).tobytes()
    best = best_seconds(lambda: hashlib.sha256(data).digest(), repeats)
    return len(data) / best / 1e9


def describe() -> str:
    """One line: the date, this machine's CPUs, memory copy and SHA-256 rates."""
    return (f"this machine, {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs, memory copy "
            f"{memory_copy_gb_s():.2f} GB/s (read + written), SHA-256 {sha256_gb_s():.2f} GB/s")
