"""A network of processes on per-device files: `data split` writes one file per device, `network
up`'s devices each read only their own (every file a process opens is recorded by an audit hook
in the processes), sign exactly their file's sample count, and the global model is evaluated
by `model evaluate --test-data` and the explorer on the split's test file."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from blockfl import launcher
from blockfl.chain.node import find_anvil
from blockfl.cli import main
from blockfl.client import MinerClient
from blockfl.events import read_events
from blockfl.explorer.reader import Explorer
from blockfl.launcher import LocalNetwork
from tests.conftest import small_config

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]

# every process of the network imports this first (PYTHONPATH) and appends each file under
# BLOCKFL_TEST_WATCH it opens to BLOCKFL_TEST_OPENS/<pid>.txt
SITECUSTOMIZE = '''
import os, sys
_watch, _out = os.environ.get("BLOCKFL_TEST_WATCH"), os.environ.get("BLOCKFL_TEST_OPENS")
if _watch and _out:
    def _hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(_watch):
                with open(os.path.join(_out, f"{os.getpid()}.txt"), "a") as f:
                    f.write(path + "\\n")
    sys.addaudithook(_hook)
'''


def test_devices_read_only_their_own_files(tmp_path, monkeypatch, capsys):
    split = tmp_path / "split"
    assert main(["data", "split", "--out", str(split), "--devices", "3", "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    hook, opens = tmp_path / "hook", tmp_path / "opens"
    hook.mkdir()
    opens.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setattr(launcher, "CHILD_ENV", launcher.CHILD_ENV | {
        "PYTHONPATH": str(hook), "BLOCKFL_TEST_WATCH": str(split),
        "BLOCKFL_TEST_OPENS": str(opens)})
    config = small_config(tmp_path, run={"rounds": 2, "out_dir": str(tmp_path)},
                          network={"devices": 3, "miners": 2, "t_wait": 30.0},
                          model={"name": "mlp"},
                          chain={"block_rate": 2.0, "hash_rate": 20_000.0})
    config = replace(config, data=replace(
        config.data, device_files=str(split / "device-{index:04d}.npz")))
    run_dir = tmp_path / "net"
    with LocalNetwork(config, run_dir) as network:
        network.wait_for_round(2, timeout=600)
        ledger = network.ledger
        urls = [network.miner_url(i) for i in range(2)]
        explorer = Explorer(ledger, [MinerClient(u, timeout=10) for u in urls], config,
                            test_data=split / "test.npz")
        for _ in range(40):  # until a miner serves each round's model
            snapshot = explorer.refresh()
            if snapshot.error is None and len(snapshot.blocks["metrics"]) == 2:
                break
            time.sleep(0.5)
        assert snapshot.error is None, snapshot.error
        # each process opened at most one split file; the devices opened one each, their own
        opened = [set(p.read_text().split()) for p in opens.iterdir()]
        assert all(len(o) == 1 for o in opened), opened
        assert sorted(o.pop() for o in opened) == [f["file"] for f in files[:3]]
        # each device logged and signed exactly its file's samples
        for j in range(3):
            data = [e for e in read_events(run_dir / "logs" / f"device{j}.jsonl")
                    if e["event"] == "data"]
            assert data[0]["source"] == files[j]["file"]
            assert data[0]["samples"] == files[j]["samples"]
        sizes = sorted(f["samples"] for f in files[:3])
        for r in (1, 2):
            assert ledger.get_block(r).total_samples == sum(sizes)
        assert sorted(u.samples for u in ledger.accepted_updates() if u.round == 1) == sizes
        # the explorer and `model evaluate` measure the global model on the split's test file
        curve = snapshot.blocks["metrics"]  # the explorer's accuracy chart
        assert [m["round"] for m in curve] == [1, 2] and curve[-1]["accuracy"] > 0.5
        exported = tmp_path / "round2.safetensors"
        assert main(["model", "export", "2", "--out", str(exported),
                     "--run-dir", str(run_dir)]) == 0
        capsys.readouterr()
        assert main(["model", "evaluate", str(exported), "--config", str(run_dir / "config.toml"),
                     "--test-data", str(split / "test.npz"), "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["samples"] == files[3]["samples"] and metrics["accuracy"] > 0.5
