"""Whole BlockFL rounds in one process on real ledgers, honest and under attack."""

from __future__ import annotations

import math

import pytest
import torch

from blockfl.config import Config, load_config
from blockfl.hashing import keccak
from blockfl.keys import derived_key
from blockfl.miners.node import MinerNode
from blockfl.signing import SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.sim.runner import run_experiment
from blockfl.tensors import encode, tensor_hash
from blockfl.wire import UpdateSubmission
from tests.conftest import small_config


def test_demo_config_file_matches_defaults():
    from blockfl.config import DEFAULT_CONFIG

    assert load_config(DEFAULT_CONFIG) == Config()


@pytest.mark.parametrize("ledger", ["evm", "local"])
def test_rounds_commit_train_and_pay(tmp_path, ledger):
    config = small_config(tmp_path, chain={"ledger": ledger})
    summary = run_experiment(config)
    rounds = summary.rounds
    assert [r.round for r in rounds] == [1, 2, 3]
    assert all(r.accepted == 5 and r.rejected == 0 for r in rounds)
    assert rounds[-1].metrics["accuracy"] > rounds[0].metrics["accuracy"] - 0.02
    assert rounds[-1].metrics["accuracy"] > 0.8
    assert summary.hashes_agree and summary.rewards_match
    ledger_ = summary.simulation.ledger
    assert ledger_.head().round == 3
    # rewards exactly proportional to accepted samples
    rate = ledger_.params().reward_per_sample
    shards = {d.address: len(d.shard) for d in summary.simulation.devices}
    for row in summary.rewards:
        if row.role == "device":
            assert row.samples == 3 * shards[row.address]
            assert row.balance == row.samples * rate
    mined = sum(r.blocks for r in summary.rewards if r.role == "miner")
    assert mined == 3
    run_dir = summary.run_dir
    for name in ("config.toml", "metrics.jsonl", "report.json", "accuracy.png"):
        assert (run_dir / name).exists(), name
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_local_and_evm_ledgers_agree(tmp_path):
    evm = run_experiment(small_config(tmp_path / "a", chain={"ledger": "evm"}))
    local = run_experiment(small_config(tmp_path / "b", chain={"ledger": "local"}))
    assert [r.global_model_hash for r in evm.rounds] == [r.global_model_hash for r in local.rounds]
    assert [r.block_hash for r in evm.rounds] == [r.block_hash for r in local.rounds]
    assert evm.simulation.ledger.domain == local.simulation.ledger.domain
    assert [(r.role, r.address, r.balance) for r in evm.rewards] == [
        (r.role, r.address, r.balance) for r in local.rewards
    ]


def test_same_seed_same_run(tmp_path):
    a = run_experiment(small_config(tmp_path / "a", chain={"ledger": "local"}))
    b = run_experiment(small_config(tmp_path / "b", chain={"ledger": "local"}))
    assert [r.global_model_hash for r in a.rounds] == [r.global_model_hash for r in b.rounds]
    assert [r.winner for r in a.rounds] == [r.winner for r in b.rounds]


# ---------------------------------------------------------------- attacks inside a round

ATTACKER = derived_key("attacker", 0)


def _submission(miner: MinerNode, key: bytes, delta, *, samples=50, ms=1000, round_=None,
                base=None, device=None, signer=None) -> UpdateSubmission:
    record = UpdateRecord(
        device=device or address_of(key),
        round=round_ if round_ is not None else miner.round,
        base_model_hash=base if base is not None else miner.head.global_model_hash,
        update_hash=tensor_hash(delta),
        samples=samples,
        compute_time_ms=ms,
    )
    signature = sign_update(signer or key, record, miner.ledger.domain)
    return UpdateSubmission(SignedUpdate(record, signature), encode(delta))


def test_bad_updates_rejected_honest_ones_land(tmp_path):
    config = small_config(
        tmp_path,
        chain={"ledger": "local"},
        verification={"max_payload_bytes": 200_000, "norm_bound": 100.0,
                      "min_ms_per_sample": 0.01},
        run={"rounds": 2, "out_dir": str(tmp_path), "name": "attacked", "seed": 0},
    )
    verdicts: dict[int, dict[str, str]] = {}
    kept: dict[str, UpdateSubmission] = {}

    def attack(round_: int, miners: list[MinerNode]) -> None:
        miner = miners[0]
        zeros = {k: torch.zeros_like(v) for k, v in miner.base_state.items()}
        honest = _submission(miner, ATTACKER, zeros)
        victim = miners[1].pending_devices()[0] if miners[1].pending_devices() else None
        cases = {
            "forged signature": _submission(miner, ATTACKER, zeros, device=victim or
                                            address_of(derived_key("x", 1))),
            "another device's signature": UpdateSubmission(
                SignedUpdate(honest.signed.record, _submission(
                    miner, derived_key("other", 0), zeros).signed.signature), honest.payload),
            "stale base model": _submission(miner, ATTACKER, zeros, base=keccak(b"old")),
            "wrong shapes": _submission(miner, ATTACKER,
                                        {k: torch.zeros(3, 3) for k in zeros}),
            "NaN": _submission(miner, ATTACKER, {k: torch.full_like(v, math.nan)
                                                 for k, v in zeros.items()}),
            "Inf": _submission(miner, ATTACKER, {k: torch.full_like(v, math.inf)
                                                 for k, v in zeros.items()}),
            "oversized payload": _submission(miner, ATTACKER,
                                             {**zeros, "padding": torch.zeros(100_000)}),
            "huge norm": _submission(miner, ATTACKER, {k: torch.full_like(v, 1e3)
                                                       for k, v in zeros.items()}),
            "inflated samples, short compute time": _submission(
                miner, ATTACKER, zeros, samples=90_000, ms=5),
        }
        if round_ == 2:
            cases["replay from an earlier round"] = kept["round1"]
        else:
            kept["round1"] = miners[0].pending_submissions()[0]
        verdicts[round_] = {}
        for name, submission in cases.items():
            verdict = miner.receive_upload(submission)
            verdicts[round_][name] = verdict.reason
            assert not verdict.accepted, name

    summary = run_experiment(config, inject=attack)
    expected = {
        "forged signature": "bad_signature",
        "another device's signature": "bad_signature",
        "stale base model": "stale_base_model",
        "wrong shapes": "shape_mismatch",
        "NaN": "non_finite",
        "Inf": "non_finite",
        "oversized payload": "payload_too_large",
        "huge norm": "norm_bound",
        "inflated samples, short compute time": "implausible_compute_time",
    }
    for round_ in (1, 2):
        for name, reason in expected.items():
            assert verdicts[round_][name] == reason, (round_, name)
    assert verdicts[2]["replay from an earlier round"] in {"replay", "wrong_round"}
    ledger = summary.simulation.ledger
    attacker = address_of(ATTACKER)
    assert ledger.balance_of(attacker) == 0
    assert all(u.device != attacker for u in ledger.accepted_updates())
    assert all(r.accepted == 5 for r in summary.rounds)  # honest updates still land
    assert summary.hashes_agree and summary.rewards_match
