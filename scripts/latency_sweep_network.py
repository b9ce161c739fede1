"""λ* on real processes: the emulated network at several block rates, measured E[T] against
two models' curves.

For each λ (blocks/s per miner), `blockfl network up --emulate-links` (root or CAP_NET_ADMIN)
runs 3 miners and 6 devices for `--rounds` rounds with a quorum of 1 (the paper's miners commit
alone), and `latency compare`'s reading of its logs (`network_rounds`) gives each measured
round's duration and whether it forked. Our contract arbitrates forks: the second block of a
round is refused, so a fork costs a real network nothing. The paper's rule instead voids a
forked round and runs it again; this sweep charges that cost in the paper's way, on measured
rounds: a round forks with the measured rate `p`, so the expected number of attempts is
`1 / (1 - p)` and

    measured E[T] = mean round duration / (1 - measured fork rate),

with a 95% interval from a seeded bootstrap over the run's rounds, and a simultaneous 95%
band over all the rates (`intervals`): "the model at every rate within its interval" is a
claim about all rates at once, which eight right 95% intervals break one time in three.
Both models take their inputs measured once, pooled over every run. The paper's curve is
`E[T] = (T_fixed + 1 / (N_M λ)) exp(λ E)`:
`T_fixed` the round's phases other than the proof-of-work (download, training, upload, waiting
and exchange, commit), `E = (N_M - 1) W` the rivals' fork window. A rival's window `W` is
seen only where it did not fork (one that forks stops hashing at its nonce), so it is
estimated from what is seen in every round, each rival's hashing after the winner's nonce
(`NetworkRound.fork_exposure`, docs/latency.md): its mean is `(1 - exp(-λ W)) / λ` a rival,
solved for one `W` over all the rates. The staggered race (`blockfl.latency.staggered_race`)
runs the race on the measured rounds' own starts (miners close their candidates at different
times) and notice delays. Per rate, the measured forks are checked against λ x the rivals'
hashing, as `latency compare` does. Printed: a row per λ, then each model's λ* and where it
misses; written: `sweep.csv` and `lambda_sweep_network.png` in `--out`.

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

from blockfl.config import load_config
from blockfl.latency.compare import fork_count_agrees, poisson_count_agrees
from blockfl.latency.network_logs import network_rounds
from blockfl.latency.staggered_race import race, start_offsets

MINERS, DEVICES, T_WAIT = 3, 6, 5.0
BOOTSTRAP = 20_000  # resamples: the band's tails of 0.3% need thousands


def run(lam: float, rounds: int, run_dir: Path) -> list:
    """One emulated network at λ; its measured rounds (2..R)."""
    if not (run_dir / "logs").is_dir():
        command = [sys.executable, "-m", "blockfl.cli", "network", "up", "--emulate-links",
                   "--miners", str(MINERS), "--devices", str(DEVICES), "--rounds", str(rounds),
                   "--quorum", "1", "--chain-block-rate", str(lam), "--model-name", "mlp",
                   "--network-t-wait", str(T_WAIT), "--run-dir", str(run_dir), "--json"]
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
    return network_rounds(run_dir, T_WAIT, DEVICES,
                          load_config(run_dir / "config.toml").chain.hash_rate)


def rival_window(lams: list[float], rival_rounds: list[int], hashing: list[float]) -> float:
    """The one fork window `W` (seconds a rival hashes after the winner's nonce unless it
    forks) whose expected hashing, `(1 - exp(-λ W)) / λ` a rival-round, adds up to the
    `hashing` measured at the rates `lams` over their `rival_rounds` (bisection; inf when
    even an endless window falls short)."""
    def excess(w: float) -> float:
        return sum(n * -math.expm1(-lam * w) / lam
                   for lam, n in zip(lams, rival_rounds, strict=True)) - sum(hashing)

    low, high = 0.0, 60.0
    if excess(high) < 0:
        return math.inf
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if excess(middle) < 0 else (low, middle)
    return (low + high) / 2


def intervals(durations: np.ndarray, forked: np.ndarray, rng: np.random.Generator,
              rates: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Seeded bootstrap intervals of `expected_latency` over the rounds: the 95% one of this
    rate alone, and its share of a simultaneous 95% band over `rates` rates (Bonferroni: each
    rate's interval at 1 - 0.05 / rates), the band that "inside at every rate" is judged by.
    Each of 8 right 95% intervals misses with chance 0.05, so one miss or more has chance
    0.34; the band misses anywhere with chance at most 0.05."""
    n = len(durations)
    spread = [expected_latency(durations[i], forked[i])
              for i in (rng.integers(0, n, n) for _ in range(BOOTSTRAP))]
    tail = 2.5 / rates
    low, high, band_low, band_high = np.percentile(spread, [2.5, 97.5, tail, 100 - tail],
                                                    method="nearest")  # inf-safe
    return (float(low), float(high)), (float(band_low), float(band_high))


