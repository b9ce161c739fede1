"""The global models a seeded simulation commits, pinned: a change that makes rounds cheaper
(the scale work) must commit the same models, round by round."""

from __future__ import annotations

from dataclasses import replace

import pytest

from blockfl.config import Config
from blockfl.sim.engine import Simulation


def _config(devices: int, model: str) -> Config:
    c = Config()
    return replace(
        c,
        run=replace(c.run, rounds=2, seed=7),
        data=replace(c.data, dataset="blobs", synthetic_samples=50 * devices),
        model=replace(c.model, name=model),
        network=replace(c.network, devices=devices, miners=3, t_wait=1e9),
        training=replace(c.training, compute_time="modelled"),
        chain=replace(c.chain, ledger="local"),
    )


# taken before the scale work changed the round (numba FedAvg: bit-identical to the torch loop)
PINNED = {
    ("mlp", 24): ["0x1d9587888c780cf8fe35fb935a48d44544c203cdad39bb8ce37cffe9f8b52a10",
                  "0x2d9284d901fefa017ada934c0d674bbb38159387847488aa10017c02690e71ae"],
    ("logreg", 40): ["0x7551205eeaf396e0f725a6740ea783af0ec7cd22d24852d0658430dc9985fd6e",
                     "0x12f0afad4de7432e9f3619a460f5fb277e44da70dc96f120cfefd646952aa51f"],
}


@pytest.mark.parametrize(("model", "devices"), list(PINNED))
def test_seeded_rounds_commit_the_pinned_models(tmp_path, model, devices):
    sim = Simulation(_config(devices, model), tmp_path)
    try:
        hashes = [sim.run_round().global_model_hash for _ in range(2)]
    finally:
        sim.close()
    assert hashes == PINNED[(model, devices)]
