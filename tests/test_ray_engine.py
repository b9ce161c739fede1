"""`--engine ray` trains the devices on Ray actors and gives the local engine's results: on a
cluster of its own, and on one that `ray start --head` started, as the README shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from blockfl.chain.node import free_port, wait_for_port
from blockfl.cli import main
from blockfl.sim.runner import run_experiment
from tests.conftest import small_config

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -e '.[ray]' (make install does)"
)


def _report(config, run_dir) -> dict:
    summary = run_experiment(config, run_dir=run_dir)
    assert summary.hashes_agree and summary.rewards_match
    return json.loads((run_dir / "report.json").read_text())


#: DP-SGD (Opacus on each device's actor) with a budget that stops the small shards early
DP_SGD = {"privacy": {"mode": "dp_sgd", "noise_multiplier": 1.0, "epsilon_budget": 5.0},
          "training": {"epochs": 1, "batch_size": 32}}


@pytest.mark.parametrize("extra", [{}, DP_SGD], ids=["plain", "dp_sgd"])
def test_ray_engine_gives_the_same_hashes_and_rewards_as_local(tmp_path, extra):
    if extra:
        pytest.importorskip("opacus")
    config = small_config(tmp_path, network={"devices": 7}, chain={"ledger": "local"},
                          model={"name": "mlp"}, **extra)
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local = _report(config, tmp_path / "local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = _report(replace(config, run=replace(config.run, engine="ray")), tmp_path / "ray")
    finally:
        ray.shutdown()
    for key in ("global_model_hash", "block_hash", "samples", "accepted", "winner"):
        assert [r[key] for r in remote["rounds"]] == [r[key] for r in local["rounds"]]
    assert remote["rewards"] == local["rewards"]
    assert remote["chain_head"] == local["chain_head"]
    if extra:  # trained with Opacus on both engines, charged alike
        assert local["privacy"]["mode"] == "dp_sgd"
        assert remote["privacy"] == local["privacy"]
    assert len({r["global_model_hash"] for r in local["rounds"]}) == config.run.rounds
    # the actors' start-up (a process each: imports, data, devices) is set-up, not training
    # (with DP-SGD, round 1's training itself takes longer than the start-up)
    if not extra:
        assert remote["setup_seconds"]["trainer"] > remote["rounds"][0]["phases"][
            "local_training"]


#: what both runs of the README recipe simulate (modelled compute times: reproducible blocks)
RUN = ["simulate", "--devices", "7", "--miners", "3", "--rounds", "2", "--ledger", "local",
       "--model-name", "mlp", "--training-compute-time", "modelled", "--json"]
#: `ray start --head` on loopback, with ports of its own (never Ray's fixed defaults)
PORT_FLAGS = ("--port", "--object-manager-port", "--node-manager-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--runtime-env-agent-port", "--metrics-export-port")
HEAD_IP = "127.0.0.2"  # Ray refuses 127.0.0.1 as a node address; any other loopback one serves


def ray_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


@pytest.fixture
def ray_head():
    """`ray start --head --block` as a user runs it on a machine where Ray ran before (a token
    in ~/.ray/auth_token: the head turns token authentication on), with a home, temp dir and
    ports of its own; stopped by its pid, never by `ray stop` (which stops every Ray cluster of
    the machine). Yields (address, the environment of this machine's user)."""
    root = Path(tempfile.mkdtemp(prefix="blockfl-ray-"))  # short: Ray's socket paths live in it
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(root / "home"), "OMP_NUM_THREADS": "1"}
    subprocess.run(ray_cli("get-auth-token", "--generate"), env=env, check=True,
                   capture_output=True)
    ports = [free_port() for _ in PORT_FLAGS]
    flags = [f"{flag}={port}" for flag, port in zip(PORT_FLAGS, ports, strict=True)]
    log = open(root / "head.log", "wb")  # noqa: SIM115
    head = subprocess.Popen(
        ray_cli("start", "--head", "--block", f"--node-ip-address={HEAD_IP}",
                f"--temp-dir={root / 'ray'}", "--num-cpus=1", "--include-dashboard=false",
                "--disable-usage-stats", *flags),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(ports[0], timeout=120, host=HEAD_IP)
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (root / "head.log").read_bytes():
            assert head.poll() is None and time.monotonic() < deadline, (
                (root / "head.log").read_text())
            time.sleep(0.5)
        assert b"Token authentication is enabled" in (root / "head.log").read_bytes()
        yield f"{HEAD_IP}:{ports[0]}", env
    finally:
        head.terminate()  # the head drains and stops its own processes, no others
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_the_readme_recipe_ray_start_head_then_ray_address_gives_the_local_results(
        ray_head, tmp_path, capsys):
    address, env = ray_head
    assert main([*RUN, "--run-out-dir", str(tmp_path), "--run-name", "local"]) == 0
    local = json.loads(capsys.readouterr().out)
    done = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", *RUN, "--run-out-dir", str(tmp_path),
         "--run-name", "ray", "--engine", "ray", "--ray-address", address],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    remote = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert remote["config"]["run"]["engine"] == "ray"
    for key in ("global_model_hash", "block_hash", "samples", "accepted", "winner"):
        assert [r[key] for r in remote["rounds"]] == [r[key] for r in local["rounds"]]
    assert remote["rewards"] == local["rewards"]
    assert remote["chain_head"] == local["chain_head"]
