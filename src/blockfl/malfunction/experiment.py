"""BlockFL versus vanilla FL under malfunction (the robustness claim of Kim et al.).

Three systems train the same model on the same shards with the same local training seeds:

``vanilla``
    One server. With probability ``p`` per round it hands every device a corrupted global
    model; devices train on it and the server applies the average delta to the model it handed
    out, so the corruption lands in the next global model.
``blockfl-unverified``
    ``N_M`` miners, each malfunctioning independently with probability ``p`` per round; a
    device downloads from the miner it is associated with (uniformly at random, every round),
    so only that miner's devices train on a corrupted model. The block's aggregate is FedAvg
    of all deltas applied to the true global model, so those devices only add bad deltas.
``blockfl``
    As above, but each device compares ``tensor_hash`` of the downloaded model with the global
    model hash on chain; on a mismatch it downloads again from a healthy miner (one extra
    ``T_dn``). If every miner malfunctions, no device can get a matching model: the devices
    wait one round (a stalled slot costing ``T_dn`` plus a round latency) and try again with
    fresh malfunction draws, so every block is trained on the true model.

Corruption (seeded per round and per server/miner): ``noise`` (the default) replaces every
tensor by Gaussian noise with the tensor's RMS as standard deviation, a random
re-initialisation; ``sign`` negates every tensor.

Latency is modelled, not measured: vanilla FL takes ``T_local + T_up + T_dn,model + T_agg``
(:func:`vanilla_latency`); a BlockFL round takes a Monte Carlo draw of the round latency
(:func:`blockfl.latency.montecarlo.simulate`, shared by both BlockFL systems and all ``p``)
plus the verified system's extra downloads. Malfunction and association draws depend only on
``(seed, round)`` and a miner malfunctions when its uniform draw is below ``p``, so runs at
different ``p`` are coupled (common random numbers).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from blockfl.aggregation import FedAvg, WeightedUpdate
from blockfl.config import Config, DataConfig, ModelConfig, NetworkConfig, RunConfig
from blockfl.devices.training import evaluate, train_local
from blockfl.latency import model
from blockfl.latency.model import LatencyParams
from blockfl.latency.montecarlo import simulate
from blockfl.sim.setup import Experiment, build_experiment
from blockfl.tensors import StateDict, tensor_hash

SYSTEMS: tuple[str, ...] = ("vanilla", "blockfl-unverified", "blockfl")
"""The compared systems, in plotting order."""


def _noise(state: StateDict, gen: torch.Generator) -> StateDict:
    """Every tensor replaced by N(0, rms(tensor)^2) noise (N(0, 1) for an all-zero tensor)."""
    out = {}
    for name, t in state.items():
        rms = float(t.double().square().mean().sqrt()) or 1.0
        out[name] = torch.randn(t.shape, generator=gen, dtype=t.dtype) * rms
    return out


def _sign(state: StateDict, gen: torch.Generator) -> StateDict:
    """Every tensor negated (deterministic; ``gen`` is unused)."""
    return {name: -t for name, t in state.items()}


CORRUPTIONS: dict[str, Callable[[StateDict, torch.Generator], StateDict]] = {
    "noise": _noise,
    "sign": _sign,
}


@dataclass(frozen=True)
class MalfunctionConfig:
    """One malfunction experiment: the FL task, the malfunction model and the latency model.

    ``p`` is the malfunction probability of the trajectory run; the final accuracy is also
    computed for every value in ``sweep_p``. ``latency`` gives the link and compute parameters;
    its ``n_devices`` and ``n_miners`` are replaced by ``devices`` and ``miners``.
    """

    rounds: int = 10
    devices: int = 10
    miners: int = 3
    p: float = 0.3
    sweep_p: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5)
    seed: int = 0
    dataset: str = "digits"  # digits | synthetic (linear regression, model linreg)
    model: str = "mlp"
    lr: float = 0.3
    epochs: int = 2
    batch_size: int = 16
    partition: str = "iid"  # iid | dirichlet
    alpha: float = 0.5
    corruption: str = "noise"  # noise | sign
    latency: LatencyParams = field(default_factory=LatencyParams)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.devices < 1 or self.miners < 1:
            raise ValueError("rounds, devices and miners must be positive")
        if not all(0.0 <= q < 1.0 for q in (self.p, *self.sweep_p)):
            raise ValueError("malfunction probabilities must lie in [0, 1)")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.corruption!r}: {', '.join(CORRUPTIONS)}")

    @property
    def p_values(self) -> list[float]:
        """``p`` and the sweep values, sorted, without duplicates."""
        return sorted({self.p, *self.sweep_p})

    def experiment_config(self) -> Config:
        """The :class:`blockfl.config.Config` that selects the same data, split and model."""
        return Config(
            run=RunConfig(rounds=self.rounds, seed=self.seed),
            data=DataConfig(dataset=self.dataset, partition=self.partition, alpha=self.alpha),
            model=ModelConfig(name=self.model),
            network=NetworkConfig(devices=self.devices, miners=self.miners),
        )

    def latency_params(self) -> LatencyParams:
        """``latency`` with the experiment's numbers of devices and miners."""
        return self.latency.with_overrides({"n_devices": self.devices, "n_miners": self.miners})


