"""The attack experiment: attacker fraction x attack x aggregation rule x seed, each a whole
BlockFL run on a real ledger, reporting accuracy and the share of data rewards attackers got.

Every run is a `Simulation` with `[attack]` and `[aggregation]` set; attackers are real devices
with a behaviour (`blockfl.devices.behaviours`). Writes `attack.csv` (one row per run, appended
as runs finish), `attack_<attack>.png` per attack (final accuracy against the attacker fraction,
one line per rule, the mean over seeds) and `summary.json` / the table of `summary_rows`.
"""

from __future__ import annotations

import csv
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from blockfl.config import AGGREGATION_RULES, Config
from blockfl.devices.behaviours import BEHAVIOURS
from blockfl.signing import address_of
from blockfl.sim.engine import Simulation

ATTACKS = tuple(b for b in BEHAVIOURS if b != "honest")
POISONING = ("sign_flip", "scale_x10", "gaussian_noise", "label_flip")


@dataclass(frozen=True)
class AttackRun:
    """The outcome of one run."""

    attack: str
    rule: str
    fraction: float
    seed: int
    accuracy: float
    loss: float
    attacker_reward_share: float  # of all data rewards, the share paid to attackers (Sybil:
    # to its copies' keys)
    attacker_updates_paid: int
    excluded: int  # updates the rule kept out of blocks, over all rounds
    rejected: int  # updates miners refused at verification, over all rounds
    attacker_data_share: float = 0.0  # the attackers' share of the devices' real samples
    honest_paid_min: float = 1.0  # of the honest devices, the least fraction of rounds paid
    honest_paid_mean: float = 1.0  # their mean fraction of rounds paid
    honest_duplicates: int = 0  # honest updates excluded as near-duplicates (false Sybils)


def run_config(base: Config, attack: str, rule: str, fraction: float, seed: int) -> Config:
    """`base` with the attack, the rule and the seed of one run."""
    return replace(
        base,
        attack=replace(base.attack, behaviour=attack, attackers=fraction),
        aggregation=replace(base.aggregation, rule=rule),
        run=replace(base.run, seed=seed),
    )


def attacker_addresses(sim: Simulation) -> set[str]:
    """The addresses whose rewards are unearned: every attacker's keys, except that a Sybil
    attacker's own update is honest work and only its copies' keys count."""
    out = set()
    for device in sim.devices:
        if not device.behaviour.honest:
            keys = device.signing_keys()[1 if device.behaviour.own_update_honest else 0:]
            out |= {address_of(key) for key in keys}
    return out


def run_one(config: Config, work_dir: Path, sim: Simulation | None = None) -> AttackRun:
    """One whole run on a fresh ledger in `work_dir` (of `sim`, when given: one built on the
    config with its own experiment), ending early once every device spent its privacy budget
    (honest devices' rounds paid count the rounds run)."""
    sim = sim or Simulation(config, work_dir)
    results = []
    try:
        for _ in range(config.run.rounds):
            if results and not any(sim.within_budget()):
                break  # every device spent its privacy budget: the run ends, as `simulate`'s
            results.append(sim.run_round())
    finally:
        sim.close()  # a Ray trainer's actors would hold their CPUs into the next run
    bad = attacker_addresses(sim)
    paid = [u for r in results for u in sim.ledger.accepted_updates(r.round)]
    total = sum(u.reward for u in paid)
    to_attackers = sum(u.reward for u in paid if u.device in bad)
    honest = [d for d in sim.devices if d.behaviour.honest]
    paid_rounds = [sum(u.device == d.address for u in paid) / len(results) for d in honest]
    samples = {d.address: len(d.shard.y) for d in sim.devices}
    final = results[-1].metrics
    return AttackRun(
        attack=config.attack.behaviour, rule=config.aggregation.rule,
        fraction=config.attack.attackers, seed=config.run.seed,
        accuracy=final.get("accuracy", float("nan")), loss=final.get("loss", float("nan")),
        attacker_reward_share=to_attackers / total if total else 0.0,
        attacker_updates_paid=sum(u.device in bad for u in paid),
        excluded=sum(len(r.excluded) for r in results),
        rejected=sum(r.rejected for r in results),
        attacker_data_share=sum(n for a, n in samples.items() if a in bad) / sum(samples.values()),
        honest_paid_min=min(paid_rounds, default=1.0),
        honest_paid_mean=statistics.fmean(paid_rounds) if paid_rounds else 1.0,
        honest_duplicates=sum("near-duplicate" in why for r in results
                              for d, why in r.excluded.items() if d in {h.address for h in honest}),
    )