def expected_latency(durations: np.ndarray, forked: np.ndarray) -> float:
    """Mean round duration over the chance of an unforked attempt (inf if all forked)."""
    p = forked.mean()
    return math.inf if p >= 1 else float(durations.mean() / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="0.2,0.5,1,2,3,4,8,16")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path("runs/network-sweep"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    points, measured = [], []
    lambdas = [float(x) for x in args.lambdas.split(",")]
    for lam in lambdas:
        rounds = run(lam, args.rounds, args.out / f"lambda-{lam:g}")
        measured += rounds
        durations = np.array([r.duration for r in rounds])
        forked = np.array([r.forks > 0 for r in rounds], dtype=float)
        (low, high), (band_low, band_high) = intervals(durations, forked, rng, len(lambdas))
        hashing = sum(r.fork_exposure for r in rounds)
        forks = sum(r.forks for r in rounds)
        points.append({"lambda": lam, "rounds": len(rounds),
                       "round_s": float(durations.mean()), "fork_rate": float(forked.mean()),
                       "expected_s": expected_latency(durations, forked),
                       "low_s": low, "high_s": high, "band_low_s": band_low,
                       "band_high_s": band_high,
                       "exposure": hashing / len(rounds), "forks": forks,
                       "forks_model": lam * hashing,
                       "forks_agree": poisson_count_agrees(forks, lam * hashing)})
        print(" ".join(f"{k}={v:.4g}" for k, v in points[-1].items()), flush=True)
    models = fitted_models(points, measured)
    for point in points:
        for name, (curve, _) in models.items():
            point[f"{name}_s"], point[f"{name}_p_fork"] = curve(point["lambda"])
    grid = np.geomspace(points[0]["lambda"] / 1.5, points[-1]["lambda"] * 1.5, 200)
    curves = {name: [curve(x) for x in grid] for name, (curve, _) in models.items()}
    best = min(points, key=lambda p: p["expected_s"])
    with (args.out / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    print(f"forks as λ x the rivals' hashing at {sum(p['forks_agree'] for p in points)} of "
          f"{len(points)} rates; lambda* measured {best['lambda']:g} "
          f"(E[T] {best['expected_s']:.3f} s)")
    optima = {}
    for name, (_, inputs) in models.items():
        i = int(np.argmin([t for t, _ in curves[name]]))
        optima[name] = float(grid[i])
        inside = sum(p["low_s"] <= p[f"{name}_s"] <= p["high_s"] for p in points)
        banded = sum(p["band_low_s"] <= p[f"{name}_s"] <= p["band_high_s"] for p in points)
        forked = sum(fork_count_agrees(round(p["fork_rate"] * p["rounds"]),
                                       [p[f"{name}_p_fork"]] * p["rounds"]) for p in points)
        print(f"{name}: {inputs}; lambda* {grid[i]:.3g} (E[T] {curves[name][i][0]:.3f} s), "
              f"inside the measured 95% interval at {inside} of {len(points)} rates (a right "
              f"model misses one or more with chance {1 - 0.95 ** len(points):.2f}), inside "
              f"the simultaneous 95% band at {banded}, forked rounds within the binomial's "
              f"tails at {forked}")
    plot(points, grid, curves, best, optima, args.out)


def fitted_models(points: list[dict], rounds: list) -> dict:
    """The two models' curves, λ -> (E[T], p_fork), with the inputs pooled over every
    measured round, and a line naming the inputs: the paper's, every miner starting at once
    and each rival exposed for the window `W` (`rival_window`); and the staggered race
    (`blockfl.latency.staggered_race`) on the measured starts and notice delays."""
    t_fixed = statistics.fmean(r.duration - r.phases["t_bg"] for r in rounds)
    w = rival_window([p["lambda"] for p in points], [p["rounds"] * (MINERS - 1) for p in points],
                     [p["exposure"] * p["rounds"] for p in points])
    e = (MINERS - 1) * w

    def paper(lam: float) -> tuple[float, float]:
        return (t_fixed + 1 / (MINERS * lam)) * math.exp(lam * e), -math.expm1(-lam * e)

    timed = [r for r in rounds if r.race_starts]
    offsets = start_offsets([r.race_starts for r in timed])
    delays = [d for r in timed for d in r.notice_delays]
    # the round less its race from the first miner's start to the winner's nonce
    before = statistics.fmean(r.duration - max(s for s in r.race_starts if s is not None)
                              for r in timed)

    def staggered(lam: float) -> tuple[float, float]:
        got = race(lam, offsets, delays)
        return (before + got.seconds) / (1 - got.p_fork), got.p_fork

    return {"paper": (paper, f"T_fixed {t_fixed:.3f} s, rival window W {w:.4f} s"),
            "staggered": (staggered, f"{before:.3f} s before the race, starts of "
                                     f"{len(offsets)} rounds, {len(delays)} notice delays "
                                     f"(mean {statistics.fmean(delays):.4f} s)")}


def plot(points: list[dict], grid: np.ndarray, curves: dict, best: dict, optima: dict,
         out: Path) -> None:
    """Measured E[T] with its interval over the models' curves; fork rates beside."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax, forks = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lams = [p["lambda"] for p in points]
    labels = {"paper": "paper: (T_fixed + 1/(N_M λ)) exp(λ (N_M−1) W)",
              "staggered": "staggered race: measured starts and notice delays"}
    for (name, curve), style in zip(curves.items(), ("--", "-"), strict=True):
        line, = ax.plot(grid, [t for t, _ in curve], style, label=labels[name])
        ax.axvline(optima[name], linestyle=style, color=line.get_color(), linewidth=0.8,
                   label=f"λ* {name} {optima[name]:.2g}")
        forks.plot(grid, [p for _, p in curve], style, color=line.get_color(),
                   label=f"{name} model")
    ax.errorbar(lams, [p["expected_s"] for p in points],
                yerr=[[p["expected_s"] - p["low_s"] for p in points],
                      [p["high_s"] - p["expected_s"] for p in points]],
                fmt="o", color="k", capsize=3, label="measured: mean round / (1 − fork rate), 95%")
    top = 1.2 * max(p["band_high_s"] for p in points if math.isfinite(p["band_high_s"]))
    ax.vlines(lams, [p["band_low_s"] for p in points],
              [min(p["band_high_s"], top) for p in points],  # an endless band to the top
              color="k", alpha=0.3, linewidth=5, label="simultaneous 95% band over the rates")
    ax.axvline(best["lambda"], linestyle=":", color="k", linewidth=1,
               label=f"λ* measured {best['lambda']:g}")
    ax.set_xscale("log")
    ax.set_ylim(0, top)
    ax.set_xlabel("λ, blocks/s per miner")
    ax.set_ylabel("E[T] per committed round, s")
    ax.legend(fontsize=6)
    forks.plot(lams, [p["fork_rate"] for p in points], "ok", label="measured")
    forks.set_xscale("log")
    forks.set_xlabel("λ, blocks/s per miner")
    forks.set_ylabel("forked rounds")
    forks.legend(fontsize=7)
    fig.savefig(out / "lambda_sweep_network.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
