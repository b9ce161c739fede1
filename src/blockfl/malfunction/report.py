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
from blockfl.malfunction.time_to_accuracy import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    Median,
    TargetSummary,
    TimeToTarget,
)
from blockfl.malfunction.timing import vanilla_latency
from blockfl.text_table import table


def _fmt(x: float | None, spec: str) -> str:
    if x is None or math.isnan(x):
        return "-"
    return "∞" if x == math.inf else format(x, spec)


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    """A (nested) dataclass dict with ``None`` for every float past float range or NaN."""
    return {k: _json_ready(v) if isinstance(v, dict) else _json_float(v) if isinstance(v, float)
            else v for k, v in row.items()}


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
            "statistics": "median over seeds (inf: half or more never reached the target), "
                          f"95% percentile bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples, "
                          f"seed {BOOTSTRAP_SEED}); ratio: per-seed time(p) / time(p_0)",
            "summary": [_json_ready(dataclasses.asdict(s)) for s in targets],
            "runs": [_json_ready(dataclasses.asdict(t)) for t in times],
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


def _median_cells(m: Median, spec: str) -> list[str]:
    return [_fmt(m.value, spec),
            "-" if math.isnan(m.low) else f"[{_fmt(m.low, spec)}, {_fmt(m.high, spec)}]"]


def target_table(results: MalfunctionResults, targets: list[TargetSummary]) -> str:
    """Time to the target accuracy per system and p over seeds: seeds that reached it, the
    median time and the median paired ratio to the smallest p, with bootstrap intervals."""
    p0 = min(s.p for s in targets)
    header = ["p", "system", "reached", "median time (s)", "95% CI", f"× time at p = {p0:g}",
              "95% CI", "pairs"]
    rows = [[f"{s.p:g}", s.system, f"{s.reached}/{s.seeds}", *_median_cells(s.time, ".2f"),
             *_median_cells(s.ratio, ".2f"), str(s.pairs) if s.p != p0 else "-"]
            for s in targets]
    target = results.config.malfunction.target_accuracy
    return (f"time to test accuracy {target:g} (model latency, real training): medians over "
            f"seeds (∞: half or more never reached it), 95% bootstrap intervals; the ratio is "
            f"paired by seed\n" + table(header, rows))
