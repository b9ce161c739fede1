"""`--engine ray` trains the devices on Ray actors and gives the local engine's results."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from blockfl.sim.runner import run_experiment
from tests.conftest import small_config

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -e '.[ray]' (make install does)"
)


def _report(config, run_dir) -> dict:
    summary = run_experiment(config, run_dir=run_dir)
    assert summary.hashes_agree and summary.rewards_match
    return json.loads((run_dir / "report.json").read_text())


def test_ray_engine_gives_the_same_hashes_and_rewards_as_local(tmp_path):
    config = small_config(tmp_path, network={"devices": 7}, chain={"ledger": "local"},
                          model={"name": "mlp"})
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
    assert len({r["global_model_hash"] for r in local["rounds"]}) == config.run.rounds
