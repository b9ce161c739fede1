"""`blockfl latency compare RUN_DIR`: measured per-phase latency of a run against the model.

`blockfl simulate` emulates the links of the latency model (a transfer of S bits takes
S / (W log2(1 + SNR)) seconds, `[links]` in the config) and runs a real proof-of-work race whose
target gives each miner the block generation rate lambda, timed on a virtual clock (attempts /
hash rate). Each round records, per device, the model's terms. This module feeds the model the
run's own parameters (devices, miners, lambda, T_wait, links, the measured update size) and the
measured compute inputs (local training, verification, attesters' checks and global-model
times, which the model takes as delta/f_c inputs), and checks the rest:

- deterministic terms (upload, cross-verification wait and exchange, attestation, propagation,
  download) must agree within `DETERMINISTIC_TOLERANCE`. The model is evaluated round by round
  with that round's block: `N_D` is the number of updates in it, since a device whose update
  misses `T_wait` (a slow or loaded machine measuring its training time) is not in the block.
  Using the configured number of devices instead made the demo's t_bp and t_dn 17% too large on
  a loaded machine. When the gossip exchange rather than `T_wait` ends a wait, `T_cross` depends
  on the round's random association (the model takes its expectation) and is compared
  statistically. `T_att` is the ``q - 1`` attesters' emulated transfers plus their measured
  checks;
- block generation (mean of min of N_M exponentials, 1/(N_M lambda)) and the fork rate
  (1 - exp(-lambda (N_M-1) T_bp)) must agree within 3 standard errors of the run's mean.

Our chain arbitrates forks (the contract rejects the second block of a round), so a fork does
not repeat the round as in the paper; the measured total is compared with the model's bracket
without retries, and the paper's E[T] with retries is printed beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from blockfl.config import load_config
from blockfl.emulated_hosts import HOSTS_FILE
from blockfl.latency.from_config import params_from_config
from blockfl.latency.model import (
    LatencyParams,
    expected_latency,
    p_fork,
    t_att_links,
    t_bp,
    t_dn,
    t_exchange,
    t_up,
)
from blockfl.latency.network_logs import PHASES, NetworkRound, is_network_run, network_rounds
from blockfl.latency.shared_links import links_of, modelled_ends
from blockfl.latency.transfers import Transfer, run_transfers

DETERMINISTIC_TOLERANCE = 0.02
LINK_TOLERANCE = 0.05
"""An emulated link's transfer agrees with the model within this (tbf's bucket and the
kernel's timer make a few percent; see docs/latency.md, "Emulated links")."""
STATISTICAL_SIGMAS = 3.0
TAIL = 0.00135
"""A measured fork count or block time agrees unless either tail of its exact distribution
under the model is below this: the one-sided tail beyond 3 standard errors of a normal."""
REACTION_TOLERANCE_S = 0.25
"""A network miner starts mining within this long of the update that fills its block (it polls
every 0.1 s, then builds the candidate's aggregate)."""


@dataclass(frozen=True)
class PhaseComparison:
    """One term: measured mean (and its standard error) against the model."""

    term: str
    measured: float
    stderr: float
    model: float
    kind: str  # "input" (calibrated), "deterministic", "statistical"
    agrees: bool

    @property
    def relative_error(self) -> float:
        """|measured - model| / model."""
        return abs(self.measured - self.model) / self.model if self.model else 0.0


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.inf
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def model_params(run_dir: Path, rows: list[dict[str, Any]]) -> LatencyParams:
    """The latency model's parameters for a run (links, sizes, lambda from its config)."""
    bits = sum(r["latency"]["update_bits"] for r in rows) / len(rows)
    return params_from_config(load_config(run_dir / "config.toml"), bits)


def round_model(p: LatencyParams, row: dict[str, Any]) -> dict[str, float]:
    """The model's terms for one round of a run, with that round's block: ``N_D`` is the
    number of updates in the block (a device whose update missed ``T_wait`` is not in it), and
    ``T_cross`` is the mean over devices of ``max(T_wait - (T_local,o + T_up), exchange)`` with
    each device's own local time, plus the measured verification; ``T_att`` is the modelled
    transfers to and from the ``q - 1`` attesters plus their measured checks. ``exchange_binds``
    is 1 when the exchange, not ``T_wait``, ends some device's wait."""
    q = dataclasses.replace(p, n_devices=max(int(row["accepted"]), 1), device=0)
    up, exchange, verify = t_up(q), t_exchange(q), row["latency"]["verification"]
    local_times = row.get("local_times") or [row["latency"]["t_local"]]
    slack = [q.t_wait - (local + up) for local in local_times]
    return {
        "t_up": up,
        "t_cross": sum(max(s, exchange) for s in slack) / len(slack) + verify,
        "exchange_binds": float(min(slack) < exchange),
        "t_att": t_att_links(q) + row["latency"]["attestation_checks"],
        "t_bp": t_bp(q),
        "t_dn": t_dn(q),
        "p_fork": p_fork(q),
    }