@dataclass(frozen=True)
class RoundRecord:
    """One completed round of one system at one ``p``.

    ``affected_devices`` received a corrupted model, ``trained_on_corrupted`` trained on one
    (0 for the verified system, which re-downloads), ``malfunctions`` counts the malfunctioning
    server (0/1) or miners, ``stalled_slots`` the rounds the verified system waited because
    every miner malfunctioned. ``accuracy`` is NaN for regression, where ``loss`` is the MSE.
    """

    system: str
    p: float
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
    """All round records of all systems and ``p`` values, and the latency constants used."""

    config: MalfunctionConfig
    records: list[RoundRecord]
    vanilla_round_latency: float
    blockfl_expected_latency: float
    t_dn: float
    task: str

    def trajectory(self, system: str, p: float) -> list[RoundRecord]:
        """The records of ``system`` at ``p``, by round."""
        return [r for r in self.records if r.system == system and r.p == p]

    def final(self, system: str, p: float) -> RoundRecord:
        """The last round of ``system`` at ``p``."""
        return self.trajectory(system, p)[-1]


def vanilla_latency(p: LatencyParams) -> float:
    """Vanilla FL round: ``T_local + T_up + T_dn,model + T_agg``, no mining or verification.

    The server sends back only the aggregated model, so the download is ``delta_m / R_dn``
    (not a block); the server's aggregation of ``N_D`` updates, ``delta_m N_D / f_c``, has the
    formula of ``T_global``.
    """
    download = p.delta_m / float(model.link_rate(p.w_dn, p.snr_dn_db))
    return model.t_local(p) + model.t_up(p) + download + model.t_global(p)


# Random streams: every draw is seeded by (seed, round, stream, ...), independent of the others.
_ROUND, _TRAINING, _CORRUPTION, _STALLS = range(4)


def _entropy(*key: int) -> int:
    """A 32-bit seed derived from ``key`` by ``numpy.random.SeedSequence``."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


@dataclass(frozen=True)
class _Draws:
    """The random draws of one round that every system and every ``p`` shares."""

    server: float
    miners: np.ndarray
    association: np.ndarray
    rng: np.random.Generator  # further draws: retry slots, re-download miners


def _draws(seed: int, round_: int, n_devices: int, n_miners: int) -> _Draws:
    rng = np.random.default_rng([seed, round_, _ROUND])
    return _Draws(rng.random(), rng.random(n_miners), rng.integers(n_miners, size=n_devices), rng)


def _corrupt(state: StateDict, kind: str, seed: int, round_: int, source: int) -> StateDict:
    """The model as handed out by a malfunctioning server/miner ``source`` in ``round_``."""
    gen = torch.Generator().manual_seed(_entropy(seed, round_, _CORRUPTION, source))
    return CORRUPTIONS[kind](state, gen)


@dataclass(frozen=True)
class _Handout:
    """What each device trains from in one round, and the round's malfunction statistics."""

    bases: list[StateDict]
    aggregate_onto: StateDict
    affected: int
    trained_on_corrupted: int
    malfunctions: int
    redownloads: int = 0
    stalled_slots: int = 0


