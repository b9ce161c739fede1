"""Parameter sweeps of the latency model: analytic curve, Monte Carlo points, lambda*.

Sweepable parameters: ``lambda`` (block generation rate), ``snr`` (all links, dB), ``miners``
(N_M), ``devices`` (N_D) and ``quorum`` (q, miners behind a block). Results are written as CSV
and plotted as PNG (Agg backend).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from blockfl.latency.model import (
    LatencyBreakdown,
    LatencyParams,
    expected_latency,
    log_expected_latency,
    numeric_optimal_lambda,
    optimal_lambda,
    optimal_latency,
)
from blockfl.latency.montecarlo import MonteCarloSummary, simulate

SWEEP_PARAMS: tuple[str, ...] = ("lambda", "snr", "miners", "devices", "quorum")

COUNTS = {"miners": "n_miners", "devices": "n_devices", "quorum": "quorum"}
"""The integral sweep parameters and their :class:`LatencyParams` fields."""

AXIS_LABELS = {
    "lambda": "block generation rate per miner λ (1/s)",
    "snr": "SNR (dB)",
    "miners": "number of miners $N_M$",
    "devices": "number of devices $N_D$",
    "quorum": "quorum $q$ (miners behind a block)",
}


def apply_param(p: LatencyParams, name: str, value: float) -> LatencyParams:
    """Return ``p`` with the swept parameter set; ``snr`` sets the uplink, downlink and miner
    SNRs together, ``miners``/``devices``/``quorum`` must be integral."""
    if name == "lambda":
        return dataclasses.replace(p, lambda_=float(value))
    if name == "snr":
        return dataclasses.replace(p, snr_up_db=value, snr_dn_db=value, snr_m_db=value)
    if name in COUNTS:
        if value != int(value):
            raise ValueError(f"{name} must be an integer, got {value}")
        return dataclasses.replace(p, **{COUNTS[name]: int(value)})
    raise ValueError(f"unknown sweep parameter {name!r}; choose from {', '.join(SWEEP_PARAMS)}")


@dataclass(frozen=True)
class SweepPoint:
    """One sweep point: the analytic breakdown, the Monte Carlo summary and lambda*."""

    value: float
    analytic: LatencyBreakdown
    mc: MonteCarloSummary
    lambda_star: float
    lambda_star_numeric: float


@dataclass(frozen=True)
class OptimumPoint:
    """lambda* (closed form and numeric) and the minimal expected latency at one value."""

    value: float
    lambda_star: float
    lambda_star_numeric: float
    latency_at_optimum: float


def sweep(
    p: LatencyParams,
    name: str,
    values: Sequence[float],
    rounds: int = 100_000,
    seed: int = 0,
    on_point: Callable[[], None] | None = None,
) -> list[SweepPoint]:
    """Analytic expectation and Monte Carlo estimate at every value of the swept parameter;
    ``on_point`` is called after each point (a progress bar)."""
    seeds = np.random.SeedSequence(seed).spawn(len(values))
    points = []
    for value, point_seed in zip(values, seeds, strict=True):
        q = apply_param(p, name, value)
        points.append(
            SweepPoint(
                value=float(value),
                analytic=expected_latency(q),
                mc=simulate(q, rounds, point_seed).summary(),
                lambda_star=optimal_lambda(q),
                lambda_star_numeric=numeric_optimal_lambda(q),
            )
        )
        if on_point:
            on_point()
    return points


def optimum_curve(p: LatencyParams, name: str, values: Sequence[float]) -> list[OptimumPoint]:
    """lambda* and the latency at lambda* versus a parameter other than ``lambda``."""
    if name == "lambda":
        raise ValueError("lambda* does not depend on lambda; sweep another parameter")
    points = []
    for value in values:
        q = apply_param(p, name, value)
        points.append(
            OptimumPoint(
                float(value), optimal_lambda(q), numeric_optimal_lambda(q), optimal_latency(q)
            )
        )
    return points


def sweep_rows(points: Sequence[SweepPoint], name: str, p: LatencyParams) -> list[dict]:
    """Table rows of a sweep: value, lambda, analytic and Monte Carlo latency, forks, lambda*;
    an undefined confidence interval has ``None`` ends and its reason in ``mc_ci_undefined``."""
    return [
        {
            "value": pt.value,
            "lambda": pt.value if name == "lambda" else p.lambda_,
            "analytic_total": pt.analytic.total,
            "mc_mean": pt.mc.total.mean,
            "mc_ci_low": pt.mc.total.low if pt.mc.total.defined else None,
            "mc_ci_high": pt.mc.total.high if pt.mc.total.defined else None,
            "mc_ci_undefined": pt.mc.total.undefined,
            "p_fork": pt.analytic.p_fork,
            "mc_fork_rate": pt.mc.fork_rate,
            "expected_n_fork": pt.analytic.n_fork,
            "mc_n_fork": pt.mc.n_fork.mean,
            "lambda_star": pt.lambda_star,
            "lambda_star_numeric": pt.lambda_star_numeric,
        }
        for pt in points
    ]


def optimum_rows(points: Sequence[OptimumPoint]) -> list[dict]:
    """Table rows of an optimum curve, keyed by the :class:`OptimumPoint` fields."""
    return [dataclasses.asdict(pt) for pt in points]


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    """Write rows of equal keys to ``path`` as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _dense(name: str, x: np.ndarray) -> np.ndarray:
    """Grid for the analytic curve: integers for counts, 400 points otherwise."""
    if name in COUNTS:
        return np.arange(x.min(), x.max() + 1)
    if name == "lambda" and x.min() > 0:
        return np.geomspace(x.min(), x.max(), 400)
    return np.linspace(x.min(), x.max(), 400)