def compare_run(run_dir: Path) -> tuple[list[PhaseComparison], dict[str, float]]:
    """Compare every term of a run with the model; also return the totals."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if not rows:
        raise ValueError(f"{run_dir} has no rounds")
    p = model_params(run_dir, rows)
    measured = {k: _mean_se([r["latency"][k] for r in rows]) for k in rows[0]["latency"]}
    local, global_ = (measured[k][0] for k in ("t_local", "t_global"))
    per_round = [round_model(p, r) for r in rows]
    modelled = {k: sum(m[k] for m in per_round) / len(rows) for k in per_round[0]}
    fork_rate = _mean_se([1.0 if r["forks"] > 0 else 0.0 for r in rows])
    pf = modelled["p_fork"]
    fork_se = math.sqrt(sum(m["p_fork"] * (1 - m["p_fork"]) for m in per_round)) / len(rows)
    expected = {
        "t_local": (local, "input"),
        "t_up": (modelled["t_up"], "deterministic"),
        # the gossip exchange depends on the round's random association, which the model
        # replaces by its expectation: statistical wherever it, not T_wait, ends the wait
        "t_cross": (modelled["t_cross"],
                    "statistical" if modelled["exchange_binds"] else "deterministic"),
        "t_bg": (1 / (p.n_miners * p.lambda_), "statistical"),
        "t_att": (modelled["t_att"], "deterministic"),
        "t_bp": (modelled["t_bp"], "deterministic"),
        "t_dn": (modelled["t_dn"], "deterministic"),
        "t_global": (global_, "input"),
        "fork_rate": (pf, "statistical"),
    }
    out = []
    for term, (model, kind) in expected.items():
        mean, se = (fork_rate[0], fork_se) if term == "fork_rate" else measured[term]
        out.append(PhaseComparison(term, mean, se, model, kind, _agrees(mean, se, model, kind)))
    model = {c.term: c.model for c in out}
    bracket = sum(model[t] for t in ("t_local", "t_up", "t_cross", "t_bg", "t_att", "t_bp"))
    totals = {
        "rounds": float(len(rows)),
        "late_updates": float(sum(r["late"] for r in rows)),
        "measured_total": measured["total"][0],
        "model_total_without_fork_retries": bracket + model["t_dn"] + model["t_global"],
        "paper_expected_latency_with_fork_retries": bracket * expected_latency(p).n_fork
        + model["t_dn"] + model["t_global"],
    }
    return out, totals


def compare_network(run_dir: Path) -> tuple[list[PhaseComparison], dict[str, float]]:
    """Compare the phases of a `network up` run (see :mod:`.network_logs`) with the model with
    the network's parameters: N_M, lambda and T_wait from its config; the measured compute and
    loopback transfer times, the attestation phase among them, are inputs; on emulated links
    (`network up --emulate-links`) the upload's, the download's and the gossip exchange's
    transfers are also checked against their terms."""
    config = load_config(run_dir / "config.toml")
    rounds = network_rounds(run_dir, config.network.t_wait, config.network.devices,
                            config.chain.hash_rate)
    if not rounds:
        raise ValueError(f"{run_dir} has no round with its previous block in the logs")
    n_miners, lam = config.network.miners, config.chain.block_rate
    measured = {k: _mean_se([r.phases[k] for r in rounds]) for k in PHASES}
    t_bg_model = 1 / (n_miners * lam)
    # our protocol's fork window: the rivals' hashing from the winner's nonce until each sees
    # its block (or forks), so the expected forks are lambda x that exposure
    fork_mean = lam * sum(r.fork_exposure for r in rounds)
    cross_model = sum(r.modelled_cross for r in rounds) / len(rounds)
    out = []
    for term in PHASES:
        mean, se = measured[term]
        if term == "t_cross":
            ok = abs(mean - cross_model) <= REACTION_TOLERANCE_S + DETERMINISTIC_TOLERANCE * mean
            out.append(PhaseComparison(term, mean, se, cross_model, "deterministic", ok))
        elif term == "t_bg":
            out.append(PhaseComparison(term, mean, se, t_bg_model, "statistical",
                                       exponential_mean_agrees(
                                           [r.phases["t_bg"] for r in rounds], t_bg_model)))
        else:
            out.append(PhaseComparison(term, mean, se, mean, "input", True))
    out += _emulated_links(run_dir, rounds)
    forks = sum(r.forks for r in rounds)
    out.append(PhaseComparison("fork_rate", forks / len(rounds), math.sqrt(fork_mean) / len(rounds),
                               fork_mean / len(rounds), "statistical",
                               poisson_count_agrees(forks, fork_mean)))
    path = ("t_dn", "t_local", "t_up", "t_commit", "t_att")
    round_model = sum(measured[k][0] for k in path) + cross_model + t_bg_model
    duration, duration_se = _mean_se([r.duration for r in rounds])
    out.append(PhaseComparison("round", duration, duration_se, round_model, "statistical",
                               _agrees(duration, duration_se, round_model, "statistical")))
    bg_seconds = sum(r.phases["t_bg"] for r in rounds)
    totals = {
        "rounds": float(len(rounds)),
        "first_round": float(rounds[0].round),
        "lambda_per_miner": lam,
        "configured_hash_rate": config.chain.hash_rate,
        "winner_hash_rate": sum(r.attempts for r in rounds) / bg_seconds,
        "mean_updates_per_block": sum(r.updates for r in rounds) / len(rounds),
    }
    return out, totals


def _emulated_links(run_dir: Path, rounds: list[NetworkRound]) -> list[PhaseComparison]:
    """For a run on emulated links (`hosts.json`), each kind of transfer measured on its own
    against the model with the run's own rates (`blockfl.latency.shared_links`: every
    transfer of the run sharing its two links with the others in progress, bytes as frames,
    an idle link's full bucket), round by round over the measured `rounds`: the upload
    (`t_up_link`) and the download (`t_dn_link`) averaged over devices, and the gossip
    exchange (`t_ex_link`) from the round's first copy's first byte to its last copy's last.
    How TCP divides a link among copies decides which ends first, not when the last does (a
    work-conserving link is done with its bytes at the same time whatever the order), so the
    exchange is compared by its span."""
    path = run_dir / HOSTS_FILE
    if not path.is_file():
        return []
    plan = json.loads(path.read_text())
    capacity = {f"{name}:{side}": h[f"{way}_bps"] for name, h in plan["hosts"].items()
                for side, way in (("out", "egress"), ("in", "ingress")) if h[f"{way}_bps"]}
    transfers = [t for t in run_transfers(run_dir)
                 if all(link in capacity for link in links_of(t))]
    ends = modelled_ends(transfers, capacity, float(plan["tcp_goodput"]), plan["burst_bytes"])
    measured_rounds = {r.round for r in rounds}
    out = []
    for term, kind in (("t_up_link", "upload"), ("t_dn_link", "download"),
                       ("t_ex_link", "gossip")):
        by_round: dict[int, list[tuple[Transfer, float]]] = {}
        for t, end in zip(transfers, ends, strict=True):
            if t.kind == kind and t.round in measured_rounds:
                by_round.setdefault(t.round, []).append((t, end))
        if not by_round:
            continue
        mean, se = _mean_se([_round_seconds(kind, [(t, t.end) for t, _ in ts])
                             for ts in by_round.values()])
        model = statistics.fmean(_round_seconds(kind, ts) for ts in by_round.values())
        out.append(PhaseComparison(term, mean, se, model, "link",
                                   abs(mean - model) <= LINK_TOLERANCE * model))
    return out


def _round_seconds(kind: str, ends: list[tuple[Transfer, float]]) -> float:
    """A round's transfers of `kind` with their ends (measured or modelled): the exchange
    from its first byte to its last; an upload or download averaged over devices."""
    if kind == "gossip":
        return max(end for _, end in ends) - min(t.start for t, _ in ends)
    return statistics.fmean(end - t.start for t, end in ends)


def _poisson_cdf(k: int, mean: float) -> float:
    """P(N <= k) for N Poisson of `mean` (0 for k < 0)."""
    term, total = math.exp(-mean), 0.0
    for j in range(k + 1):
        total += term
        term *= mean / (j + 1)
    return total


def exponential_mean_agrees(values: list[float], model_mean: float) -> bool:
    """Whether `values`, draws of an exponential of mean `model_mean` under the model (the
    proof-of-work's time), are as likely as 3 standard errors allow: neither tail of their
    sum's exact distribution (Gamma of shape n: ``P(S > s)`` is a Poisson's ``P(N <= n - 1)``
    of mean s, in units of the mean) below ``TAIL``. The sample's own spread shrinks with its
    mean, so 3 of its standard errors call a run of five short rounds a disagreement that the
    model gives one chance in 20."""
    upper = _poisson_cdf(len(values) - 1, sum(values) / model_mean)
    return min(1.0 - upper, upper) >= TAIL


def poisson_count_agrees(count: int, mean: float) -> bool:
    """Whether `count` events of a Poisson of `mean` (the forks of a run: its rivals' hashes
    after each winner's nonce, at the block rate) are as likely as 3 standard errors allow:
    neither tail of the exact distribution below ``TAIL``. A handful of events is far from
    normal: 2 where 0.12 are expected is a 0.6% event, which 3 standard errors of the normal
    approximation call a disagreement."""
    return min(_poisson_cdf(count, mean), 1.0 - _poisson_cdf(count - 1, mean)) >= TAIL


def fork_count_agrees(forked: int, p_forks: list[float]) -> bool:
    """Whether `forked` rounds of those whose fork probabilities are `p_forks` is as likely
    under the model as 3 standard errors allow: neither tail of the exact (Poisson-binomial)
    distribution of the count below ``TAIL``. A handful of rounds with small
    probabilities is far from normal: 2 forks in 4 rounds at p = 0.03 is a 0.5% event, which
    3 standard errors of the normal approximation call a disagreement."""
    counts = [1.0]  # counts[k]: the probability of k forks among the rounds so far
    for q in p_forks:
        counts = [a * (1 - q) + b * q for a, b in zip([*counts, 0.0], [0.0, *counts],
                                                          strict=True)]
    return min(sum(counts[:forked + 1]), sum(counts[forked:])) >= TAIL


def _agrees(mean: float, se: float, model: float, kind: str) -> bool:
    """Deterministic terms within the relative tolerance, statistical ones within
    ``STATISTICAL_SIGMAS`` standard errors; inputs agree by construction."""
    if kind == "deterministic":
        return abs(mean - model) <= DETERMINISTIC_TOLERANCE * model
    if kind == "statistical":
        return abs(mean - model) <= STATISTICAL_SIGMAS * se
    return True


def plot_comparison(comparisons: list[PhaseComparison], path: Path, source: str) -> Path:
    """Bar chart: measured (with 95% intervals) and model, per latency term."""
    terms = [c for c in comparisons if c.term.startswith("t_") or c.term == "round"]
    from matplotlib.figure import Figure  # here: `blockfl latency --help` stays fast

    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    xs = range(len(terms))
    ax.bar([x - 0.2 for x in xs], [c.measured for c in terms], width=0.4, label="measured",
           yerr=[1.96 * c.stderr for c in terms], capsize=3)
    ax.bar([x + 0.2 for x in xs], [c.model for c in terms], width=0.4, label="model")
    ax.set_xticks(list(xs), [c.term for c in terms])
    ax.set_yscale("log")
    ax.set_ylabel("seconds per round (mean)")
    ax.set_title(f"BlockFL round latency: measured ({source}) vs model")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def register(commands: argparse._SubParsersAction) -> None:
    """Add `latency compare RUN_DIR`."""
    compare = commands.add_parser(
        "compare",
        help="measured per-phase latency of a simulate or network up run against the model",
    )
    compare.add_argument("run_dir", type=Path)
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=compare_command)


def print_comparison(comparisons: list[PhaseComparison], totals: dict[str, float]) -> None:
    """Each term's measured mean (± 95%) against the model, then the totals."""
    print(f"{'term':<10} {'kind':<13} {'measured':>12} {'± 95%':>10} {'model':>12} "
          f"{'rel.err':>8}  agrees")
    for c in comparisons:
        print(f"{c.term:<10} {c.kind:<13} {c.measured:>12.5f} {1.96 * c.stderr:>10.5f} "
              f"{c.model:>12.5f} {c.relative_error:>8.2%}  {'yes' if c.agrees else 'NO'}")
    for key, value in totals.items():
        print(f"{key}: {value:.5f}")


def compare_command(args: argparse.Namespace) -> int:
    """Print the comparison, write latency_compare.{json,png}; exit 1 if a term disagrees.
    A `network up` run directory (with `logs/`) is read from its event logs."""
    network = is_network_run(args.run_dir)
    comparisons, totals = (compare_network if network else compare_run)(args.run_dir)
    source = "network up, event logs" if network else "simulate, emulated links"
    plot = plot_comparison(comparisons, args.run_dir / "latency_compare.png", source)
    report = {"source": "network" if network else "simulate",
              "phases": [asdict(c) | {"relative_error": c.relative_error} for c in comparisons],
              "totals": totals, "plot": plot.name,
              "tolerance": {"deterministic_relative": DETERMINISTIC_TOLERANCE,
                            "statistical_standard_errors": STATISTICAL_SIGMAS,
                            "network_reaction_seconds": REACTION_TOLERANCE_S,
                            "fork_count_tail": TAIL,
                            "emulated_link_relative": LINK_TOLERANCE}}
    (args.run_dir / "latency_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_comparison(comparisons, totals)
        print(f"wrote {args.run_dir / 'latency_compare.json'} and {plot}")
    return 0 if all(c.agrees for c in comparisons) else 1
