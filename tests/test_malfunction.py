"""BlockFL vs vanilla FL under malfunction (blockfl.malfunction.experiment) and its CLI."""

import csv
import json

import pytest
import torch

from blockfl.cli import build_parser
from blockfl.malfunction.experiment import (
    CORRUPTIONS,
    SYSTEMS,
    MalfunctionConfig,
    run_malfunction,
    write_outputs,
)
from blockfl.tensors import tensor_hash

# Seed 2 draws, at p = 0.5: a server malfunction in rounds 1 and 4 (so the last vanilla round is
# corrupted) and 1-2 of the 3 miners malfunctioning in every round; the tests check this.
CONFIG = MalfunctionConfig(rounds=4, devices=6, miners=3, p=0.5, sweep_p=(0.0,), seed=2)


@pytest.fixture(scope="module")
def results():
    return run_malfunction(CONFIG)


def accuracies(results, system, p):
    return [r.accuracy for r in results.trajectory(system, p)]


def test_without_malfunction_the_three_systems_train_identically(results):
    reference = accuracies(results, "vanilla", 0.0)
    assert reference[-1] > 0.8
    for system in SYSTEMS:
        trajectory = results.trajectory(system, 0.0)
        assert [r.accuracy for r in trajectory] == reference
        assert all(r.affected_devices == 0 and r.malfunctions == 0 for r in trajectory)


def test_vanilla_malfunction_hits_every_device_or_none(results):
    vanilla = results.trajectory("vanilla", 0.5)
    assert {r.affected_devices for r in vanilla} == {0, CONFIG.devices}
    assert all(r.trained_on_corrupted == r.affected_devices for r in vanilla)
    assert vanilla[-1].malfunctions == 1  # the server corrupted the last round's model
    verified = results.final("blockfl", 0.5)
    assert vanilla[-1].accuracy < verified.accuracy - 0.03
    assert vanilla[-1].loss > 2 * verified.loss


def test_a_malfunctioning_miner_only_hits_its_own_devices(results):
    unverified = results.trajectory("blockfl-unverified", 0.5)
    assert all(0 < r.malfunctions < CONFIG.miners for r in unverified)
    assert all(0 < r.affected_devices < CONFIG.devices for r in unverified)
    assert all(r.trained_on_corrupted == r.affected_devices for r in unverified)
    assert accuracies(results, "blockfl-unverified", 0.5) != accuracies(results, "blockfl", 0.0)


def test_verification_removes_the_effect_at_the_cost_of_latency(results):
    verified = results.trajectory("blockfl", 0.5)
    clean = results.trajectory("blockfl", 0.0)
    assert [r.accuracy for r in verified] == [r.accuracy for r in clean]
    assert all(r.trained_on_corrupted == 0 for r in verified)
    assert all(r.redownloads == r.affected_devices > 0 for r in verified)
    for dirty, ok in zip(verified, clean, strict=True):
        assert dirty.latency == pytest.approx(ok.latency + results.t_dn)
    assert verified[-1].cumulative_latency > clean[-1].cumulative_latency
    unverified = results.trajectory("blockfl-unverified", 0.5)
    assert [r.latency for r in unverified] == [r.latency for r in clean]


def test_vanilla_rounds_are_faster_than_blockfl_rounds(results):
    vanilla = results.trajectory("vanilla", 0.0)
    assert all(r.latency == results.vanilla_round_latency for r in vanilla)
    assert results.vanilla_round_latency < results.blockfl_expected_latency


def test_every_miner_malfunctioning_stalls_the_verified_system():
    config = MalfunctionConfig(rounds=2, devices=3, miners=1, p=0.5, sweep_p=(), model="logreg")
    results = run_malfunction(config)
    verified = results.trajectory("blockfl", 0.5)
    unverified = results.trajectory("blockfl-unverified", 0.5)
    stalled = [r.stalled_slots for r in verified]
    assert any(stalled)
    assert [r.accuracy for r in verified] != [r.accuracy for r in unverified]
    for v, u, stalls in zip(verified, unverified, stalled, strict=True):
        assert (v.latency > u.latency + stalls * results.t_dn) == bool(stalls)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruption_changes_the_model_hash(kind):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    corrupted = CORRUPTIONS[kind](state, torch.Generator().manual_seed(0))
    assert tensor_hash(corrupted) != tensor_hash(state)
    assert {k: v.shape for k, v in corrupted.items()} == {k: v.shape for k, v in state.items()}


def test_invalid_probability_is_rejected():
    with pytest.raises(ValueError, match="probabilities"):
        MalfunctionConfig(p=1.0)


def test_outputs_are_written(results, tmp_path):
    paths = write_outputs(results, tmp_path)
    assert {p.name for p in paths} == {
        "malfunction_rounds.csv",
        "malfunction_summary.json",
        "malfunction_accuracy.png",
        "malfunction_latency.png",
        "malfunction_accuracy_vs_p.png",
    }
    with open(tmp_path / "malfunction_rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(SYSTEMS) * CONFIG.rounds
    summary = json.loads((tmp_path / "malfunction_summary.json").read_text())
    final = {(run["system"], run["p"]): run["final_accuracy"] for run in summary["runs"]}
    assert final[("blockfl", 0.5)] == results.final("blockfl", 0.5).accuracy
    for name in ("malfunction_accuracy.png", "malfunction_latency.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_cli_prints_tables_and_writes_figures(tmp_path, capsys):
    parser = build_parser()
    argv = ["malfunction", "--rounds", "2", "--devices", "3", "--miners", "2"]
    argv += ["--sweep-p", "0,0.5", "--model", "logreg", "--out", str(tmp_path)]
    args = parser.parse_args([*argv, "--set", "lambda_=0.2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "blockfl-unverified" in out and "final acc" in out
    assert (tmp_path / "malfunction_accuracy_vs_p.png").is_file()
    summary = json.loads((tmp_path / "malfunction_summary.json").read_text())
    assert summary["config"]["latency"]["lambda_"] == 0.2
    assert summary["config"]["latency"]["n_miners"] == 2