def _finish(fig: Figure, ax: Axes, name: str, x: np.ndarray, ylabel: str, path: Path) -> Path:
    if name == "lambda" and x.min() > 0 and x.max() / x.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel(AXIS_LABELS[name])
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


LOG10_AXIS_ABOVE = 100.0
"""Past ``E[T] = 10^100`` s a sweep plots ``log10 E[T]`` instead of seconds: matplotlib's log
axis fails near the float limit (ticks past 1.8e308), and ``E[T]`` itself overflows beyond it."""


def _mark_infinite(ax: Axes, x: Sequence[float], marker: str, label: str) -> None:
    """Mark points whose value is past float range at the top edge of ``ax``."""
    if x:
        ax.plot(x, [1.0] * len(x), marker, color="C3", ms=7, clip_on=False,
                transform=ax.get_xaxis_transform(), label=label)


def sweep_figure(points: Sequence[SweepPoint], name: str, p: LatencyParams) -> Figure:
    """The analytic E[T] curve and the Monte Carlo means with their 95% CIs; lambda sweeps get
    a vertical line at lambda*. Latencies past ``10^100`` s are drawn as ``log10 E[T]``, and
    values past float range (``inf``) are marked at the top edge instead of dropped."""
    x = np.array([pt.value for pt in points])
    dense = _dense(name, x)
    from matplotlib.figure import Figure  # here: `blockfl latency --help` stays fast

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    log10_curve = np.array([log_expected_latency(apply_param(p, name, v)) for v in dense])
    log10_curve /= math.log(10.0)
    drawn = np.isfinite(log10_curve)
    in_log10 = not drawn.all() or log10_curve.max() > LOG10_AXIS_ABOVE
    curve = log10_curve if in_log10 else 10.0**log10_curve
    ax.plot(dense[drawn], curve[drawn], label="analytic E[T]")
    mc = [(pt.value, pt.mc.total) for pt in points if math.isfinite(pt.mc.total.mean)]
    mean = np.array([est.mean for _, est in mc])
    low = np.array([est.low if est.defined else est.mean for _, est in mc])
    high = np.array([est.high if est.defined else est.mean for _, est in mc])
    if in_log10:
        with np.errstate(divide="ignore", invalid="ignore"):
            mean, low, high = (np.log10(v) for v in (mean, np.maximum(low, 0.0), high))
    err = np.array([mean - low, high - mean]).reshape(2, -1)
    err[~np.isfinite(err)] = 0.0  # a CI reaching 0 s has no lower end in log10
    ax.errorbar([v for v, _ in mc], mean, yerr=err, fmt="o", ms=4, capsize=3,
                label="Monte Carlo mean (95% CI)")
    _mark_infinite(ax, dense[~drawn].tolist(), "x", "E[T] = ∞ (past float range)")
    _mark_infinite(ax, [pt.value for pt in points if not math.isfinite(pt.mc.total.mean)], "^",
                   "Monte Carlo mean = ∞ (past float range)")
    shown = curve[drawn]
    if shown.size and shown.min() > 0 and shown.max() / shown.min() > 100:
        ax.set_yscale("log")  # E[T] grows as exp(λ (N_M - 1) T_bp): wide sweeps span decades
    if name != "lambda":
        ax.set_title(f"λ = {p.lambda_:g} 1/s (per miner)")
    elif math.isfinite(points[0].lambda_star):
        star = points[0].lambda_star
        ax.axvline(star, color="k", ls="--", lw=1, label=f"λ* = {star:.4g} 1/s")
    ax.set_ylabel("log₁₀ of round latency E[T] in s" if in_log10 else "round latency E[T] (s)")
    return fig


