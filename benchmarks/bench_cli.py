"""Time `blockfl --help` and every subcommand's `--help` as a new process, against the time of a
bare `python -c pass` measured in the same run (the interpreter's own start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from blockfl.cli import COMMANDS

BLOCKFL = Path(sys.executable).with_name("blockfl")
REPEATS = 3


def best_seconds(argv: list[str]) -> float:
    """The fastest of REPEATS runs of `argv` (output discarded)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                       check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Print one line per command: seconds and the ratio to a bare interpreter start."""
    bare = best_seconds([sys.executable, "-c", "pass"])
    print(f"bare `python -c pass`: {bare:.3f} s (best of {REPEATS})")
    print(f"{'command':<26}{'seconds':>9}{'x bare python':>15}")
    for command in ["", *COMMANDS]:
        seconds = best_seconds([str(BLOCKFL), *filter(None, [command]), "--help"])
        label = f"blockfl {command} --help".replace("  ", " ")
        print(f"{label:<26}{seconds:>9.3f}{seconds / bare:>15.1f}")


if __name__ == "__main__":
    main()
