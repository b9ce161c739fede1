"""How much of a DP-SGD update is signal: why rules that judge updates one by one fail with DP.

For the 30% sign-flip experiment (`blockfl attack`'s packaged `attack` config: digits, the MLP,
10 devices, FedAvg so that every update is in every block), with and without DP-SGD on every
device, each update of rounds 1, 4 and 8 is compared with the geometric median of the *other*
updates of its round (leaving itself out: an update's own noise is a tenth of an average of
ten, which gives every update a cosine of about 1/sqrt(10) with the median of all). Printed
per round: the mean cosine of the honest updates and of the attackers', and 1/sqrt(d), the
spread of the cosine of two unrelated d-dimensional directions. Where the honest and the
attackers' means differ by less than that spread, no rule that looks at one update at a time
can tell them apart.

Then the same cosines over rounds, as a rule with a history of each device could read them:
per device, the mean of its cosines over rounds 1 to r (every round of the run is captured),
printed at r = 1, 2, 4 and 8 as the lowest honest device's mean against the highest
attacker's. Where the lowest honest mean is above the highest attacker's, a threshold between
them would unpay every attacker and no honest device.

    python scripts/dp_update_signal.py --seeds 0,1,2 --noise 1.0
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from blockfl.aggregation import WeightedUpdate
from blockfl.aggregation.centres import geometric_median
from blockfl.config import load_config
from blockfl.sim.runner import run_experiment
from blockfl.tensors import StateDict, decode

ROUNDS = (1, 4, 8)  # the rounds printed one by one
HISTORY = (1, 2, 4, 8)  # the rounds at which each device's mean cosine so far is printed


def _flat(update: StateDict, names: list[str]) -> torch.Tensor:
    return torch.cat([update[k].double().flatten() for k in names])


def leave_one_out_cosines(base: StateDict, updates: list[StateDict]) -> list[float]:
    """Each update's cosine with the geometric median of the others."""
    names = list(base)
    zero = {k: torch.zeros_like(v) for k, v in base.items()}
    weighted = [WeightedUpdate(f"{i:040x}", u, 1) for i, u in enumerate(updates)]
    out = []
    for i, update in enumerate(updates):
        others = weighted[:i] + weighted[i + 1:]
        centre = _flat(geometric_median(zero, others, 8, [1.0] * len(others)), names)
        mine = _flat(update, names)
        out.append(float(mine @ centre / (mine.norm() * centre.norm())))
    return out


def run(seed: int, noise: float) -> tuple[dict[int, tuple[float, float, float]],
                                          dict[int, tuple[float, float]]]:
    """Per round of `ROUNDS`: (honest mean cosine, attackers' mean cosine, 1/sqrt(d)); per
    round r of `HISTORY`: (the lowest honest device's mean cosine over rounds 1..r, the
    highest attacker's)."""
    config = load_config("attack")
    config = replace(
        config, run=replace(config.run, seed=seed),
        attack=replace(config.attack, attackers=0.3, behaviour="sign_flip"),
        aggregation=replace(config.aggregation, rule="fedavg"),
        privacy=replace(config.privacy, mode="dp_sgd" if noise > 0 else "off",
                        noise_multiplier=noise, epsilon_budget=0.0))
    caught: dict[int, tuple[StateDict, list[tuple[str, StateDict]]]] = {}

    def capture(round_: int, miners: list) -> None:
        if round_ <= max(HISTORY):
            caught[round_] = (miners[0].base_state,
                              [(s.device, decode(s.payload, max_bytes=1 << 30))
                               for s in miners[0].pending_submissions()])

    with tempfile.TemporaryDirectory() as out:
        summary = run_experiment(replace(config, run=replace(config.run, out_dir=out, name="")),
                                 inject=capture)
    bad = {d.address for d in summary.simulation.devices if d.behaviour.name != "honest"}
    result, history, seen = {}, {}, {}
    for round_, (base, updates) in sorted(caught.items()):
        cosines = leave_one_out_cosines(base, [u for _, u in updates])
        for (device, _), cosine in zip(updates, cosines, strict=True):
            seen.setdefault(device, []).append(cosine)
        if round_ in HISTORY:
            means = {device: float(np.mean(c)) for device, c in seen.items()}
            history[round_] = (min(m for d, m in means.items() if d not in bad),
                               max(m for d, m in means.items() if d in bad))
        if round_ not in ROUNDS:
            continue
        attacker = [device in bad for device, _ in updates]
        d = sum(v.numel() for v in base.values())
        pairs = list(zip(cosines, attacker, strict=True))
        result[round_] = (float(np.mean([c for c, a in pairs if not a])),
                          float(np.mean([c for c, a in pairs if a])), d ** -0.5)
    return result, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="DP-SGD's noise multiplier (the runs without DP are added)")
    args = parser.parse_args()
    print("seed  DP     round  honest   attackers  1/sqrt(d)")
    histories = []
    for seed in map(int, args.seeds.split(",")):
        for noise in (0.0, args.noise):
            label = f"{noise:g}" if noise else "off"
            per_round, history = run(seed, noise)
            histories.append((seed, label, history))
            for round_, (honest, attackers, floor) in per_round.items():
                print(f"{seed:>4}  {label:<5}  {round_:>5}  {honest:+.4f}  {attackers:+.4f}"
                      f"    {floor:.4f}", flush=True)
    print("\neach device's mean cosine over rounds 1..r: the lowest honest, the highest attacker")
    print("seed  DP    " + "".join(f"  r={r}: honest  attacker" for r in HISTORY))
    for seed, label, history in histories:
        print(f"{seed:>4}  {label:<5}" + "".join(f"  {history[r][0]:+14.4f}  {history[r][1]:+.4f}"
                                               for r in HISTORY))


if __name__ == "__main__":
    main()
