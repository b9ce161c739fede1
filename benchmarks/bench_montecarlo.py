"""Speed of the vectorized Monte Carlo round simulator (the latency model's check).

Prints rounds simulated per second for 10^4 .. 10^6 rounds on the default parameters, and the
time of one sweep point of 10^5 rounds (what `blockfl latency sweep` runs per point).
Run: python benchmarks/bench_montecarlo.py
"""

from __future__ import annotations

import time

from blockfl.latency.model import LatencyParams
from blockfl.latency.montecarlo import simulate


def main() -> None:
    """Print one row per number of rounds."""
    params = LatencyParams()
    simulate(params, 1000, seed=0).summary()  # warm-up
    print(f"{'rounds':>10} {'seconds':>9} {'rounds/s':>12}")
    for rounds in (10_000, 100_000, 1_000_000):
        best = float("inf")
        for repeat in range(3):
            start = time.perf_counter()
            simulate(params, rounds, seed=repeat).summary()
            best = min(best, time.perf_counter() - start)
        print(f"{rounds:>10,} {best:>9.3f} {rounds / best:>12,.0f}")


if __name__ == "__main__":
    main()
