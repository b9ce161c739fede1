"""The privacy-utility curve of on-device DP, checked with membership-inference attacks.

For each number of devices, noise multiplier and seed, a `simulate` run (digits, MLP, the local
ledger) with `[privacy] mode = "client"`, or `--mode dp_sgd` (Opacus on each device; its ε is
per sample), and one without privacy: final test accuracy, the epsilon each device spent
(Opacus RDP, at delta; the worst device), and two membership-inference attacks. The
`--training-*`, `--privacy-*` and `--data-*` flags of `blockfl simulate` set the private runs
(e.g. DP-SGD's tuned training and noise per device, below); the run without privacy and LiRA's
reference models always train with the demo's `[training]`, which trains well unclipped:

- against the final global model, where members are the devices' training samples and
  non-members the held-out test split: a loss threshold (Yeom et al.: a lower loss means
  "member"), and the offline likelihood-ratio attack of Carlini et al. (LiRA, `lira`: 64
  reference models trained as the target was, by FedAvg over as many devices, each on a random
  share of the candidates as large as the target's training set), with a bootstrap 95% lower
  bound on its AUC;
- against each device's update of the last round as released (noised) and gossiped, by loss
  threshold: the model `base + update` on that device's own samples against as many test
  samples, pooled over devices.

Each attack reports its ROC AUC and its true-positive rate at 1% false positives. One CSV row
per run is written as it finishes (`privacy.csv`; a rerun skips the rows it has), then
`privacy_utility.png` and `privacy_attack.png` (dp_sgd: the same names with `_dp_sgd`).

    python scripts/privacy_experiment.py --devices 10,100 --seeds 0,1,2 --out docs/figures/privacy
    python scripts/privacy_experiment.py --mode dp_sgd --devices 10 --noise 0.5,0.7,1,1.5,2 \
        --seeds 0,1,2 --out docs/figures/privacy
    python scripts/privacy_experiment.py --mode dp_sgd --devices 10 --noise 1 --rounds 20 \
        --seeds 0,1,2,3,4 --training-epochs 1 --training-batch-size 64 --training-lr 4.8 \
        --training-lr-decay 0.93 --privacy-budget-rounds 20 --privacy-epsilon-budget 8 \
        --out docs/figures/privacy/per-device
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from blockfl.aggregation import FedAvg, WeightedUpdate
from blockfl.config import (
    Config,
    PrivacyConfig,
    TrainingConfig,
    add_config_flags,
    config_from_args,
    load_config,
)
from blockfl.dataset import Dataset
from blockfl.devices.data import partition_iid
from blockfl.devices.training_batched import train_many
from blockfl.models import model_for_state
from blockfl.sim.runner import run_experiment
from blockfl.task import TrainingJob
from blockfl.tensors import StateDict, decode

#: the output files' suffix of each mode
SUFFIX = {"client": "", "dp_sgd": "_dp_sgd"}
FIELDS = ["devices", "noise_multiplier", "seed", "epsilon", "accuracy", "global_auc",
          "global_tpr_at_1fpr", "update_auc", "update_tpr_at_1fpr", "global_lira_auc",
          "global_lira_auc_low", "global_lira_tpr_at_1fpr"]
#: LiRA's reference models per run
SHADOWS = 64
#: bootstrap resamples for the attack's AUC interval
BOOTSTRAP = 500


def _logits(state: StateDict, input_shape: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    """The outputs of the model `state` (the MLP of the digits task) on `x`."""
    model = model_for_state("mlp", input_shape, state).eval()
    with torch.no_grad():
        return model(x)


def losses(state: StateDict, input_shape: tuple[int, ...], x: torch.Tensor,
           y: torch.Tensor) -> np.ndarray:
    """Per-sample cross-entropy of the model `state`."""
    return torch.nn.functional.cross_entropy(_logits(state, input_shape, x), y,
                                             reduction="none").numpy()


def _auc_and_tpr(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(ROC AUC, TPR at 1% FPR) of `scores` (higher: "member") against the truth `labels`."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(roc_auc_score(labels, scores)), float(np.interp(0.01, fpr, tpr))


def attack(member_loss: np.ndarray, other_loss: np.ndarray) -> tuple[float, float]:
    """Loss-threshold attack: (ROC AUC, TPR at 1% FPR) of the score -loss."""
    return _auc_and_tpr(np.r_[np.ones(len(member_loss)), np.zeros(len(other_loss))],
                        -np.r_[member_loss, other_loss])


def logit_confidence(state: StateDict, input_shape: tuple[int, ...], x: torch.Tensor,
                     y: torch.Tensor) -> np.ndarray:
    """LiRA's statistic of each sample: log(p_y / (1 - p_y)) of model `state`, stably from
    the logits (the true class's logit minus the log-sum-exp of the others)."""
    logits = _logits(state, input_shape, x).double()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -math.inf).logsumexp(1)
    return (true - others).numpy()


