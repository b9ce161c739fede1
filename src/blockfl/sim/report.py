"""Run directories: config, per-round metrics (JSONL), the final report (JSON) and a plot."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from blockfl.chain.ledger import Ledger
from blockfl.config import Config
from blockfl.hashing import to_hex


def make_run_dir(config: Config) -> Path:
    """A new run directory under `run.out_dir` named after `run.name` or the time and seed."""
    name = config.run.name or time.strftime("%Y%m%d-%H%M%S") + f"-seed{config.run.seed}"
    run_dir = Path(config.run.out_dir) / name
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.run.out_dir) / f"{name}-{suffix}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    return run_dir


@dataclass(frozen=True)
class RewardRow:
    """One address's rewards as the chain reports them."""

    address: str
    role: str
    samples: int
    blocks: int
    reward_events: int
    balance: int


def rewards_table(ledger: Ledger, devices: list[str], miners: list[str]) -> list[RewardRow]:
    """Rewards per device and miner from the chain: accepted samples, events and balances."""
    samples: dict[str, int] = {}
    for update in ledger.accepted_updates():
        samples[update.device] = samples.get(update.device, 0) + update.samples
    blocks: dict[str, int] = {}
    for block in ledger.blocks():
        blocks[block.miner] = blocks.get(block.miner, 0) + 1
    events = ledger.reward_totals()
    rows = [
        RewardRow(a, "device", samples.get(a, 0), 0, events.get(a, 0), ledger.balance_of(a))
        for a in devices
    ]
    rows += [
        RewardRow(a, "miner", 0, blocks.get(a, 0), events.get(a, 0), ledger.balance_of(a))
        for a in miners
    ]
    return rows


def write_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one round to metrics.jsonl."""
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")


def plot_metric(run_dir: Path, rows: list[dict[str, Any]], metric: str) -> Path:
    """PNG of a test metric per round."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot([r["round"] for r in rows], [r["metrics"][metric] for r in rows], marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"BlockFL global model: test {metric} per round")
    ax.grid(alpha=0.3)
    path = run_dir / f"{metric}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_report(run_dir: Path, report: dict[str, Any]) -> Path:
    """Write report.json."""
    path = run_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return to_hex(value)
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
