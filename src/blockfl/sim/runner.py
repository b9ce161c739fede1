"""Run a whole experiment: rounds, the run directory, and the checks a user expects at the end."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blockfl import privacy
from blockfl.chain.ledger import Ledger
from blockfl.config import Config, PrivacyConfig
from blockfl.hashing import to_hex
from blockfl.protocol import ProtocolSpec
from blockfl.sim.engine import Injector, RoundResult, Simulation
from blockfl.sim.report import (
    RewardRow,
    make_run_dir,
    plot_metric,
    rewards_table,
    write_metrics,
    write_report,
)
from blockfl.sim.setup import build_experiment
from blockfl.tensors import tensor_hash


@dataclass
class RunSummary:
    """The outcome of a run."""

    run_dir: Path
    rounds: list[RoundResult]
    rewards: list[RewardRow]
    chain_model_hash: bytes
    hashes_agree: bool
    rewards_match: bool
    plot: Path
    simulation: Simulation
    report: dict[str, Any]


def run_experiment(
    config: Config,
    on_round: Callable[[RoundResult], None] | None = None,
    ledger: Ledger | None = None,
    inject: Injector | None = None,
    run_dir: Path | None = None,
) -> RunSummary:
    """Run `config.run.rounds` rounds and write the run directory.

    The data, model and protocol fields are checked before a run directory is made, and one
    made here is removed again when setting up the run fails (an unreachable node, no Ray)."""
    experiment = build_experiment(config)
    ProtocolSpec.from_config(config, experiment.genesis)  # refuses out-of-range fields
    made = run_dir is None
    run_dir = run_dir or make_run_dir(config)
    try:
        sim = Simulation(config, run_dir, ledger, experiment)
    except BaseException:
        if made:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    results = []
    stopped = ""
    try:
        for _ in range(config.run.rounds):
            if not any(sim.within_budget()):
                stopped = (f"every device spent its privacy budget after round "
                           f"{sim.ledger.head().round}")
                break
            result = sim.run_round(inject)
            results.append(result)
            write_metrics(run_dir, result.row())
            if on_round:
                on_round(result)
    finally:
        sim.close()
    ledger = sim.ledger
    head = ledger.head()
    held = [tensor_hash(m.base_state) for m in sim.miners]
    held += [m.head.global_model_hash for m in sim.miners]
    held += [tensor_hash(d.global_state) for d in sim.devices]
    agree = all(h == head.global_model_hash for h in held)
    rewards = rewards_table(
        ledger, [d.address for d in sim.devices], [m.address for m in sim.miners]
    )
    params = ledger.params()
    match = all(
        r.balance == r.reward_events
        and (r.role != "device" or r.balance == r.samples * params.reward_per_sample)
        for r in rewards
    )
    rows = [r.row() for r in results]
    metric = next(iter(results[-1].metrics))  # the task's first declared metric
    plot = plot_metric(run_dir, rows, metric)
    report = {
            "config": config.as_dict(),
            "ledger": {"backend": config.chain.ledger, "chain_id": ledger.domain.chain_id,
                       "contract": ledger.domain.contract, "token": params.token},
            "setup_seconds": sim.setup_seconds,
            "rounds": rows,
            "final_metrics": results[-1].metrics,
            "chain_head": {"round": head.round, "block_hash": to_hex(head.block_hash),
                           "global_model_hash": to_hex(head.global_model_hash)},
            "model_hashes_agree": agree,
            "rewards_match_samples": match,
            "forks": sum(r.forks for r in results),
            "rewards": [asdict(r) for r in rewards],
            "plot": plot.name,
            **({"privacy": privacy_report(sim.spec.privacy, sim)}
               if config.privacy.mode != "off" else {}),
            **({"stopped_early": stopped} if stopped else {}),
    }
    write_report(run_dir, report)
    return RunSummary(run_dir, results, rewards, head.global_model_hash, agree, match, plot, sim,
                      report)


def privacy_report(cfg: PrivacyConfig, sim: Simulation) -> dict[str, object]:
    """The privacy section of `report.json` (`blockfl.privacy.summary`) for every device."""
    charged = sim.participation.charged()
    return privacy.summary(cfg, {d.address: charged.get(d.address, (0, len(d.shard)))
                                 for d in sim.devices})
