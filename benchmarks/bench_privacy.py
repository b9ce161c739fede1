"""The cost of differential privacy: one round's local training of every device of a
digits/MLP network (the default [training]: 2 epochs, batch 16) with `[privacy] mode` off,
client and dp_sgd, timed in turn in one run (one torch thread), as ratios to mode off.

Rows: `off` trains the devices stacked (`train_many`, simulate's fast path); `off, per
device` trains them one by one with `torch.optim.SGD` (the loop Opacus wraps, so that the
dp_sgd ratio over it is Opacus's own cost); `client` is the stacked training plus each
update's clip and keyed noise (`blockfl.privacy.privatize`); `dp_sgd` is Opacus's DP-SGD,
device by device. Each ratio is per repetition against the `off` call of the same repetition:
median and worst over the repetitions.

Run: python benchmarks/bench_privacy.py [--devices N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import machine
import torch

from blockfl.config import Config, PrivacyConfig
from blockfl.devices.builtin_task import BuiltinTask
from blockfl.devices.training import train_module
from blockfl.keys import derived_key
from blockfl.privacy import privatize
from blockfl.sim.setup import build_experiment
from blockfl.task import TrainingJob, local_updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine.describe())
    base = Config()
    config = replace(base, network=replace(base.network, devices=args.devices),
                     model=replace(base.model, name="mlp"))
    training = config.training
    experiment = build_experiment(config)
    state = experiment.initial
    jobs = [TrainingJob(shard, seed) for seed, shard in enumerate(experiment.shards)]
    keys = [derived_key("device", i, 0) for i in range(len(jobs))]
    client = PrivacyConfig(mode="client", noise_multiplier=1.0, clip=1.0)
    plain = BuiltinTask(config)
    dp = BuiltinTask(replace(config, privacy=PrivacyConfig(mode="dp_sgd")))

    def off() -> object:
        return local_updates(plain, state, jobs, training)

    def per_device() -> object:
        return [train_module("mlp", state, j.data.x, j.data.y, training, seed=j.seed,
                             task=j.data.task) for j in jobs]

    def client_mode() -> object:
        return [privatize(u.delta, client, key, 1)
                for u, key in zip(off(), keys, strict=True)]

    def dp_sgd() -> object:
        return local_updates(dp, state, jobs, training)

    names = ["off", "off, per device", "client", "dp_sgd"]
    times = machine.timings_interleaved([off, per_device, client_mode, dp_sgd], args.repeats)
    samples = sum(len(j.data) for j in jobs)
    print(f"one round of {len(jobs)} devices' training (digits/mlp, {samples} samples, "
          f"{training.epochs} epochs, batch {training.batch_size}), {args.repeats} repetitions")
    for name, seconds in zip(names, times, strict=True):
        ratios = sorted(s / o for s, o in zip(seconds, times[0], strict=True))
        over_loop = sorted(s / o for s, o in zip(seconds, times[1], strict=True))
        print(f"{name:>16}: median {statistics.median(seconds) * 1e3:8.1f} ms "
              f"(worst {max(seconds) * 1e3:8.1f}); / off: median "
              f"{statistics.median(ratios):6.2f}x (worst {ratios[-1]:6.2f}x); / off per device: "
              f"median {statistics.median(over_loop):5.2f}x (worst {over_loop[-1]:5.2f}x)")


if __name__ == "__main__":
    main()