def _vanilla(state: StateDict, d: _Draws, p: float, c: MalfunctionConfig, r: int) -> _Handout:
    broken = d.server < p
    handed = _corrupt(state, c.corruption, c.seed, r, c.miners) if broken else state
    n = c.devices if broken else 0
    return _Handout(
        bases=[handed] * c.devices,
        aggregate_onto=handed,
        affected=n,
        trained_on_corrupted=n,
        malfunctions=int(broken),
    )


def _miner_models(
    state: StateDict, broken: np.ndarray, c: MalfunctionConfig, r: int
) -> list[StateDict]:
    return [
        _corrupt(state, c.corruption, c.seed, r, m) if bad else state
        for m, bad in enumerate(broken)
    ]


def _unverified(state: StateDict, d: _Draws, p: float, c: MalfunctionConfig, r: int) -> _Handout:
    broken = d.miners < p
    models = _miner_models(state, broken, c, r)
    n = int(broken[d.association].sum())
    return _Handout(
        bases=[models[m] for m in d.association],
        aggregate_onto=state,
        affected=n,
        trained_on_corrupted=n,
        malfunctions=int(broken.sum()),
    )


def _verified(state: StateDict, d: _Draws, p: float, c: MalfunctionConfig, r: int) -> _Handout:
    on_chain = tensor_hash(state)
    broken = d.miners < p
    stalls = 0
    while broken.all():  # nobody can serve the model: wait a round, then try again
        stalls += 1
        broken = d.rng.random(c.miners) < p
    models = _miner_models(state, broken, c, r)
    healthy = np.flatnonzero(~broken)
    bases, redownloads = [], 0
    for m in d.association:
        received = models[m]
        if tensor_hash(received) != on_chain:
            redownloads += 1
            received = models[int(d.rng.choice(healthy))]
            if tensor_hash(received) != on_chain:
                raise AssertionError("a healthy miner served a model that fails verification")
        bases.append(received)
    return _Handout(
        bases=bases,
        aggregate_onto=state,
        affected=redownloads,
        trained_on_corrupted=0,
        malfunctions=int(broken.sum()),
        redownloads=redownloads,
        stalled_slots=stalls,
    )


HANDOUTS: dict[str, Callable[[StateDict, _Draws, float, MalfunctionConfig, int], _Handout]] = {
    "vanilla": _vanilla,
    "blockfl-unverified": _unverified,
    "blockfl": _verified,
}


def _train_round(
    experiment: Experiment, bases: Sequence[StateDict], c: MalfunctionConfig, r: int
) -> list[WeightedUpdate]:
    """Local SGD of every device from its base model; seeds depend on (seed, round, device)."""
    updates = []
    for k, (shard, base) in enumerate(zip(experiment.shards, bases, strict=True)):
        local = train_local(
            c.model,
            base,
            shard.x,
            shard.y,
            epochs=c.epochs,
            lr=c.lr,
            batch_size=c.batch_size,
            seed=_entropy(c.seed, r, _TRAINING, k),
            task=shard.task,
        )
        updates.append(WeightedUpdate(f"device{k:04d}", local.delta, local.n_samples))
    return updates


