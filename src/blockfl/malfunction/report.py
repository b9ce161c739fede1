"""The malfunction experiment's outputs for people and machines: tables, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blockfl.latency import model
from blockfl.malfunction.experiment import MalfunctionResults, RoundRecord
from blockfl.malfunction.handouts import SYSTEMS
from blockfl.malfunction.time_to_accuracy import TargetSummary, TimeToTarget
from blockfl.malfunction.timing import vanilla_latency
from blockfl.text_table import table


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or math.isnan(x) else format(x, spec)


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def run_summaries(results: MalfunctionResults) -> list[dict[str, Any]]:
    """Final and mean quality, total latency and malfunction counts of every run of the
    first seed."""
    runs = []
    for p in results.p_values:
        for system in SYSTEMS:
            t = results.trajectory(system, p)
            runs.append({
                "system": system,
                "p": p,
                "final_accuracy": _json_float(t[-1].accuracy),
                "mean_accuracy": _json_float(float(np.mean([r.accuracy for r in t]))),
                "final_loss": t[-1].loss,
                "mean_loss": float(np.mean([r.loss for r in t])),
                "total_latency": t[-1].cumulative_latency,
                "mean_affected_devices": float(np.mean([r.affected_devices for r in t])),
                "rounds_with_malfunction": sum(r.malfunctions > 0 for r in t),
                "redownloads": sum(r.redownloads for r in t),
                "stalled_slots": sum(r.stalled_slots for r in t),
            })
    return runs


def summary(
    results: MalfunctionResults, targets: list[TargetSummary], times: list[TimeToTarget]
) -> dict[str, Any]:
    """JSON-ready summary: configuration, latency model, runs, time to target accuracy."""
    first = results.params[results.seeds[0]]
    return {
        "config": results.config.as_dict(),
        "task": results.task,
        "latency_model": dataclasses.asdict(first),
        "vanilla_round_latency": vanilla_latency(first),
        "blockfl_expected_round_latency": model.expected_latency(first).total,
        "t_dn": model.t_dn(first),
        "runs": run_summaries(results),
        "time_to_target": {
            "target_accuracy": results.config.malfunction.target_accuracy,
            "summary": [{k: _json_float(v) if isinstance(v, float) else v
                         for k, v in dataclasses.asdict(s).items()} for s in targets],
            "runs": [dataclasses.asdict(t) | {"latency": _json_float(t.latency)} for t in times],
        },
    }


def write_csv(rows: Sequence[Any], path: Path) -> Path:
    """Dataclass rows as CSV."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(rows[0])])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in rows)
    return path


def trajectory_table(results: MalfunctionResults) -> str:
    """Per-round table of the first seed at ``malfunction.p``."""
    p = results.config.malfunction.p
    metric = "acc" if results.task == "classification" else "mse"
    header = ["round"]
    for system in SYSTEMS:
        header += [f"{system}: {metric}", "T (s)", "affected"]
    rows = []
    for r in range(results.config.run.rounds):
        row = [str(r + 1)]
        for system in SYSTEMS:
            rec: RoundRecord = results.trajectory(system, p)[r]
            value = rec.accuracy if results.task == "classification" else rec.loss
            row += [_fmt(value, ".4f"), f"{rec.latency:.3f}", str(rec.affected_devices)]
        rows.append(row)
    return f"p = {p:g}, seed {results.seeds[0]}\n" + table(header, rows)


def sweep_table(results: MalfunctionResults) -> str:
    """Final and mean quality, total latency, affected devices of every system at every p."""
    metric = "acc" if results.task == "classification" else "mse"
    key = "accuracy" if results.task == "classification" else "loss"
    header = ["p", "system", f"final {metric}", f"mean {metric}", "total latency (s)",
              "mean affected", "re-downloads", "stalls"]
    rows = [[f"{run['p']:g}", run["system"], _fmt(run[f"final_{key}"], ".4f"),
             _fmt(run[f"mean_{key}"], ".4f"), f"{run['total_latency']:.2f}",
             f"{run['mean_affected_devices']:.2f}", str(run["redownloads"]),
             str(run["stalled_slots"])] for run in run_summaries(results)]
    return table(header, rows)


def target_table(results: MalfunctionResults, targets: list[TargetSummary]) -> str:
    """Time to the target accuracy per system and p, over seeds."""
    header = ["p", "system", "reached", "mean time (s)", "95% CI", "median (s)"]
    rows = [[f"{s.p:g}", s.system, f"{s.reached}/{s.seeds}", _fmt(s.mean, ".2f"),
             "-" if math.isnan(s.half_width) else f"±{s.half_width:.2f}", _fmt(s.median, ".2f")]
            for s in targets]
    target = results.config.malfunction.target_accuracy
    return f"time to test accuracy {target:g} (model latency, real training)\n" + table(
        header, rows)
