"""Time of each phase of a BlockFL round, and how round time grows with 10, 100, 1000 devices.

Synthetic linear regression (the paper's task) with 60 samples per device, 3 miners, the
`local` ledger (a block of 1000 first-time payouts exceeds an EVM block's 30M gas) and, for 10
and 100 devices, the embedded EVM too. Each row is the mean over the rounds after the first.
`demo` as a size runs the demo's own experiment (`blockfl demo`: digits, MLP, 10 devices, the
embedded EVM), whose commit share is the one the scale issue bounds.

    python benchmarks/bench_round.py              # 10, 100, 1000 devices
    python benchmarks/bench_round.py demo 10 100  # the demo's round, then 10 and 100
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import machine
import torch

from blockfl.config import Config, load_config
from blockfl.sim.engine import Simulation

ROUNDS = 3


def config_for(devices: int, ledger: str) -> Config:
    """A synthetic-regression experiment sized for `devices`."""
    c = Config()
    return replace(
        c,
        data=replace(c.data, dataset="synthetic", synthetic_samples=devices * 60, size_skew=0.0),
        model=replace(c.model, name="linreg"),
        training=replace(c.training, epochs=1, lr=0.05, batch_size=10, compute_time="modelled"),
        network=replace(c.network, devices=devices, miners=3),
        chain=replace(c.chain, ledger=ledger, max_updates_per_block=max(devices, 10)),
    )


def experiments(sizes: list[str]) -> list[tuple[str, str, Config]]:
    """(row label, ledger, config) for each requested size: `demo` or a number of devices."""
    rows = []
    for size in sizes:
        if size == "demo":
            demo = load_config("demo")
            rows.append(("demo", demo.chain.ledger, demo))
            continue
        devices = int(size)
        for ledger in ("local", "evm") if devices <= 100 else ("local",):
            rows.append((str(devices), ledger, config_for(devices, ledger)))
    return rows


def main() -> None:
    """Print one row per (devices, ledger)."""
    torch.set_num_threads(1)
    print(machine.describe() + ", one torch thread")
    header = None
    for label, ledger, config in experiments(sys.argv[1:] or ["10", "100", "1000"]):
        with tempfile.TemporaryDirectory() as tmp:
            sim = Simulation(config, Path(tmp))
            results = [sim.run_round() for _ in range(ROUNDS)]
        phases = {k: sum(r.phases[k] for r in results[1:]) / (ROUNDS - 1)
                  for k in results[0].phases}
        if header is None:
            header = list(phases)
            print("mean seconds per round phase (wall clock; proof-of-work on this CPU)")
            print(f"{'devices':>7} {'ledger':>6} " + " ".join(f"{h[:14]:>14}" for h in header)
                  + f" {'total':>8} {'commit share':>12}")
        print(f"{label:>7} {ledger:>6} "
              + " ".join(f"{phases[h]:>14.3f}" for h in header)
              + f" {sum(phases.values()):>8.3f}"
              + f" {phases['block_commit'] / sum(phases.values()):>12.0%}")


if __name__ == "__main__":
    main()
