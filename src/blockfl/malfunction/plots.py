"""Figures of the malfunction experiment (PNG, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from blockfl.malfunction.experiment import MalfunctionResults
from blockfl.malfunction.handouts import SYSTEMS
from blockfl.malfunction.time_to_accuracy import TargetSummary, TimeToTarget

STYLES = {"vanilla": "-o", "blockfl-unverified": "--s", "blockfl": ":^"}


def _metric(results: MalfunctionResults) -> tuple[str, str]:
    """Record field and axis label of the plotted quality metric."""
    if results.task == "classification":
        return "accuracy", "test accuracy"
    return "loss", "test MSE"


def _save(fig: Figure, path: Path) -> Path:
    for ax in fig.axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def plot_accuracy(results: MalfunctionResults, path: Path) -> Path:
    """Test metric vs round and vs cumulative latency of the three systems at ``p``."""
    key, label = _metric(results)
    p = results.config.malfunction.p
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
    """Per-round and cumulative latency vs round of the three systems at ``p``."""
    p = results.config.malfunction.p
    fig = Figure(figsize=(11, 4))
    per_round, cumulative = fig.subplots(1, 2)
    for system in SYSTEMS:
        t = results.trajectory(system, p)
        rounds = [r.round + 1 for r in t]
        per_round.plot(rounds, [r.latency for r in t], STYLES[system], ms=4, label=system)
        cumulative.plot(rounds, [r.cumulative_latency for r in t], STYLES[system], ms=4,
                        label=system)
    per_round.set(xlabel="round", ylabel="round latency (s)", title=f"p = {p:g}")
    cumulative.set(xlabel="round", ylabel="cumulative latency (s)")
    for ax in (per_round, cumulative):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_sweep(results: MalfunctionResults, path: Path) -> Path:
    """Final-round and round-averaged test metric vs malfunction probability."""
    key, label = _metric(results)
    ps = results.p_values
    fig = Figure(figsize=(11, 4))
    final, mean = fig.subplots(1, 2)
    for system in SYSTEMS:
        runs = [results.trajectory(system, p) for p in ps]
        style = dict(ms=5, label=system)
        final.plot(ps, [getattr(t[-1], key) for t in runs], STYLES[system], **style)
        mean.plot(ps, [np.mean([getattr(r, key) for r in t]) for t in runs], STYLES[system],
                  **style)
    final.set(xlabel="malfunction probability p", ylabel=f"final {label}",
              title=f"after round {results.config.run.rounds}")
    mean.set(xlabel="malfunction probability p", ylabel=f"{label}, mean over rounds")
    return _save(fig, path)


def plot_time_to_target(
    results: MalfunctionResults, targets: list[TargetSummary], times: list[TimeToTarget],
    path: Path,
) -> Path:
    """Time to the target accuracy vs p (log scale): every seed as a dot, the mean over the
    seeds that reached it with its 95% CI; seeds that never reached it sit on the dashed line."""
    ps = results.p_values
    width = 0.2 * (min(np.diff(ps)) if len(ps) > 1 else 1.0)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    finite = [t.latency for t in times if math.isfinite(t.latency)]
    ceiling = 1.08 * max(finite) if finite else 1.0
    for k, system in enumerate(SYSTEMS):
        shift = (k - 1) * width
        rows = [s for s in targets if s.system == system and s.reached]
        bars = ax.errorbar([s.p + shift for s in rows], [s.mean for s in rows],
                           yerr=[0 if math.isnan(s.half_width) else s.half_width for s in rows],
                           fmt=STYLES[system], ms=6, capsize=3, label=system)
        mine = [t for t in times if t.system == system]
        ax.plot([t.p + shift for t in mine],
                [t.latency if math.isfinite(t.latency) else ceiling for t in mine],
                STYLES[system][-1], color=bars[0].get_color(), alpha=0.35, ms=3)
    target = results.config.malfunction.target_accuracy
    ax.axhline(ceiling, color="grey", lw=0.5, ls="--")
    ax.set_yscale("log")  # vanilla and BlockFL rounds differ by an order of magnitude
    ax.set(xlabel="malfunction probability p",
           ylabel=f"latency to test accuracy {target:g} (s)",
           title=f"{results.config.malfunction.seeds} seeds; dashed line: not reached")
    return _save(fig, path)