def federated_reference(initial: StateDict, data: Dataset, devices: int, rounds: int,
                        training: TrainingConfig, seed: int) -> StateDict:
    """A reference model trained as the target was: `rounds` of FedAvg from `initial` over
    `devices` IID shards of `data` (skewed sizes, as the task splits), no privacy."""
    shards = [data.subset(part) for part in partition_iid(len(data), devices, seed)]
    state = initial
    for r in range(1, rounds + 1):
        jobs = [TrainingJob(shard, seed * 100_003 + r * 1009 + k) for k, shard in enumerate(shards)]
        updates = train_many("mlp", state, jobs, training.at_round(r), task="classification")
        state = FedAvg().aggregate(state, [WeightedUpdate(f"{k:040x}", u.delta, u.n_samples)
                                           for k, u in enumerate(updates)])
    return state


def lira(target: StateDict, initial: StateDict, pool: Dataset, member: np.ndarray,
         training: TrainingConfig, devices: int, rounds: int, shadows: int,
         seed: int) -> tuple[float, float, float]:
    """The offline likelihood-ratio attack of Carlini et al. (LiRA, fixed variance) on the
    target model: `shadows` reference models, each trained as the target was
    (`federated_reference`) on a seeded random share of the candidates `pool` (members and
    non-members alike: the attacker's data from the same distribution), the share of the
    target's training set in the pool (so each reference trains on as many samples as the
    target). A candidate's score is how far the target's logit confidence lies above the mean
    of the reference models that did not train on it, in units of their pooled spread.
    (ROC AUC, its bootstrap 95% lower bound, TPR at 1% FPR) against the truth `member`."""
    rng = np.random.default_rng(seed)
    inside = rng.random((shadows, len(pool))) < member.mean()
    shape = pool.input_shape
    reference = np.stack([
        logit_confidence(federated_reference(initial, pool.subset(np.flatnonzero(row)),
                                             devices, rounds, training, seed * 1000 + k),
                         shape, pool.x, pool.y)
        for k, row in enumerate(inside)])
    out = np.where(inside, np.nan, reference)
    mean = np.nanmean(out, axis=0)
    score = (logit_confidence(target, shape, pool.x, pool.y) - mean) / np.nanstd(out - mean)
    labels = member.astype(float)
    resampled = [rng.integers(0, len(labels), len(labels)) for _ in range(BOOTSTRAP)]
    low = float(np.percentile([roc_auc_score(labels[i], score[i]) for i in resampled], 2.5))
    auc, tpr = _auc_and_tpr(labels, score)
    return auc, low, tpr


def experiment(base: Config, devices: int, noise: float | None, seed: int,
               out: Path, mode: str = "client",
               plain: TrainingConfig | None = None) -> dict[str, float]:
    """One run: noise None means privacy off, trained with `plain` (None: `base.training`),
    as LiRA's reference models are."""
    plain = plain or base.training
    private = noise is not None
    privacy = replace(base.privacy, mode=mode, noise_multiplier=noise) if private else \
        PrivacyConfig()
    config = replace(base, privacy=privacy, training=base.training if private else plain,
                     network=replace(base.network, devices=devices),
                     run=replace(base.run, seed=seed, out_dir=str(out), name=""))
    released: dict[str, tuple[StateDict, StateDict]] = {}
    last = config.run.rounds

    def capture(round_: int, miners: list) -> None:
        if round_ != last:
            return
        base_state = miners[0].base_state
        for miner in miners:
            for submission in miner.pending_submissions():
                delta = decode(submission.payload, max_bytes=1 << 30)
                released[submission.device] = (base_state, delta)

    summary = run_experiment(config, inject=capture)
    sim = summary.simulation
    shards = {d.address: d.shard for d in sim.devices}
    test = sim.experiment.test
    shape = test.input_shape
    final = sim.miners[0].base_state
    members = torch.cat([s.x for s in shards.values()]), torch.cat([s.y for s in shards.values()])
    global_auc, global_tpr = attack(losses(final, shape, *members),
                                    losses(final, shape, test.x, test.y))
    pool = Dataset(torch.cat([members[0], test.x]), torch.cat([members[1], test.y]), shape,
                   test.n_outputs, test.task)
    is_member = np.r_[np.ones(len(members[1]), bool), np.zeros(len(test.y), bool)]
    lira_auc, lira_low, lira_tpr = lira(final, sim.experiment.initial, pool, is_member,
                                        plain, devices, last, SHADOWS, seed)
    rng = np.random.default_rng(seed)
    member_losses, other_losses = [], []
    for address, (base_state, delta) in sorted(released.items()):
        shard = shards[address]
        state = {k: base_state[k] + delta[k] for k in base_state}
        member_losses.append(losses(state, shape, shard.x, shard.y))
        pick = rng.choice(len(test.y), size=min(len(shard.y), len(test.y)), replace=False)
        other_losses.append(losses(state, shape, test.x[pick], test.y[pick]))
    update_auc, update_tpr = attack(np.concatenate(member_losses), np.concatenate(other_losses))
    spent = max((d["epsilon"] for d in summary.report.get("privacy", {}).get("devices", [])),
                default=0.0)
    return {"devices": devices, "noise_multiplier": -1.0 if noise is None else noise,
            "seed": seed, "epsilon": math.inf if noise == 0 else spent,
            "accuracy": summary.rounds[-1].metrics["accuracy"], "global_auc": global_auc,
            "global_tpr_at_1fpr": global_tpr, "update_auc": update_auc,
            "update_tpr_at_1fpr": update_tpr, "global_lira_auc": lira_auc,
            "global_lira_auc_low": lira_low, "global_lira_tpr_at_1fpr": lira_tpr}


