"""`blockfl simulate --rpc-url URL` on a real anvil leaves a run directory the chain tools open:
its deployment.json and its miners' model stores, as a `network up` run directory has."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from blockfl.chain.deployment import Deployment
from blockfl.cli import main
from blockfl.explorer.app import create_app
from blockfl.explorer.reader import Explorer
from blockfl.tensors import decode, tensor_hash

pytestmark = pytest.mark.anvil


def test_a_simulation_on_a_node_is_opened_by_inspect_model_export_explorer_and_claim(
        anvil_url, tmp_path, capsys):
    assert main(["simulate", "--rpc-url", anvil_url, "--devices", "4", "--miners", "2",
                 "--rounds", "2", "--run-out-dir", str(tmp_path), "--run-name", "sim",
                 "--json"]) == 0
    run_dir = tmp_path / "sim"
    report = json.loads((run_dir / "report.json").read_text())
    deployment_path = run_dir / "deployment.json"
    deployment = Deployment.read(deployment_path)
    assert deployment.rpc_url == anvil_url and deployment.contract == report["ledger"]["contract"]
    assert deployment.chain_id == report["ledger"]["chain_id"] == 31337
    capsys.readouterr()

    assert main(["inspect", "blocks", "--deployment", str(deployment_path), "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)
    assert [b["block_hash"] for b in blocks] == [r["block_hash"] for r in report["rounds"]]

    out = tmp_path / "round2.safetensors"
    assert main(["model", "export", "2", "--run-dir", str(run_dir), "--out", str(out)]) == 0
    data = out.read_bytes()
    assert "0x" + tensor_hash(decode(data, max_bytes=len(data))).hex() == (
        report["chain_head"]["global_model_hash"])

    explorer = Explorer(deployment.ledger())
    with TestClient(create_app(explorer)) as client:
        explorer.refresh()
        assert client.get("/api/blocks").json()["head"] == 2

    capsys.readouterr()
    assert main(["claim", "--key", "dev:9", "--miners", "http://127.0.0.1:9", "--list",
                 "--deployment", str(deployment_path)]) == 0
    assert "direct mode" in capsys.readouterr().out  # opened the deployment; nothing to claim