def run_system(
    system: str,
    p: float,
    experiment: Experiment,
    config: MalfunctionConfig,
    latencies: Sequence[float],
) -> list[RoundRecord]:
    """Train ``system`` for ``config.rounds`` rounds at malfunction probability ``p``.

    ``latencies`` is the round latency of every round without re-downloads (vanilla: constant;
    BlockFL: Monte Carlo draws); the verified system adds ``T_dn`` for a round with
    re-downloads and ``T_dn`` plus a fresh round-latency draw for every stalled slot.
    """
    handout = HANDOUTS[system]
    params = config.latency_params()
    t_dn = model.t_dn(params)
    test = experiment.test
    state, total, records = experiment.initial, 0.0, []
    for r in range(config.rounds):
        draws = _draws(config.seed, r, config.devices, config.miners)
        h = handout(state, draws, p, config, r)
        updates = _train_round(experiment, h.bases, config, r)
        state = FedAvg().aggregate(h.aggregate_onto, updates)
        latency = latencies[r] + (t_dn if h.redownloads else 0.0)
        if h.stalled_slots:
            waits = simulate(params, h.stalled_slots, _entropy(config.seed, r, _STALLS))
            latency += float(waits.samples["total"].sum()) + h.stalled_slots * t_dn
        total += latency
        metrics = evaluate(config.model, state, test.x, test.y, test.task)
        records.append(
            RoundRecord(
                system=system,
                p=p,
                round=r,
                accuracy=metrics.get("accuracy", math.nan),
                loss=metrics.get("loss", metrics.get("mse", math.nan)),
                latency=latency,
                cumulative_latency=total,
                affected_devices=h.affected,
                trained_on_corrupted=h.trained_on_corrupted,
                malfunctions=h.malfunctions,
                redownloads=h.redownloads,
                stalled_slots=h.stalled_slots,
            )
        )
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


def run_malfunction(config: MalfunctionConfig) -> MalfunctionResults:
    """Run the three systems at every ``p`` in ``config.p_values`` (on one torch thread)."""
    with _single_thread():
        return _run(config)


def _run(config: MalfunctionConfig) -> MalfunctionResults:
    experiment = build_experiment(config.experiment_config())
    params = config.latency_params()
    vanilla = vanilla_latency(params)
    blockfl = simulate(params, config.rounds, config.seed).samples["total"]
    latencies = {"vanilla": [vanilla] * config.rounds}
    latencies["blockfl-unverified"] = latencies["blockfl"] = [float(t) for t in blockfl]
    records = [
        record
        for p in config.p_values
        for system in SYSTEMS
        for record in run_system(system, p, experiment, config, latencies[system])
    ]
    return MalfunctionResults(
        config=config,
        records=records,
        vanilla_round_latency=vanilla,
        blockfl_expected_latency=model.expected_latency(params).total,
        t_dn=model.t_dn(params),
        task=experiment.test.task,
    )


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def summary(results: MalfunctionResults) -> dict[str, Any]:
    """JSON-ready summary: configuration, latency constants, final round of every run."""
    latency = dataclasses.asdict(results.config.latency_params())
    runs = []
    for p in results.config.p_values:
        for system in SYSTEMS:
            trajectory = results.trajectory(system, p)
            last = trajectory[-1]
            accuracy = [r.accuracy for r in trajectory]
            runs.append(
                {
                    "system": system,
                    "p": p,
                    "final_accuracy": _json_float(last.accuracy),
                    "mean_accuracy": _json_float(float(np.mean(accuracy))),
                    "final_loss": last.loss,
                    "mean_loss": float(np.mean([r.loss for r in trajectory])),
                    "total_latency": last.cumulative_latency,
                    "mean_affected_devices": float(
                        np.mean([r.affected_devices for r in trajectory])
                    ),
                    "rounds_with_malfunction": sum(r.malfunctions > 0 for r in trajectory),
                    "redownloads": sum(r.redownloads for r in trajectory),
                    "stalled_slots": sum(r.stalled_slots for r in trajectory),
                }
            )
    return {
        "config": dataclasses.asdict(results.config) | {"latency": latency},
        "task": results.task,
        "vanilla_round_latency": results.vanilla_round_latency,
        "blockfl_expected_round_latency": results.blockfl_expected_latency,
        "t_dn": results.t_dn,
        "runs": runs,
    }


