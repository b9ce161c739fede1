"""The README's process-network walkthrough, run exactly as written (free ports chosen through
the variables its first lines read from the environment): every miner commits blocks and no
commit fails for want of a quorum (a miner used to count itself among its `--peers`)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest

from blockfl.chain.node import find_anvil, free_port, port_in_use
from blockfl.events import read_events

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 24


def walkthrough() -> str:
    """The bash block of the README section "A local network of processes"."""
    section = ROOT.joinpath("README.md").read_text().split("## A local network of processes")[1]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


def free_ports_after(count: int = 3) -> int:
    """A port P such that P+1 .. P+count are free (the walkthrough's miners listen there)."""
    rng = random.Random(os.getpid())
    while True:
        base = rng.randrange(20_000, 60_000)
        if not any(port_in_use(base + i) for i in range(1, count + 1)):
            return base


def test_the_readme_walkthrough_has_every_miner_committing(tmp_path):
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")  # "from the repository root"
    ports = {"CHAIN_PORT": free_port(), "MINER_PORT": free_ports_after()}
    # 24 rounds: each of 3 miners (equal hash rates) wins none with chance (2/3)^24 < 1e-4
    env = os.environ | {k: str(v) for k, v in ports.items()} | {"ROUNDS": str(ROUNDS)}
    shell = subprocess.Popen(["bash", "-c", walkthrough()], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        out, _ = shell.communicate(timeout=600)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
        subprocess.run([str(ROOT / ".venv/bin/blockfl"), "chain", "down"], cwd=tmp_path,
                       capture_output=True, timeout=60)
    assert shell.returncode == 0, out[-3000:]
    assert "earned" in out and "Traceback" not in out, out[-3000:]
    logs = [read_events(tmp_path / "runs" / f"miner{i}.jsonl") for i in (1, 2, 3)]
    for i, events in enumerate(logs, start=1):
        dropped = [e for e in events if e["event"] == "own_peer_dropped"]
        assert [e["peer"] for e in dropped] == [f"http://127.0.0.1:{ports['MINER_PORT'] + i}"]
        text = json.dumps(events)
        assert "QuorumNotReached" not in text, f"miner {i}"
        # every race this miner won (it gathered its quorum) ended in its block or a fork
        won = {e["round"] for e in events if e["event"] == "attestations"}
        ended = {e["round"] for e in events if e["event"] in ("committed", "fork")}
        assert won <= ended, f"miner {i}"
        assert not [e for e in events if e["event"] == "error"], f"miner {i}"
    committers = [sum(e["event"] == "committed" for e in events) for events in logs]
    assert sum(committers) == ROUNDS and all(c > 0 for c in committers), committers