def plot(rows: list[dict[str, float]], out: Path, mode: str = "client") -> None:
    """Accuracy against epsilon, and the attacks' AUC against epsilon, per device count."""
    from matplotlib.figure import Figure

    suffix, what = SUFFIX[mode], {"client": "client DP", "dp_sgd": "DP-SGD"}[mode]
    for name, metric, label in ((f"privacy_utility{suffix}.png", "accuracy",
                                 "final test accuracy"),
                                (f"privacy_attack{suffix}.png", "global_lira_auc",
                                 "membership-inference AUC (LiRA on the global model)")):
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        for devices in sorted({int(r["devices"]) for r in rows}):
            mine = [r for r in rows if int(r["devices"]) == devices]
            private = sorted({r["noise_multiplier"] for r in mine if r["noise_multiplier"] > 0})
            points = []
            for noise in private:
                cell = [r for r in mine if r["noise_multiplier"] == noise]
                points.append((np.mean([r["epsilon"] for r in cell]),
                               np.mean([r[metric] for r in cell]),
                               np.std([r[metric] for r in cell])))
            if points:
                xs, ys, sd = zip(*points, strict=True)
                ax.errorbar(xs, ys, yerr=sd, marker="o", capsize=3,
                            label=f"{devices} devices, {what}"
                            + (", LiRA on the global model" if metric != "accuracy" else ""))
            off = [r[metric] for r in mine if r["noise_multiplier"] < 0]
            if off:
                ax.axhline(np.mean(off), linestyle="--", linewidth=1,
                           label=f"{devices} devices, no DP")
            if metric == "global_lira_auc":
                upd = [(np.mean([r["epsilon"] for r in mine if r["noise_multiplier"] == n]),
                        np.mean([r["update_auc"] for r in mine if r["noise_multiplier"] == n]))
                       for n in private]
                if upd:
                    ax.plot(*zip(*upd, strict=True), marker="x", linestyle=":",
                            label=f"{devices} devices, loss attack on one update")
                off_update = [r["update_auc"] for r in mine if r["noise_multiplier"] < 0]
                if off_update:
                    ax.axhline(np.mean(off_update), linestyle=":", linewidth=1, color="grey",
                               label=f"{devices} devices, attack on one update, no DP")
        ax.set_xscale("log")
        ax.set_xlabel("epsilon per device over the run (delta 1e-5, Opacus RDP)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        fig.savefig(out / name, dpi=120, bbox_inches="tight")


def settings(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config, TrainingConfig]:
    """The command line: its arguments, the private runs' config (the demo's, with the
    `--data-*`, `--training-*` and `--privacy-*` flags, `--rounds` and the local ledger) and
    the training of the run without privacy and of LiRA's references (the demo's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="10,100")
    parser.add_argument("--mode", choices=list(SUFFIX), default="client",
                        help="[privacy] mode of the private runs")
    parser.add_argument("--noise", default="0.01,0.03,0.1,0.3,1",
                        help="noise multipliers (a run without DP is added)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/privacy"))
    add_config_flags(parser, default="demo", sections=("data", "training", "privacy"))
    args = parser.parse_args(argv)
    base = config_from_args(args)
    base = replace(base, run=replace(base.run, rounds=args.rounds),
                   chain=replace(base.chain, ledger="local"),
                   verification=replace(base.verification, norm_bound=1e9))
    return args, base, load_config("demo").training


def main() -> None:
    args, base, plain = settings()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"privacy{SUFFIX[args.mode]}.csv"
    rows = []
    if path.exists():
        with path.open() as f:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    done = {(int(r["devices"]), r["noise_multiplier"], int(r["seed"])) for r in rows}
    cells = [(d, n, s) for d in map(int, args.devices.split(","))
             for n in [None, *map(float, args.noise.split(","))]
             for s in map(int, args.seeds.split(","))]
    with tempfile.TemporaryDirectory() as runs:
        for i, (devices, noise, seed) in enumerate(cells, 1):
            if (devices, -1.0 if noise is None else noise, seed) in done:
                continue
            row = experiment(base, devices, noise, seed, Path(runs), args.mode, plain)
            rows.append(row)
            new = not path.exists()
            with path.open("a", newline="") as f:
                writer = csv.DictWriter(f, FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(f"[{i}/{len(cells)}] " + " ".join(f"{k}={v:.4g}" for k, v in row.items()),
                  flush=True)
    plot(rows, args.out, args.mode)
    print(f"wrote {path} and its figures in {args.out}")


if __name__ == "__main__":
    main()
