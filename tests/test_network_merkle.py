"""`blockfl network up --mode merkle --quorum 2`: real processes commit Merkle blocks that two
miners attest, devices claim their rewards, and each device holds samples x rewardPerSample."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from blockfl.chain.node import find_anvil
from blockfl.events import read_events

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]


def test_network_up_in_merkle_mode_with_a_quorum_of_two(tmp_path):
    run_dir = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", "--miners", "3", "--devices", "3",
         "--rounds", "2", "--mode", "merkle", "--quorum", "2", "--run-dir", str(run_dir),
         "--json", "--model-name", "logreg", "--network-t-wait", "4"],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert [b["round"] for b in summary["blocks"]] == [1, 2]
    deployment = json.loads((run_dir / "deployment.json").read_text())
    assert deployment["parameters"]["mode"] == "merkle"
    assert deployment["parameters"]["quorum"] == 2
    rate = int(deployment["parameters"]["reward_per_sample"])

    # what each device says it uploaded and saw included, against what the chain paid it
    balances = {r["address"]: int(r["balance"]) for r in summary["rewards"]}
    paid_devices = 0
    for j in range(3):
        events = read_events(run_dir / "logs" / f"device{j}.jsonl")
        uploaded = {e["round"]: e["samples"] for e in events if e["event"] == "uploaded"}
        included = [e["round"] for e in events if e["event"] == "block" and e["included"]]
        address = next(e["address"] for e in events if e["event"] == "started")
        assert any(e["event"] == "claimed" for e in events)
        expected = sum(uploaded[r] for r in included) * rate
        assert balances.get(address, 0) == expected, j
        paid_devices += expected > 0
    assert paid_devices == 3
    assert all(r["agrees"] for r in summary["rewards"])
    # every block was attested by a quorum: the committer logged the attestations it gathered
    gathered = [e for i in range(3) for e in read_events(run_dir / "logs" / f"miner{i}.jsonl")
                if e["event"] == "attestations"]
    assert len(gathered) >= 2 and all(e["attesters"] >= 2 for e in gathered)
