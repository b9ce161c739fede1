"""Figures of the malfunction experiment (PNG, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
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


def _save(fig: Figure, path: Path, legends: Sequence[Axes] | None = None) -> Path:
    """Grid every axes, put a legend on ``legends`` (default: every axes), write a PNG."""
    for ax in fig.axes:
        ax.grid(True, alpha=0.3)
    for ax in fig.axes if legends is None else legends:
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


def reached_curve(times: list[TimeToTarget], start: float) -> tuple[list[float], list[float]]:
    """The fraction of ``times``' seeds that reached the target by each latency, as step
    points from ``start`` to the end of the longest run (``where="post"``)."""
    hits = sorted(t.latency for t in times if math.isfinite(t.latency))
    end = max([t.run_latency for t in times] + hits)
    n = len(times)
    return [start, *hits, end], [0.0, *[(k + 1) / n for k in range(len(hits))], len(hits) / n]


def _median_panel(ax: Axes, targets: list[TargetSummary], field: str, width: float) -> None:
    """Every system's medians (``field``: ``time`` or ``ratio``) vs p with their bootstrap
    intervals, shifted apart by ``width``; ``inf`` (half or more never reached the target) is
    drawn on a dashed line above the finite values; ``time`` points carry the seeds reached."""
    shown = [s for s in targets if field == "time" or s.pairs]
    ends = [v for s in shown for m in [getattr(s, field)] for v in (m.value, m.low, m.high)
            if math.isfinite(v)]
    ceiling = 1.5 * max(ends) if ends else 1.0
    for k, system in enumerate(SYSTEMS):
        rows = [s for s in shown if s.system == system]
        xs = [s.p + (k - 1) * width for s in rows]
        mid = [min(getattr(s, field).value, ceiling) for s in rows]
        err = [[y - min(getattr(s, field).low, ceiling) for y, s in zip(mid, rows, strict=True)],
               [min(getattr(s, field).high, ceiling) - y for y, s in zip(mid, rows, strict=True)]]
        bars = ax.errorbar(xs, mid, yerr=err, fmt=STYLES[system], ms=6, capsize=3, label=system)
        for x, y, s in zip(xs, mid, rows, strict=True):
            if field == "time":
                ax.annotate(f"{s.reached}/{s.seeds}", (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=bars[0].get_color())
    ax.axhline(ceiling, color="grey", lw=0.5, ls="--")
    ax.annotate("∞: half or more never reached it", (0.01, ceiling), va="bottom", fontsize=7,
                xycoords=("axes fraction", "data"), color="grey")
    ax.set(yscale="log", xlabel="malfunction probability p")


def plot_time_to_target(
    results: MalfunctionResults, targets: list[TargetSummary], times: list[TimeToTarget],
    path: Path,
) -> Path:
    """Write :func:`time_to_target_figure` to ``path`` (PNG)."""
    fig = time_to_target_figure(results, targets, times)
    return _save(fig, path, [ax for ax in fig.axes if ax.get_label() in ("p0", "time")])


def time_to_target_figure(
    results: MalfunctionResults, targets: list[TargetSummary], times: list[TimeToTarget]
) -> Figure:
    """Time to the target accuracy over seeds. Top, one panel per ``p``: the fraction of seeds
    that reached it by each latency (a seed that never did is a tick at its run's end).
    Bottom: the median time with its bootstrap 95% interval and the fraction reached beside
    every point, and the median paired ratio to the time at the smallest ``p``; ``∞`` (half or
    more never reached it) sits on the dashed line."""
    ps = results.p_values
    top = [f"p{k}" for k in range(len(ps))]
    half = max(1, len(ps) // 2)
    bottom = ["time"] * half + ["ratio"] * (len(ps) - half) if len(ps) > 1 else ["time"]
    fig = Figure(figsize=(max(8.0, 3.2 * len(ps)), 8), layout="constrained")
    axes = fig.subplot_mosaic([top, bottom])
    target = results.config.malfunction.target_accuracy
    finite = [t.latency for t in times if math.isfinite(t.latency)]
    start = 0.8 * min(finite) if finite else 1.0
    for k, p in enumerate(ps):
        ax = axes[f"p{k}"]
        for system in SYSTEMS:
            mine = [t for t in times if t.system == system and t.p == p]
            x, y = reached_curve(mine, start)
            (line,) = ax.step(x, y, where="post", label=system,
                              ls=STYLES[system][:-1] or "-")
            ax.plot([t.run_latency for t in mine if not math.isfinite(t.latency)],
                    [y[-1]] * sum(not math.isfinite(t.latency) for t in mine), "|",
                    color=line.get_color(), ms=10)
        ax.set(xscale="log", ylim=(-0.03, 1.03), title=f"p = {p:g}", xlabel="latency (s)")
    axes["p0"].set_ylabel(f"fraction of seeds at test accuracy ≥ {target:g}")
    width = 0.2 * (min(np.diff(ps)) if len(ps) > 1 else 1.0)
    _median_panel(axes["time"], targets, "time", width)
    axes["time"].set(ylabel=f"median latency to accuracy {target:g} (s)",
                     title=f"{results.config.malfunction.seeds} seeds, 95% bootstrap intervals; "
                           "k/n: seeds that reached it")
    if "ratio" in axes:
        _median_panel(axes["ratio"], targets, "ratio", width)
        axes["ratio"].axhline(1.0, color="k", lw=0.5)
        axes["ratio"].set(ylabel=f"time / time at p = {ps[0]:g}, same seed",
                          title="paired ratio by seed: median, 95% bootstrap interval")
    return fig
