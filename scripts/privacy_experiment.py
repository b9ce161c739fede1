"""The privacy-utility curve of on-device DP, checked with a membership-inference attack.

For each number of devices, noise multiplier and seed, a `simulate` run (digits, MLP, the local
ledger) with `[privacy] mode = "client"`, or `--mode dp_sgd` (Opacus on each device; its ε is
per sample), and one without privacy: final test accuracy, the epsilon each device spent
(Opacus RDP, at delta; the worst device), and a loss-threshold membership-inference attack
(Yeom et al.: a lower loss means "member") against

- the final global model: members are the devices' training samples, non-members the held-out
  test split;
- each device's update of the last round as released (noised) and gossiped: the model
  `base + update` on that device's own samples against as many test samples, pooled over
  devices.

Each attack reports its ROC AUC and its true-positive rate at 1% false positives. One CSV row
per run is written as it finishes (`privacy.csv`; a rerun skips the rows it has), then
`privacy_utility.png` and `privacy_attack.png` (dp_sgd: the same names with `_dp_sgd`).

    python scripts/privacy_experiment.py --devices 10,100 --seeds 0,1 --out docs/figures/privacy
    python scripts/privacy_experiment.py --mode dp_sgd --devices 10 --noise 0.5,0.7,1,1.5,2 \
        --seeds 0,1 --out docs/figures/privacy
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

from blockfl.config import Config, PrivacyConfig, load_config
from blockfl.models import model_for_state
from blockfl.sim.runner import run_experiment
from blockfl.tensors import StateDict, decode

#: the output files' suffix of each mode
SUFFIX = {"client": "", "dp_sgd": "_dp_sgd"}
FIELDS = ["devices", "noise_multiplier", "seed", "epsilon", "accuracy", "global_auc",
          "global_tpr_at_1fpr", "update_auc", "update_tpr_at_1fpr"]


def losses(state: StateDict, input_shape: tuple[int, ...], x: torch.Tensor,
           y: torch.Tensor) -> np.ndarray:
    """Per-sample cross-entropy of the model `state` (the MLP of the digits task)."""
    model = model_for_state("mlp", input_shape, state).eval()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y, reduction="none").numpy()


def attack(member_loss: np.ndarray, other_loss: np.ndarray) -> tuple[float, float]:
    """Loss-threshold attack: (ROC AUC, TPR at 1% FPR) of the score -loss."""
    labels = np.r_[np.ones(len(member_loss)), np.zeros(len(other_loss))]
    scores = -np.r_[member_loss, other_loss]
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(roc_auc_score(labels, scores)), float(np.interp(0.01, fpr, tpr))


def experiment(base: Config, devices: int, noise: float | None, seed: int,
               out: Path, mode: str = "client") -> dict[str, float]:
    """One run: noise None means privacy off."""
    privacy = PrivacyConfig() if noise is None else replace(base.privacy, mode=mode,
                                                           noise_multiplier=noise)
    config = replace(base, privacy=privacy,
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
            "update_tpr_at_1fpr": update_tpr}


def plot(rows: list[dict[str, float]], out: Path, mode: str = "client") -> None:
    """Accuracy against epsilon, and the attacks' AUC against epsilon, per device count."""
    from matplotlib.figure import Figure

    suffix, what = SUFFIX[mode], {"client": "client DP", "dp_sgd": "DP-SGD"}[mode]
    for name, metric, label in ((f"privacy_utility{suffix}.png", "accuracy",
                                 "final test accuracy"),
                                (f"privacy_attack{suffix}.png", "global_auc",
                                 "membership-inference AUC")):
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
                            label=f"{devices} devices, {what}")
            off = [r[metric] for r in mine if r["noise_multiplier"] < 0]
            if off:
                ax.axhline(np.mean(off), linestyle="--", linewidth=1,
                           label=f"{devices} devices, no DP")
            if metric == "global_auc":
                upd = [(np.mean([r["epsilon"] for r in mine if r["noise_multiplier"] == n]),
                        np.mean([r["update_auc"] for r in mine if r["noise_multiplier"] == n]))
                       for n in private]
                if upd:
                    ax.plot(*zip(*upd, strict=True), marker="x", linestyle=":",
                            label=f"{devices} devices, attack on one update")
                off_update = [r["update_auc"] for r in mine if r["noise_multiplier"] < 0]
                if off_update:
                    ax.axhline(np.mean(off_update), linestyle=":", linewidth=1, color="grey",
                               label=f"{devices} devices, attack on one update, no DP")
        ax.set_xscale("log")
        ax.set_xlabel("epsilon per device over the run (delta 1e-5, Opacus RDP)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        fig.savefig(out / name, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="10,100")
    parser.add_argument("--mode", choices=list(SUFFIX), default="client",
                        help="[privacy] mode of the private runs")
    parser.add_argument("--noise", default="0.01,0.03,0.1,0.3,1",
                        help="noise multipliers (a run without DP is added)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("runs/privacy"))
    args = parser.parse_args()
    base = load_config("demo")
    base = replace(base, run=replace(base.run, rounds=args.rounds),
                   chain=replace(base.chain, ledger="local"),
                   privacy=replace(base.privacy, clip=args.clip),
                   verification=replace(base.verification, norm_bound=1e9))
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
            row = experiment(base, devices, noise, seed, Path(runs), args.mode)
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
