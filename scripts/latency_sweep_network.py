"""λ* on real processes: the emulated network at several block rates, measured E[T] against
the paper's curve.

For each λ (blocks/s per miner), `blockfl network up --emulate-links` (root or CAP_NET_ADMIN)
runs 3 miners and 6 devices for `--rounds` rounds with a quorum of 1 (the paper's miners commit
alone), and `latency compare`'s reading of its logs (`network_rounds`) gives each measured
round's duration and whether it forked. Our contract arbitrates forks: the second block of a
round is refused, so a fork costs a real network nothing. The paper's rule instead voids a
forked round and runs it again; this sweep charges that cost in the paper's way, on measured
rounds: a round forks with the measured rate `p`, so the expected number of attempts is
`1 / (1 - p)` and

    measured E[T] = mean round duration / (1 - measured fork rate),

with a 95% interval from a seeded bootstrap over the run's rounds. The model's curve is the
paper's `E[T] = (T_fixed + 1 / (N_M λ)) exp(λ E)` with the measured inputs pooled over the runs:
`T_fixed` the round's phases other than the proof-of-work (download, training, upload, waiting
and exchange, commit), `E` the fork exposure (miner-seconds a round in which a rival's nonce
forks; docs/latency.md). Printed: a row per λ and both λ*; written: `sweep.csv` and
`lambda_sweep_network.png` in `--out`.

    sudo .venv/bin/python scripts/latency_sweep_network.py --out docs/figures/network-sweep
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from blockfl.latency.network_logs import network_rounds

MINERS, DEVICES, T_WAIT = 3, 6, 5.0
BOOTSTRAP = 2000


def run(lam: float, rounds: int, run_dir: Path) -> list:
    """One emulated network at λ; its measured rounds (2..R)."""
    if not (run_dir / "logs").is_dir():
        command = [sys.executable, "-m", "blockfl.cli", "network", "up", "--emulate-links",
                   "--miners", str(MINERS), "--devices", str(DEVICES), "--rounds", str(rounds),
                   "--quorum", "1", "--chain-block-rate", str(lam), "--model-name", "mlp",
                   "--network-t-wait", str(T_WAIT), "--run-dir", str(run_dir), "--json"]
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
    return network_rounds(run_dir, T_WAIT, DEVICES)


def expected_latency(durations: np.ndarray, forked: np.ndarray) -> float:
    """Mean round duration over the chance of an unforked attempt (inf if all forked)."""
    p = forked.mean()
    return math.inf if p >= 1 else float(durations.mean() / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="0.2,0.5,1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("runs/network-sweep"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    points, fixed, exposure = [], [], []
    for lam in map(float, args.lambdas.split(",")):
        rounds = run(lam, args.rounds, args.out / f"lambda-{lam:g}")
        durations = np.array([r.duration for r in rounds])
        forked = np.array([r.forks > 0 for r in rounds], dtype=float)
        resampled = [rng.integers(0, len(rounds), len(rounds)) for _ in range(BOOTSTRAP)]
        spread = [expected_latency(durations[i], forked[i]) for i in resampled]
        low, high = np.percentile(spread, [2.5, 97.5])
        fixed += [r.duration - r.phases["t_bg"] for r in rounds]  # the phases cover the round
        exposure += [r.fork_exposure for r in rounds]
        points.append({"lambda": lam, "rounds": len(rounds),
                       "round_s": float(durations.mean()), "fork_rate": float(forked.mean()),
                       "expected_s": expected_latency(durations, forked),
                       "low_s": float(low), "high_s": float(high),
                       "exposure": statistics.fmean(r.fork_exposure for r in rounds)})
        print(" ".join(f"{k}={v:.4g}" for k, v in points[-1].items()), flush=True)
    t_fixed, e = statistics.fmean(fixed), statistics.fmean(exposure)

    def model(lam: float) -> float:
        return (t_fixed + 1 / (MINERS * lam)) * math.exp(lam * e)

    for point in points:
        point["model_s"] = model(point["lambda"])
        point["p_fork"] = -math.expm1(-point["lambda"] * e)
    grid = np.geomspace(min(p["lambda"] for p in points) / 1.5,
                        max(p["lambda"] for p in points) * 1.5, 400)
    best = min(points, key=lambda p: p["expected_s"])
    analytic = float(grid[np.argmin([model(x) for x in grid])])
    with (args.out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    print(f"T_fixed = {t_fixed:.3f} s, fork exposure = {e:.4f} miner-s a round; "
          f"lambda* measured {best['lambda']:g} (E[T] {best['expected_s']:.3f} s), "
          f"analytic {analytic:.3g} (E[T] {model(analytic):.3f} s)")
    inside = sum(p["low_s"] <= p["model_s"] <= p["high_s"] for p in points)
    print(f"the model inside the measured 95% interval at {inside} of {len(points)} rates")
    plot(points, grid, [model(x) for x in grid], best, analytic, args.out)


def plot(points: list[dict], grid: np.ndarray, curve: list[float], best: dict,
         analytic: float, out: Path) -> None:
    """Measured E[T] with its interval over the model's curve; fork rates beside."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax, forks = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lams = [p["lambda"] for p in points]
    ax.plot(grid, curve, label="model: (T_fixed + 1/(N_M λ)) exp(λ E)")
    ax.errorbar(lams, [p["expected_s"] for p in points],
                yerr=[[p["expected_s"] - p["low_s"] for p in points],
                      [p["high_s"] - p["expected_s"] for p in points]],
                fmt="o", capsize=3, label="measured: mean round / (1 − fork rate), 95%")
    ax.axvline(analytic, linestyle="--", linewidth=1, label=f"λ* model {analytic:.2g}")
    ax.axvline(best["lambda"], linestyle=":", color="k", linewidth=1,
               label=f"λ* measured {best['lambda']:g}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.3 * max(max(p["high_s"] for p in points), max(p["model_s"] for p in points)))
    ax.set_xlabel("λ, blocks/s per miner")
    ax.set_ylabel("E[T] per committed round, s")
    ax.legend(fontsize=7)
    forks.plot(lams, [p["p_fork"] for p in points], marker="x", label="model 1 − exp(−λ E)")
    forks.plot(lams, [p["fork_rate"] for p in points], marker="o", linestyle="none",
               label="measured")
    forks.set_xscale("log")
    forks.set_xlabel("λ, blocks/s per miner")
    forks.set_ylabel("fork rate per round")
    forks.legend(fontsize=7)
    fig.savefig(out / "lambda_sweep_network.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
