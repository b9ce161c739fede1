"""Speed of the exact O(1) Monte Carlo round simulator (the latency model's check).

Prints rounds simulated per second for 10^6 rounds on the default parameters at
lambda = 0.1, 5 and 50 per miner (E[N_fork] = 1.3, 4.5e5 and 2.5e56 attempts per round): the cost
does not depend on lambda. Best of 3.
Run: python benchmarks/bench_montecarlo.py
"""

from __future__ import annotations

import machine

from blockfl.latency.model import LatencyParams, expected_latency
from blockfl.latency.montecarlo import simulate

ROUNDS = 1_000_000


def main() -> None:
    """Print one row per lambda."""
    simulate(LatencyParams(), 1000, seed=0).summary()  # warm-up
    print(f"{'lambda (1/s)':>12} {'E[N_fork]':>10} {'rounds':>10} {'seconds':>8} {'rounds/s':>12}")
    for lambda_ in (0.1, 5.0, 50.0):
        params = LatencyParams(lambda_=lambda_)
        best = machine.best_seconds(lambda p=params: simulate(p, ROUNDS, seed=0).summary(), 3)
        n_fork = expected_latency(params).n_fork
        print(f"{lambda_:>12g} {n_fork:>10.3g} {ROUNDS:>10,} {best:>8.3f} {ROUNDS / best:>12,.0f}")


if __name__ == "__main__":
    main()
