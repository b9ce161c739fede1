"""The same task in Flower's simulation engine (`pip install -e '.[bench]'`), for bench_scale.

The same shards, model, initial weights, local SGD (our `train_local`: epochs, learning rate,
batch size, seeds) and FedAvg weighted by sample counts, run as Flower's `ClientApp`s on its
Ray backend, with no chain, no signatures and no verification: what Flower users would run.

    python benchmarks/flower_baseline.py DEVICES MODEL ROUNDS   # prints seconds per round
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def flower_seconds_per_round(devices: int, model: str, rounds: int) -> float:
    """Mean seconds of a Flower simulation round after the first (same task as bench_scale)."""
    from bench_scale import experiment_config
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from blockfl.devices.training_batched import train_local
    from blockfl.sim.setup import build_experiment

    config = experiment_config(devices, model, rounds)
    experiment = build_experiment(config)
    names = list(experiment.initial)
    t = config.training
    stamps: list[float] = []

    class Client(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters, fit_config):
            torch.set_num_threads(1)
            base = {k: torch.from_numpy(v) for k, v in zip(names, parameters, strict=True)}
            shard = experiment.shards[self.index]
            local = train_local(model, base, shard, t, self.index)
            new = [(base[k] + local.delta[k]).numpy() for k in names]
            return new, local.n_samples, {}

    def client_fn(context):
        return Client(int(context.node_config["partition-id"])).to_client()

    class Timed(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            stamps.append(time.perf_counter())
            return super().aggregate_fit(server_round, results, failures)

    def server_fn(context):
        strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=devices,
                         min_available_clients=devices, initial_parameters=ndarrays_to_parameters(
                             [v.numpy() for v in experiment.initial.values()]))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn),
                   num_supernodes=devices,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    gaps = np.diff(stamps)
    return float(gaps.mean()) if len(gaps) else float("nan")


if __name__ == "__main__":
    n, name, r = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    print(json.dumps({"flower_round_s": flower_seconds_per_round(n, name, r)}))
