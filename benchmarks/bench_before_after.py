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

Without `--before` it makes that install itself from the commit before the task API
(`BEFORE`): a git worktree in a temporary directory and a venv that reuses this one's
packages, both removed at the end (needs the git checkout; nothing is downloaded).

    .venv/bin/python benchmarks/bench_before_after.py [--before PYTHON] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the last commit before the task API (93de54b)
BEFORE = "524a808"


@contextmanager
def before_install() -> Iterator[str]:
    """The python of an editable install of `BEFORE`, reusing this interpreter's packages."""
    with tempfile.TemporaryDirectory(prefix="blockfl-before-") as tmp:
        tree, venv = Path(tmp) / "tree", Path(tmp) / "venv"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), BEFORE],
                       check=True, capture_output=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            python = venv / "bin" / "python"
            where = "import site; print(site.getsitepackages()[0])"
            site = subprocess.run([str(python), "-c", where], check=True, capture_output=True,
                                  text=True).stdout.strip()
            ours = sysconfig.get_paths()["purelib"]
            Path(site, "reuse.pth").write_text(f"{ours}\n")
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                            "--no-build-isolation", "-e", str(tree)], check=True,
                           capture_output=True)
            yield str(python)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)


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
    parser.add_argument("--before", help=f"the python of the install before (default: make one "
                                         f"from {BEFORE})")
    parser.add_argument("--after", default=sys.executable, help="the python of this install")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.before is None:
        with before_install() as python:
            args.before = python
            compare(args)
    else:
        compare(args)


def compare(args: argparse.Namespace) -> None:
    """Run both sides `args.repeats` times and print the ratios."""
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
