"""The explorer's JSON twins over a real anvil deployment (the browser test covers the pages)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from blockfl.chain.node import free_port, start_anvil, stop_pid
from blockfl.contracts import find_node_modules
from blockfl.events import role_logs
from blockfl.explorer.app import CHART_JS, create_app
from blockfl.explorer.reader import EXCLUDED_EVENT, Explorer
from blockfl.hashing import to_hex
from blockfl.round_phases import forks_per_round, round_table
from tests.test_inspect import BLOCK_MINER, MINERS, PARAMS, SAMPLES, deploy
from tests.test_packaging import ROOT


@pytest.fixture(scope="module")
def chain(anvil_url, tmp_path_factory):
    return deploy(anvil_url, tmp_path_factory.mktemp("explorer"), rounds=2)


def write_logs(folder, events_by_file):
    folder.mkdir(exist_ok=True)
    for name, events in events_by_file.items():
        (folder / name).write_text("".join(json.dumps(e) + "\n" for e in events))


def test_json_twins_show_the_chain(chain, tmp_path):
    logs = tmp_path / "logs"
    write_logs(logs, {
        "miner0.jsonl": [{"ts": 1.0, "event": "mining", "round": 1},
                         {"ts": 1.3, "event": "attestations", "round": 1, "seconds": 0.2},
                         {"ts": 1.5, "event": "committed", "round": 1, "updates": 3},
                         {"ts": 2.0, "event": "fork", "round": 2},
                         {"ts": 2.1, "event": EXCLUDED_EVENT, "round": 2, "device": "0xabc",
                          "update_hash": "0x12", "reason": "norm_outlier"}],
        "miner1.jsonl": [{"ts": 1.6, "event": "adopted", "round": 1},
                         {"ts": 2.5, "event": "committed", "round": 2, "updates": 3},
                         {"ts": 2.2, "event": EXCLUDED_EVENT, "round": 2, "device": "0xabc",
                          "update_hash": "0x12", "reason": "norm_outlier"}],
    })
    explorer = Explorer(chain.ledger, logs=logs)
    with TestClient(create_app(explorer, interval=0.1)) as client:
        explorer.refresh()
        blocks = client.get("/api/blocks").json()
        assert blocks["head"] == 2 and blocks["error"] is None
        receipts = {log["args"]["round"]: chain.ledger.w3.eth.get_transaction_receipt(
            log["transactionHash"])["gasUsed"]
            for log in chain.ledger.contract.events.BlockCommitted().get_logs(from_block=0)}
        for row in blocks["blocks"]:
            r = row["round"]
            assert row["block_hash"] == to_hex(chain.block_hashes[r])
            assert row["miner"] == MINERS[BLOCK_MINER[r]]
            assert row["gas"] == receipts[r] > 0
            assert row["total_samples"] == sum(SAMPLES[r])
            assert row["models_match"] is None  # no miners to check against
        assert [row["forks"] for row in blocks["blocks"]] == [0, 1]
        assert blocks["metrics"] == []
        assert any("--miners" in note for note in blocks["notes"])

        round2 = client.get("/api/rounds/2").json()
        assert [u["samples"] for u in round2["updates"]] == [
            u.samples for u in chain.ledger.accepted_updates(2)]
        assert round2["mining"] == {"miner": MINERS[1], "reward": str(PARAMS.mining_reward)}
        assert round2["excluded"] == [{"device": "0xabc", "update_hash": "0x12",
                                       "reason": "norm_outlier", "detail": ""}]
        missing = client.get("/api/rounds/7")
        assert missing.status_code == 404 and "round 7" in missing.json()["error"]

        rewards = client.get("/api/rewards").json()
        assert rewards["agrees"] is True
        assert len(rewards["events"]) == sum(len(s) for s in SAMPLES.values()) + 2
        assert sum(int(e["reward"]) for e in rewards["events"]) == int(
            rewards["total"]["event_total"])

        latency = client.get("/api/latency").json()
        assert latency["available"] and [r["round"] for r in latency["rows"]] == [1, 2]
        assert latency["rows"][0]["attest"] == pytest.approx(0.2)
        assert latency["rows"][0]["pow"] == pytest.approx(0.3)  # the rest of mining -> commit
        assert latency["rows"][0]["propagate"] == pytest.approx(0.1)

        page = client.get("/rounds/2")
        assert page.status_code == 200 and 'data-api="/api/rounds/2"' in page.text
        assert client.get("/static/explorer.js").status_code == 200
        assert client.get("/static/../app.py").status_code == 404


def test_chart_library_is_the_pinned_npm_package_and_ships_with_its_licence():
    # the package's copy, which a wheel carries (tests/test_packaging.py), is the npm package's
    node_modules = find_node_modules()
    if node_modules is None:
        pytest.skip("npm ci installs chart.js")
    npm = node_modules / "chart.js"
    version = json.loads((ROOT / "package.json").read_text())["dependencies"]["chart.js"]
    assert json.loads((npm / "package.json").read_text())["version"] == version
    assert CHART_JS.read_bytes() == (npm / "dist" / "chart.umd.min.js").read_bytes()
    licence = CHART_JS.parent / "chart.js-LICENSE.md"
    assert licence.read_bytes() == (npm / "LICENSE.md").read_bytes()


def test_the_app_serves_the_packaged_chart_library(chain, tmp_path, monkeypatch):
    # no node_modules anywhere, as in a wheel installed elsewhere
    monkeypatch.setenv("BLOCKFL_NODE_MODULES", str(tmp_path / "none"))
    with TestClient(create_app(Explorer(chain.ledger))) as client:
        reply = client.get("/static/vendor/chart.js")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/javascript")
    assert reply.content == CHART_JS.read_bytes() and b"Chart.js v" in reply.content[:200]


def test_a_stopped_node_keeps_the_last_snapshot_and_says_why(tmp_path):
    node = start_anvil(port := free_port())
    try:
        explorer = Explorer(deploy(f"http://127.0.0.1:{port}", tmp_path, rounds=1).ledger)
        first = explorer.refresh()
        assert first.error is None and first.blocks["head"] == 1
    finally:
        stop_pid(node.pid)
    snapshot = explorer.refresh()
    assert snapshot.error is not None and "ConnectionError" in snapshot.error
    assert snapshot.blocks == first.blocks


def test_forks_counted_per_round(tmp_path):
    write_logs(tmp_path, {"miner0.jsonl": [{"ts": 1, "event": "fork", "round": 3}],
                          "miner12.jsonl": [{"ts": 1, "event": "fork", "round": 3},
                                            {"ts": 2, "event": "fork", "round": 4}],
                          "device0.jsonl": [{"ts": 1, "event": "fork", "round": 9}]})
    assert forks_per_round(role_logs(tmp_path, "miner")) == {3: 2, 4: 1}
    assert round_table(tmp_path) == []  # nothing committed
