"""One `simulate` run by two installs of BlockFL side by side: the seconds per round at 1,000
devices of the tree before the task API (issue 19: "no more than 5% slower than before")
against this one, on the same task, seed and machine.

Each repetition runs the same command once with each interpreter, in alternating order, so
the shared machine's drifting load falls on both alike. The command is bench_scale's
experiment as flags (blobs, 50 samples per device, logistic regression, 3 miners, local
ledger, modelled compute time). Printed per repetition: each side's steady round (mean wall
seconds of rounds 2 on, from the phases in `metrics.jsonl`; round 1 also pays one-time
imports), its round 1 and its whole process, and after/before; then the median and worst
ratio of steady rounds and of whole processes, and whether both sides ended with the same
global model hash.

Make the "before" install from the commit before the task API (524a808):

    git worktree add --detach /tmp/before 524a808
    python3.11 -m venv /tmp/before/.venv
    /tmp/before/.venv/bin/pip install -q -e /tmp/before   # or reuse this venv's packages
    .venv/bin/python benchmarks/bench_before_after.py --before /tmp/before/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def command(python: str, devices: int, rounds: int) -> list[str]:
    """bench_scale's experiment at `devices` devices as `simulate` flags."""
    return [python, "-m", "blockfl.cli", "simulate", "--devices", str(devices), "--miners", "3",
            "--rounds", str(rounds), "--ledger", "local", "--data-dataset", "blobs",
            "--data-synthetic-samples", str(50 * devices), "--model-name", "logreg",
            "--network-t-wait", "1e9", "--training-compute-time", "modelled",
            "--chain-max-updates-per-block", str(max(devices, 1000)), "--seed", "0"]


def run(python: str, devices: int, rounds: int) -> dict:
    """One run: its rounds' wall seconds, the process's, and the final global model hash."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(command(python, devices, rounds), cwd=tmp, check=True,
                       capture_output=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - start
        metrics = next(Path(tmp).glob("runs/*/metrics.jsonl")).read_text().splitlines()
    rounds_s = [sum(json.loads(line)["phases"].values()) for line in metrics]
    return {"steady": statistics.mean(rounds_s[1:]), "first": rounds_s[0], "wall": wall,
            "hash": json.loads(metrics[-1])["global_model_hash"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the python of the install before")
    parser.add_argument("--after", default=sys.executable, help="the python of this install")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ratios, walls, hashes = [], [], set()
    print(f"{args.devices} devices, {args.rounds} rounds; seconds: steady round (round 1, process)")
    for rep in range(args.repeats):
        order = ("before", "after") if rep % 2 == 0 else ("after", "before")
        got = {side: run(getattr(args, side), args.devices, args.rounds) for side in order}
        ratio = got["after"]["steady"] / got["before"]["steady"]
        ratios.append(ratio)
        walls.append(got["after"]["wall"] / got["before"]["wall"])
        hashes |= {g["hash"] for g in got.values()}
        cells = "   ".join(f"{side} {g['steady']:.3f} ({g['first']:.3f}, {g['wall']:.1f})"
                           for side, g in got.items())
        print(f"  repeat {rep + 1}: {cells}   after/before {ratio:.3f}")
    print(f"after/before, steady round: median {statistics.median(ratios):.3f}, worst "
          f"{max(ratios):.3f}, best {min(ratios):.3f}")
    print(f"after/before, whole process: median {statistics.median(walls):.3f}, worst "
          f"{max(walls):.3f}, best {min(walls):.3f}")
    print(f"same final global model hash: {'yes' if len(hashes) == 1 else 'no'}")


if __name__ == "__main__":
    main()