def sweep(
    base: Config,
    attacks: Sequence[str],
    rules: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    csv_path: Path,
    on_run: Callable[[AttackRun], None] | None = None,
) -> list[AttackRun]:
    """Every (attack, rule, fraction, seed) run; a fraction of 0 is run once per rule and
    seed and shared by every attack (no device attacks). Rows are appended to `csv_path`."""
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}: {', '.join(ATTACKS)}")
    for rule in rules:
        if rule not in AGGREGATION_RULES:
            raise ValueError(f"unknown rule {rule!r}: {', '.join(AGGREGATION_RULES)}")
    runs: list[AttackRun] = []
    with csv_path.open("w", newline="") as handle, tempfile.TemporaryDirectory() as tmp:
        writer = csv.DictWriter(handle, [f.name for f in fields(AttackRun)])
        writer.writeheader()
        plan = [(a, r, f, s) for r in rules for s in seeds for f in fractions
                for a in (attacks[:1] if f == 0 else attacks)]
        for i, (attack, rule, fraction, seed) in enumerate(plan):
            work = Path(tmp) / str(i)
            work.mkdir()
            run = run_one(run_config(base, attack, rule, fraction, seed), work)
            shared = [replace(run, attack=a) for a in attacks] if fraction == 0 else [run]
            for row in shared:
                writer.writerow(asdict(row))
                runs.append(row)
            handle.flush()
            if on_run:
                on_run(run)
    return runs


def read_csv(path: Path) -> list[AttackRun]:
    """The runs of an `attack.csv`."""
    kinds = {f.name: f.type for f in fields(AttackRun)}
    cast = {"str": str, "float": float, "int": int}
    with path.open() as handle:
        return [AttackRun(**{k: cast[str(kinds[k])](v) for k, v in row.items()})
                for row in csv.DictReader(handle)]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def _sd(values: Iterable[float]) -> float:
    """The sample standard deviation (0.0 for fewer than two values)."""
    values = list(values)
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summary_rows(runs: Sequence[AttackRun], fraction: float) -> list[dict[str, object]]:
    """Per attack and rule at `fraction`: mean accuracy over seeds and its spread (sample
    standard deviation), the clean accuracy of the same rule (fraction 0), the gap in points
    to clean FedAvg (or to the rule's own clean runs without FedAvg's; both None when no run
    has fraction 0), the attackers' reward share; the best rule per attack is the most
    accurate one (`best`)."""
    rows: list[dict[str, object]] = []
    for attack in dict.fromkeys(r.attack for r in runs):
        block = []
        for rule in dict.fromkeys(r.rule for r in runs):
            at = [r for r in runs if (r.attack, r.rule) == (attack, rule)
                  and abs(r.fraction - fraction) < 1e-9]
            clean = [r for r in runs if (r.attack, r.rule) == (attack, rule) and r.fraction == 0]
            clean_fedavg = [r for r in runs if (r.attack, r.rule) == (attack, "fedavg")
                            and r.fraction == 0]
            if not at:
                continue
            accuracy = _mean(r.accuracy for r in at)
            reference = clean_fedavg or clean
            block.append({
                "attack": attack, "rule": rule, "fraction": fraction,
                "seeds": len(at),
                "accuracy": accuracy,
                "accuracy_sd": _sd(r.accuracy for r in at),
                "clean_accuracy": _mean(r.accuracy for r in clean) if clean else None,
                "gap_points": (100 * (_mean(r.accuracy for r in reference) - accuracy)
                               if reference else None),
                "attacker_reward_share": _mean(r.attacker_reward_share for r in at),
                "excluded": _mean(r.excluded for r in at),
                "rejected": _mean(r.rejected for r in at),
                "best": False,
            })
        if block:
            max(block, key=lambda row: float(row["accuracy"]))["best"] = True  # type: ignore[arg-type]
        rows += block
    return rows


def plot(runs: Sequence[AttackRun], out_dir: Path) -> list[Path]:
    """One PNG per attack: mean final accuracy against attacker fraction, a line per rule, with
    error bars of one standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for attack in dict.fromkeys(r.attack for r in runs):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for rule in dict.fromkeys(r.rule for r in runs):
            mine = [r for r in runs if (r.attack, r.rule) == (attack, rule)]
            xs = sorted({r.fraction for r in mine})
            at = [[r.accuracy for r in mine if r.fraction == x] for x in xs]
            ax.errorbar([100 * x for x in xs], [_mean(a) for a in at], yerr=[_sd(a) for a in at],
                        marker="o", capsize=3, label=rule)
        ax.set_xlabel("attackers (% of devices)")
        ax.set_ylabel("final test accuracy")
        ax.set_title(f"{attack}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"attack_{attack}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
