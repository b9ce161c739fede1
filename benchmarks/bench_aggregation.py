"""Throughput of FedAvg aggregation and of model hashing on a 1M-parameter float32 model, as
ratios to this machine's memory bandwidth and SHA-256 rate measured in the same run (one torch
thread, as every process of ours runs). Each FedAvg call alternates with a 256 MiB memory copy,
so that both see the same load: each call's rate over the copy's right after it, median and
range over the calls. Beside it, what the float64 arithmetic alone costs on this CPU: the plain
unweighted float64 sum of the same updates, in cache-sized blocks, five updates a pass (each
value widened and added once, as FedAvg does, without its weights, division and base).

Run: python benchmarks/bench_aggregation.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics

import machine
import numba
import numpy as np
import torch

from blockfl.aggregation import FedAvg, WeightedUpdate
from blockfl.tensors import StateDict, encode, tensor_hash

SHAPES = {"fc1.weight": (1000, 784), "fc1.bias": (1000,), "fc2.weight": (216, 1000)}


def _random_state(gen: torch.Generator, scale: float = 1.0) -> StateDict:
    return {k: torch.randn(s, generator=gen) * scale for k, s in SHAPES.items()}


@numba.njit(nogil=True, boundscheck=False)
def _plain_sum(values: numba.typed.List, block: np.ndarray) -> None:
    """The unweighted float64 sum of same-sized float32 arrays (a multiple of 5 of them), one
    cache-sized block at a time, five arrays a pass: FedAvg without its weights, division and
    base (the tail past the last whole block is left out)."""
    n, size = block.size, values[0].size
    for start in range(0, size - n + 1, n):
        block[:] = 0.0
        for k in range(0, len(values), 5):
            a, b, c = values[k][start:start + n], values[k + 1][start:start + n], \
                values[k + 2][start:start + n]
            d, e = values[k + 3][start:start + n], values[k + 4][start:start + n]
            for j in range(n):
                block[j] = (block[j] + np.float64(a[j]) + np.float64(b[j]) + np.float64(c[j])
                            + np.float64(d[j]) + np.float64(e[j]))


def _plain_sum_seconds(updates: list[WeightedUpdate]) -> float:
    """Seconds of `_plain_sum` over every tensor of `updates` (best of 5)."""
    tensors = [numba.typed.List([u.delta[k].numpy().reshape(-1) for u in updates])
               for k in SHAPES]
    block = np.empty(1 << 12)
    return machine.best_seconds(lambda: [_plain_sum(t, block) for t in tensors], 5,
                                warm_up=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    copy, moved = machine.memory_copy()
    sha = machine.sha256_gb_s()
    print(machine.describe())
    gen = torch.Generator().manual_seed(0)
    base = _random_state(gen)
    n_params = sum(t.numel() for t in base.values())
    model_bytes = n_params * 4
    print(f"model: {n_params:,} float32 parameters, torch threads: {torch.get_num_threads()}")
    for n_updates in (10, 100):
        updates = [
            WeightedUpdate(f"0x{i:040x}", _random_state(gen, 0.01), 1 + i % 97)
            for i in range(n_updates)
        ]
        fedavg, copies = machine.timings_interleaved(
            [lambda u=updates: FedAvg().aggregate(base, u), copy], args.repeats)
        # each call against the copy right after it: the pair saw the same load
        ratios = sorted(n_updates * model_bytes / f / (moved / c)
                        for f, c in zip(fedavg, copies, strict=True))
        gbps = n_updates * model_bytes / min(fedavg) / 1e9
        print(f"fedavg {n_updates:>3} updates: {min(fedavg) * 1e3:8.2f} ms  {gbps:6.2f} GB/s of"
              f" updates; per call / the copy beside it: median {statistics.median(ratios):.2f}"
              f" x memory copy (worst {ratios[0]:.2f}, best {ratios[-1]:.2f}; copy"
              f" {moved / min(copies) / 1e9:.2f} GB/s at best)")
        floor = _plain_sum_seconds(updates)
        print(f"  their plain float64 sum (no weights, division or base): {floor * 1e3:8.2f}"
              f" ms; FedAvg takes {min(fedavg) / floor:.2f} x that")
    secs = machine.best_seconds(lambda: tensor_hash(base), args.repeats, warm_up=True)
    rate = model_bytes / secs / 1e9
    print(f"tensor_hash: {secs * 1e3:8.2f} ms  {rate:6.2f} GB/s = {rate / sha:.2f} x raw SHA-256")
    secs = machine.best_seconds(lambda: encode(base), args.repeats, warm_up=True)
    print(f"encode:      {secs * 1e3:8.2f} ms  {model_bytes / secs / 1e9:6.2f} GB/s")


if __name__ == "__main__":
    main()
