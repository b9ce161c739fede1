"""Wall time per round, split by phase, and peak memory of `simulate` at 100 to 10,000 devices.

Each configuration runs in a fresh process (its peak RSS is its own), the same task at every
size: the `blobs` classification data, 50 samples per device (40 for training); logistic
regression and the MLP; 3 miners; the local SQLite ledger. The first round also pays one-time
costs, so the time per round is the mean of the later ones. The phases add up to the round
(`other`: evaluating the global model on the test split), and `ms per device` is the round
divided by the devices: flat where the round is linear in devices (`CPU ms per device`: the
same with the process's CPU time, which the load of other processes on the machine disturbs
less than the wall time; `GC ms per device`: the part of it spent in Python's garbage
collector, whose full collections scan the whole heap).
Where Flower is installed (`pip install -e '.[bench]'`), Flower's simulation of the same task
(`flower_baseline.py`) runs beside it (up to `--flower-max-devices`, 100 by default: Flower
runs a Ray task per client and round), and the ratio is printed.
Beside it, the machine's memory bandwidth and SHA-256 rate, measured in the same run.

    python benchmarks/bench_scale.py                      # the table (about 15 minutes)
    python benchmarks/bench_scale.py --devices 100 1000   # fewer sizes
    python benchmarks/bench_scale.py --devices 10000 --models mlp --rounds 10   # the target
    python benchmarks/bench_scale.py --devices 100 1000 --ledgers evm-merkle   # embedded EVM
    python benchmarks/bench_scale.py --devices 1000 10000 --models mlp --rounds 2 --profile DIR
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import machine

from blockfl.config import Config

SAMPLES_PER_DEVICE = 50  # of which the test split takes a fifth: 40 for training


def experiment_config(devices: int, model: str, rounds: int, ledger: str = "local") -> Config:
    """The benchmarked experiment, the same task at every size: the `blobs` data with
    `SAMPLES_PER_DEVICE` per device, 3 miners, on the local ledger, or (`evm-merkle`) the
    embedded EVM with Merkle-mode blocks."""
    c = Config()
    chain = (replace(c.chain, ledger="evm", mode="merkle") if ledger == "evm-merkle"
             else replace(c.chain, ledger="local"))
    return replace(
        c,
        run=replace(c.run, rounds=rounds),
        data=replace(c.data, dataset="blobs", synthetic_samples=SAMPLES_PER_DEVICE * devices),
        model=replace(c.model, name=model),
        network=replace(c.network, devices=devices, miners=3, t_wait=1e9),
        training=replace(c.training, compute_time="modelled"),
        chain=replace(chain, max_updates_per_block=max(devices, 1000)),
    )


class GcClock:
    """CPU seconds spent in Python's garbage collector since the last `take`, counted while
    the clock is entered (`with GcClock() as clock:`)."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, 0.0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._note)

    def _note(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def run_one(devices: int, model: str, rounds: int, ledger: str,
            profile: Path | None = None) -> dict:
    """Run one configuration in this process; its phases, times and peak RSS. `profile`: a
    folder for a CPU-time cProfile of the last round (`DEVICES-MODEL-LEDGER.prof`; that
    round's times then include the profiler's overhead)."""
    import torch

    from blockfl.sim.engine import Simulation

    torch.set_num_threads(1)
    c = experiment_config(devices, model, rounds, ledger)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sim = Simulation(c, Path(tmp))
        setup = time.perf_counter() - start
        results = []
        cpu, gc_s = [], []
        with GcClock() as collector:
            for i in range(rounds):
                profiler = cProfile.Profile(time.process_time)
                if profile is not None and i == rounds - 1:
                    profiler.enable()
                start, start_cpu = time.perf_counter(), time.process_time()
                collector.take()
                result = sim.run_round()
                results.append((time.perf_counter() - start, result))
                cpu.append(time.process_time() - start_cpu)
                gc_s.append(collector.take())
                profiler.disable()
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(profile / f"{devices}-{model}-{ledger}.prof")
        sim.close()
    later = results[1:] or results
    phases = {k: sum(r.phases[k] for _, r in later) / len(later) for k in later[0][1].phases}
    return {
        "devices": devices, "model": model, "data": c.data.dataset, "ledger": ledger,
        "rounds": rounds,
        "setup_s": setup, "first_round_s": results[0][0],
        "round_s": sum(t for t, _ in later) / len(later), "phases": phases,
        "round_cpu_s": sum(cpu[1:] or cpu) / len(later),
        "round_gc_s": sum(gc_s[1:] or gc_s) / len(later),
        "total_s": setup + sum(t for t, _ in results),
        "metric": results[-1][1].metrics,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


SHORT = {
    "local_training": "train+sign", "upload_and_cross_verification": "verify",
    "aggregation": "aggregate", "proof_of_work": "pow", "attestation": "attest",
    "block_commit": "commit", "block_propagation_and_check": "block check",
    "global_model_download_and_check": "download",
}


def flower_round_s(devices: int, model: str, rounds: int, env: dict[str, str]) -> float | None:
    """Seconds per round of Flower's simulation of the same task; None without Flower."""
    if importlib.util.find_spec("flwr") is None:
        return None
    script = Path(__file__).with_name("flower_baseline.py")
    out = subprocess.run([sys.executable, str(script), str(devices), model, str(rounds)],
                         capture_output=True, text=True, env=env, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["flower_round_s"])


def main() -> None:
    """Run each configuration in a child process and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--models", nargs="+", default=["logreg", "mlp"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flower-max-devices", type=int, default=100,
                        help="run Flower's simulation beside ours up to this many devices")
    parser.add_argument("--ledgers", nargs="+", default=["local"], choices=["local", "evm-merkle"])
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="write a CPU-time cProfile of each configuration's last round here")
    parser.add_argument("--one", nargs=3, metavar=("DEVICES", "MODEL", "LEDGER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1], args.rounds, args.one[2],
                                 args.profile)))
        return
    print(machine.describe() + ", one torch thread per process")
    header = ["devices", "model", "data", "ledger", "round s", "ms per device",
              "CPU ms per device", "GC ms per device", *SHORT.values(),
              "other", "setup s",
              f"{args.rounds} rounds s", "peak RSS MB", "metric", "Flower round s",
              "Flower / ours"]
    print(" | ".join(header))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    runs = [(d, m, ledger) for ledger in args.ledgers for d in args.devices for m in args.models]
    for devices, model, ledger in runs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(devices), model, ledger, "--rounds",
             str(args.rounds), *(["--profile", str(args.profile)] if args.profile else [])],
            capture_output=True, text=True, env=env, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        metric = ", ".join(f"{k} {v:.3f}" for k, v in r["metric"].items())
        other = r["round_s"] - sum(r["phases"][k] for k in SHORT)  # evaluating the model
        cells = [r["devices"], r["model"], r["data"], ledger, f"{r['round_s']:.2f}",
                 f"{1000 * r['round_s'] / r['devices']:.2f}",
                 f"{1000 * r['round_cpu_s'] / r['devices']:.2f}",
                 f"{1000 * r['round_gc_s'] / r['devices']:.3f}",
                 *(f"{r['phases'][k]:.2f}" for k in SHORT), f"{other:.2f}", f"{r['setup_s']:.1f}",
                 f"{r['total_s']:.0f}", f"{r['peak_rss_mb']:.0f}", metric]
        flower = (flower_round_s(devices, model, args.rounds, env)
                  if devices <= args.flower_max_devices and ledger == "local" else None)
        cells += [f"{flower:.2f}", f"{flower / r['round_s']:.1f}"] if flower else ["-", "-"]
        print(" | ".join(str(c) for c in cells), flush=True)


if __name__ == "__main__":
    main()
