"""Aggregation rules side by side with Flower's NumPy versions, on the same inputs, one thread.

FedAvg, coordinate-wise median, trimmed mean (beta 0.2), Krum and Multi-Krum (f = n/4, keeping
n - f) of BlockFL (`blockfl.aggregation`, bit-deterministic) against
`flwr.server.strategy.aggregate`'s `aggregate`, `aggregate_median`, `aggregate_trimmed_avg` and
`aggregate_krum`, for 10 and 100 clients x 1M float32 values and 10 clients x 11M. The rules
Flower lacks run beside its nearest equivalent: clipped FedAvg (clip to the block's median norm)
and centered clipping beside Flower's server-side fixed clipping (its `clip_inputs_inplace` of
each update to the median norm, then `aggregate`; `DifferentialPrivacyServerSideFixedClipping`
without the noise), the geometric median beside `aggregate_median`, and `trust` (a geometric
median reference, cosine and norm gates, then FedAvg) beside Multi-Krum (select, then average).
Prints seconds (best of the repeats) and the ratio Flower / BlockFL (above 1: BlockFL is faster).

Run: python benchmarks/bench_robust.py [--repeats N] [--shapes 10x1,100x1,10x11]
[--rules fedavg,median,trimmed_mean,krum,multi_krum,clipped_fedavg,centered_clip,geomed,trust]
Flower is the optional `[bench]` extra (pip install -e '.[bench]'); without it only BlockFL's
times are printed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread for NumPy's BLAS too, before NumPy loads

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from collections.abc import Callable  # noqa: E402

import machine  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from blockfl.aggregation import AggregationRule, WeightedUpdate, kernels  # noqa: E402
from blockfl.config import AggregationConfig  # noqa: E402

try:
    from flwr.server.strategy import aggregate as flower
    from flwr.supercore import differential_privacy as flower_dp
except ImportError:  # the optional [bench] extra
    flower = flower_dp = None

BETA = 0.2
RULES = ("fedavg", "median", "trimmed_mean", "krum", "multi_krum", "clipped_fedavg",
         "centered_clip", "geomed", "trust")
# layers of about 1M and 11M float32 values
MODELS = {1: [(1000, 784), (1000,), (216, 1000)], 11: [(4000, 2500), (1000, 1000)]}


def _inputs(clients: int, millions: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shapes = MODELS[millions]
    arrays = [[rng.standard_normal(s, dtype=np.float32) for s in shapes] for _ in range(clients)]
    samples = [int(n) for n in rng.integers(50, 500, clients)]
    names = [f"layer{i}" for i in range(len(shapes))]
    base = {n: torch.zeros(s) for n, s in zip(names, shapes, strict=True)}
    updates = [
        WeightedUpdate(f"0x{i + 1:040x}",
                       {n: torch.from_numpy(a) for n, a in zip(names, layers, strict=True)}, k)
        for i, (layers, k) in enumerate(zip(arrays, samples, strict=True))
    ]
    results = list(zip(arrays, samples, strict=True))
    return base, updates, results


def _ours(rule: str, f: int) -> Callable[[dict, list], object]:
    chosen = AggregationRule(AggregationConfig(rule=rule, beta=BETA, f=f))

    def run(base: dict, updates: list) -> object:
        # fresh update objects each call, as a new block's are: a rule may reuse work done on
        # the very same objects (trust's second geometric median), which a repeat would hit
        fresh = [dataclasses.replace(u) for u in updates]
        kept, _ = chosen.select(base, fresh)
        return chosen.aggregate(base, kept)
    return run


def _flower_clipped(results: list) -> object:
    """Flower's server-side fixed clipping (to the median norm here) of each update, then
    FedAvg: the nearest Flower has to clipped FedAvg and centered clipping."""
    bound = float(np.median([flower_dp.get_norm(arrays) for arrays, _ in results]))
    clipped = []
    for arrays, samples in results:
        copy = [a.copy() for a in arrays]
        flower_dp.clip_inputs_inplace(copy, bound)
        clipped.append((copy, samples))
    return flower.aggregate(clipped)


def _flower(rule: str, f: int) -> Callable[[list], object] | None:
    if flower is None:
        return None
    multi_krum = lambda r: flower.aggregate_krum(r, f, len(r) - f)  # noqa: E731
    return {
        "fedavg": flower.aggregate,
        "median": flower.aggregate_median,
        "trimmed_mean": lambda r: flower.aggregate_trimmed_avg(r, BETA),
        "krum": lambda r: flower.aggregate_krum(r, f, 0),
        "multi_krum": multi_krum,
        "clipped_fedavg": _flower_clipped,
        "centered_clip": _flower_clipped,
        "geomed": flower.aggregate_median,
        "trust": multi_krum,
    }[rule]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default="10x1,100x1,10x11",
                        help="clients x millions of values, comma-separated")
    parser.add_argument("--rules", default=",".join(RULES), help="rules, comma-separated")
    parser.add_argument("--numpy-sort", action="store_true",
                        help="sort each coordinate with NumPy, as before the sorting network "
                             "(the median, trimmed mean and centered clipping; same bits)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.numpy_sort:
        kernels.NETWORK_MAX = 0
    if flower is None:
        print("Flower is not installed (pip install -e '.[bench]'): BlockFL's times only")
    print(f"{'clients x values':>17} {'rule':>13} {'BlockFL s':>10} {'Flower s':>10} "
          f"{'Flower/BlockFL':>15}")
    for shape in args.shapes.split(","):
        clients, millions = (int(x) for x in shape.split("x"))
        base, updates, results = _inputs(clients, millions)
        f = max(1, clients // 4)
        for rule in args.rules.split(","):
            ours = _ours(rule, f)
            # Flower's Krum at 100 clients takes 5 to 45 s a run: time it once
            repeats = 1 if rule in ("krum", "multi_krum", "trust") and clients > 10 \
                else args.repeats
            mine = machine.best_seconds(lambda o=ours, b=base, u=updates: o(b, u), repeats)
            theirs_fn = _flower(rule, f)
            theirs = (machine.best_seconds(lambda t=theirs_fn, r=results: t(r), repeats)
                      if theirs_fn else None)
            ratio = f"{theirs / mine:14.2f}x" if theirs else f"{'-':>15}"
            shown = f"{theirs:10.3f}" if theirs else f"{'-':>10}"
            print(f"{clients:>6} x {millions:>3}M {'':>2} {rule:>13} {mine:10.3f} {shown} {ratio}",
                  flush=True)


if __name__ == "__main__":
    main()