def _metric(results: MalfunctionResults) -> tuple[str, str]:
    """Record field and axis label of the plotted quality metric."""
    if results.task == "classification":
        return "accuracy", "test accuracy"
    return "loss", "test MSE"


STYLES = {"vanilla": "-o", "blockfl-unverified": "--s", "blockfl": ":^"}


def _save(fig: Figure, path: Path) -> Path:
    for ax in fig.axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_accuracy(results: MalfunctionResults, path: Path) -> Path:
    """Test metric vs round and vs cumulative latency of the three systems at ``config.p``."""
    key, label = _metric(results)
    p = results.config.p
    fig = Figure(figsize=(11, 4))
    by_round, by_time = fig.subplots(1, 2)
    for system in SYSTEMS:
        t = results.trajectory(system, p)
        y = [getattr(r, key) for r in t]
        by_round.plot([r.round + 1 for r in t], y, STYLES[system], ms=4, label=system)
        by_time.plot([r.cumulative_latency for r in t], y, STYLES[system], ms=4, label=system)
    by_round.set(xlabel="round", ylabel=label, title=f"malfunction probability p = {p:g}")
    by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_time.set(xlabel="cumulative latency (s)", ylabel=label)
    return _save(fig, path)


def plot_latency(results: MalfunctionResults, path: Path) -> Path:
    """Per-round and cumulative latency vs round of the three systems at ``config.p``."""
    p = results.config.p
    fig = Figure(figsize=(11, 4))
    per_round, cumulative = fig.subplots(1, 2)
    for system in SYSTEMS:
        t = results.trajectory(system, p)
        rounds = [r.round + 1 for r in t]
        per_round.plot(rounds, [r.latency for r in t], STYLES[system], ms=4, label=system)
        cumulative.plot(
            rounds, [r.cumulative_latency for r in t], STYLES[system], ms=4, label=system
        )
    per_round.set(xlabel="round", ylabel="round latency (s)", title=f"p = {p:g}")
    cumulative.set(xlabel="round", ylabel="cumulative latency (s)")
    for ax in (per_round, cumulative):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_sweep(results: MalfunctionResults, path: Path) -> Path:
    """Final-round and round-averaged test metric vs malfunction probability."""
    key, label = _metric(results)
    ps = results.config.p_values
    fig = Figure(figsize=(11, 4))
    final, mean = fig.subplots(1, 2)
    for system in SYSTEMS:
        runs = [results.trajectory(system, p) for p in ps]
        style = dict(ms=5, label=system)
        final.plot(ps, [getattr(t[-1], key) for t in runs], STYLES[system], **style)
        mean.plot(
            ps, [np.mean([getattr(r, key) for r in t]) for t in runs], STYLES[system], **style
        )
    final.set(xlabel="malfunction probability p", ylabel=f"final {label}")
    final.set_title(f"after round {results.config.rounds}")
    mean.set(xlabel="malfunction probability p", ylabel=f"{label}, mean over rounds")
    return _save(fig, path)


def write_outputs(results: MalfunctionResults, out_dir: Path) -> list[Path]:
    """Write ``malfunction_rounds.csv``, ``malfunction_summary.json`` and the three PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds_csv = out_dir / "malfunction_rounds.csv"
    with open(rounds_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(RoundRecord)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in results.records)
    summary_json = out_dir / "malfunction_summary.json"
    summary_json.write_text(json.dumps(summary(results), indent=2) + "\n")
    return [
        rounds_csv,
        summary_json,
        plot_accuracy(results, out_dir / "malfunction_accuracy.png"),
        plot_latency(results, out_dir / "malfunction_latency.png"),
        plot_sweep(results, out_dir / "malfunction_accuracy_vs_p.png"),
    ]
