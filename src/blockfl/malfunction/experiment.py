"""BlockFL versus vanilla FL under malfunction (the robustness claim of Kim et al.).

Three systems train the same model on the same shards with the same local training seeds; each
round a server (vanilla FL) or each miner (BlockFL) hands out a corrupted global model with
probability ``p`` (:mod:`.handouts`, :mod:`.corruption`). Accuracy comes from real training
and evaluation; round latency from the latency model with the experiment's configuration
(:mod:`.timing`). Every run is repeated over ``malfunction.seeds`` seeds (data split, initial
model, training, malfunction and latency draws all follow the seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from blockfl.aggregation import FedAvg, WeightedUpdate
from blockfl.config import Config
from blockfl.latency.model import LatencyParams
from blockfl.malfunction.corruption import CORRUPTIONS, entropy
from blockfl.malfunction.handouts import HANDOUTS, SYSTEMS, Setting, draws
from blockfl.malfunction.timing import (
    blockfl_latencies,
    latency_params,
    vanilla_latency,
    verified_extra,
)
from blockfl.sim.setup import Experiment, build_experiment
from blockfl.task import evaluate, local_update
from blockfl.tensors import StateDict

TRAINING_STREAM = 1
"""Random stream of the local training seeds."""


@dataclass(frozen=True)
class RoundRecord:
    """One completed round of one system at one ``p`` and seed.

    ``affected_devices`` received a corrupted model, ``trained_on_corrupted`` trained on one
    (0 for the verified system, which re-downloads), ``malfunctions`` counts the malfunctioning
    server (0/1) or miners, ``stalled_slots`` the rounds the verified system waited because
    every miner malfunctioned. ``accuracy`` is NaN for regression, where ``loss`` is the MSE.
    """

    system: str
    p: float
    seed: int
    round: int
    accuracy: float
    loss: float
    latency: float
    cumulative_latency: float
    affected_devices: int
    trained_on_corrupted: int
    malfunctions: int
    redownloads: int
    stalled_slots: int


@dataclass(frozen=True)
class MalfunctionResults:
    """All round records of all systems, ``p`` values and seeds, and each seed's latency model."""

    config: Config
    records: list[RoundRecord]
    params: dict[int, LatencyParams]
    task: str

    @property
    def seeds(self) -> list[int]:
        """The seeds run, in order."""
        return list(self.params)

    @property
    def p_values(self) -> list[float]:
        """``p`` and the sweep values, sorted, without duplicates."""
        return p_values(self.config)

    def trajectory(self, system: str, p: float, seed: int | None = None) -> list[RoundRecord]:
        """The records of ``system`` at ``p`` for ``seed`` (default: the first), by round."""
        seed = self.seeds[0] if seed is None else seed
        return [r for r in self.records if r.system == system and r.p == p and r.seed == seed]

    def final(self, system: str, p: float, seed: int | None = None) -> RoundRecord:
        """The last round of ``system`` at ``p``."""
        return self.trajectory(system, p, seed)[-1]


def p_values(config: Config) -> list[float]:
    """``malfunction.p`` and ``malfunction.sweep_p``, sorted, without duplicates."""
    m = config.malfunction
    return sorted({m.p, *m.sweep_p})


def validate(config: Config) -> None:
    """Raise ``ValueError`` on a configuration the experiment cannot run."""
    m = config.malfunction
    if config.run.rounds < 1 or m.seeds < 1:
        raise ValueError("run.rounds and malfunction.seeds must be positive")
    if config.network.devices < 1 or config.network.miners < 1:
        raise ValueError("network.devices and network.miners must be positive")
    if not all(0.0 <= q < 1.0 for q in p_values(config)):
        raise ValueError("malfunction probabilities must lie in [0, 1)")
    if m.corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {m.corruption!r}: {', '.join(CORRUPTIONS)}")


def _train_round(
    experiment: Experiment, bases: Sequence[StateDict], config: Config, r: int
) -> list[WeightedUpdate]:
    """Local SGD of every device from its base model; seeds depend on (seed, round, device)."""
    updates = []
    for k, (shard, base) in enumerate(zip(experiment.shards, bases, strict=True)):
        local = local_update(experiment.task, base, shard, config.training.at_round(r + 1),
                             entropy(config.run.seed, r, TRAINING_STREAM, k))
        updates.append(WeightedUpdate(f"device{k:04d}", local.delta, local.n_samples))
    return updates


def run_system(
    system: str, p: float, experiment: Experiment, config: Config, latencies: Sequence[float]
) -> list[RoundRecord]:
    """Train ``system`` for ``run.rounds`` rounds at malfunction probability ``p``;
    ``latencies`` is each round's latency before the verified system's extras."""
    seed = config.run.seed
    setting = Setting(config.network.devices, config.network.miners, seed,
                      config.malfunction.corruption)
    params = latency_params(config, experiment)
    test = experiment.test
    state, total, records = experiment.initial, 0.0, []
    for r in range(config.run.rounds):
        h = HANDOUTS[system](state, draws(setting, r), p, setting, r)
        state = FedAvg().aggregate(h.aggregate_onto, _train_round(experiment, h.bases, config, r))
        latency = latencies[r] + verified_extra(params, h, seed, r)
        total += latency
        metrics = evaluate(experiment.task, state, test)
        records.append(RoundRecord(
            system=system, p=p, seed=seed, round=r,
            accuracy=metrics.get("accuracy", math.nan),
            loss=metrics.get("loss", metrics.get("mse", math.nan)),
            latency=latency, cumulative_latency=total,
            affected_devices=h.affected, trained_on_corrupted=h.trained_on_corrupted,
            malfunctions=h.malfunctions, redownloads=h.redownloads,
            stalled_slots=h.stalled_slots,
        ))
    return records


@contextmanager
def _single_thread() -> Iterator[None]:
    """Pin torch to one intra-op thread (restored afterwards): local training is only
    bit-reproducible for a fixed thread count, and tiny models run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_malfunction(config: Config, on_run: Callable[[], None] | None = None) -> MalfunctionResults:
    """Run the three systems at every ``p`` for every seed (on one torch thread);
    ``on_run`` is called after each (seed, p, system) run, e.g. to advance a progress bar."""
    validate(config)
    records: list[RoundRecord] = []
    params: dict[int, LatencyParams] = {}
    task = ""
    with _single_thread():
        for k in range(config.malfunction.seeds):
            seeded = replace(config, run=replace(config.run, seed=config.run.seed + k))
            experiment = build_experiment(seeded)
            task = experiment.test.task
            params[seeded.run.seed] = p = latency_params(seeded, experiment)
            rounds = seeded.run.rounds
            latencies = {"vanilla": [vanilla_latency(p)] * rounds}
            drawn = blockfl_latencies(p, rounds, seeded.run.seed).tolist()
            latencies["blockfl-unverified"] = latencies["blockfl"] = drawn
            for q in p_values(seeded):
                for system in SYSTEMS:
                    records += run_system(system, q, experiment, seeded, latencies[system])
                    if on_run:
                        on_run()
    return MalfunctionResults(config, records, params, task)


def runs_count(config: Config) -> int:
    """How many (seed, p, system) runs :func:`run_malfunction` makes."""
    return config.malfunction.seeds * len(p_values(config)) * len(SYSTEMS)