def plot_sweep(points: Sequence[SweepPoint], name: str, p: LatencyParams, path: Path) -> Path:
    """Write :func:`sweep_figure` to ``path`` (PNG)."""
    fig = sweep_figure(points, name, p)
    x = np.array([pt.value for pt in points])
    return _finish(fig, fig.axes[0], name, x, fig.axes[0].get_ylabel(), path)


def plot_optimum(points: Sequence[OptimumPoint], name: str, path: Path) -> Path:
    """Plot lambda* (closed form as a line, numeric minimiser as markers) versus a parameter;
    infinite lambda* (a single miner) is left out."""
    finite = [pt for pt in points if math.isfinite(pt.lambda_star)]
    x = np.array([pt.value for pt in finite])
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(x, [pt.lambda_star for pt in finite], label="λ* closed form")
    ax.plot(x, [pt.lambda_star_numeric for pt in finite], "o", ms=4, mfc="none", label="λ* numeric")
    return _finish(fig, ax, name, x, "optimal block generation rate λ* (1/s)", path)


def run_sweep(
    p: LatencyParams,
    name: str,
    values: Sequence[float],
    out_dir: Path,
    rounds: int = 100_000,
    seed: int = 0,
    on_point: Callable[[], None] | None = None,
) -> tuple[list[dict], list[Path]]:
    """Sweep, write ``latency_vs_<name>.{csv,png}`` and, unless sweeping lambda,
    ``lambda_star_vs_<name>.{csv,png}`` into ``out_dir``; return the sweep rows and the paths."""
    if rounds < 1 or not values:
        raise ValueError("a sweep needs at least one value and one Monte Carlo round")
    points = sweep(p, name, values, rounds, seed, on_point)
    rows = sweep_rows(points, name, p)
    paths = [
        write_csv(rows, out_dir / f"latency_vs_{name}.csv"),
        plot_sweep(points, name, p, out_dir / f"latency_vs_{name}.png"),
    ]
    if name != "lambda":
        optimum = optimum_curve(p, name, values)
        paths += [
            write_csv(optimum_rows(optimum), out_dir / f"lambda_star_vs_{name}.csv"),
            plot_optimum(optimum, name, out_dir / f"lambda_star_vs_{name}.png"),
        ]
    return rows, paths
