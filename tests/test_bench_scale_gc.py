"""bench_scale's `GC ms per device` column counts the CPU time of Python's garbage collector."""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_scale import GcClock


def test_gc_clock_counts_collections_and_resets_on_take():
    with GcClock() as clock:
        cycles = []
        for _ in range(200_000):  # a heap of reference cycles for a full collection to scan
            node: list = []
            node.append(node)
            cycles.append(node)
        clock.take()
        gc.collect()
        assert clock.take() > 0.0
        assert clock.take() == 0.0  # nothing collected since
    gc.collect()
    assert clock.take() == 0.0  # not counted once left
