"""BlockFL vs vanilla FL under malfunction (blockfl.malfunction) and its CLI."""

import csv
import json
import math
import statistics
from dataclasses import replace

import pytest
import torch

from blockfl.cli import main
from blockfl.config import Config, MalfunctionConfig, NetworkConfig, RunConfig
from blockfl.latency import model
from blockfl.latency.model import LatencyParams
from blockfl.malfunction.corruption import CORRUPTIONS
from blockfl.malfunction.experiment import MalfunctionResults, run_malfunction
from blockfl.malfunction.handouts import SYSTEMS
from blockfl.malfunction.outputs import write_outputs
from blockfl.malfunction.plots import time_to_target_figure
from blockfl.malfunction.time_to_accuracy import TimeToTarget, summarize, times_to_target
from blockfl.malfunction.timing import vanilla_latency
from blockfl.sim.setup import build_experiment
from blockfl.tensors import tensor_hash

# Seed 2 draws, at p = 0.5: a server malfunction in rounds 1 and 4 (so the last vanilla round is
# corrupted) and 1-2 of the 3 miners malfunctioning in every round; the tests check this.
CONFIG = Config(
    run=RunConfig(rounds=4, seed=2),
    network=NetworkConfig(devices=6, miners=3),
    malfunction=MalfunctionConfig(p=0.5, sweep_p=(0.0,)),
)
DEVICES, MINERS = CONFIG.network.devices, CONFIG.network.miners


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
    assert {r.affected_devices for r in vanilla} == {0, DEVICES}
    assert all(r.trained_on_corrupted == r.affected_devices for r in vanilla)
    assert vanilla[-1].malfunctions == 1  # the server corrupted the last round's model
    verified = results.final("blockfl", 0.5)
    assert vanilla[-1].accuracy < verified.accuracy - 0.03
    assert vanilla[-1].loss > 2 * verified.loss


def test_a_malfunctioning_miner_only_hits_its_own_devices(results):
    unverified = results.trajectory("blockfl-unverified", 0.5)
    assert all(0 < r.malfunctions < MINERS for r in unverified)
    assert all(0 < r.affected_devices < DEVICES for r in unverified)
    assert all(r.trained_on_corrupted == r.affected_devices for r in unverified)
    assert accuracies(results, "blockfl-unverified", 0.5) != accuracies(results, "blockfl", 0.0)


def test_verification_removes_the_effect_at_the_cost_of_latency(results):
    verified = results.trajectory("blockfl", 0.5)
    clean = results.trajectory("blockfl", 0.0)
    assert [r.accuracy for r in verified] == [r.accuracy for r in clean]
    assert all(r.trained_on_corrupted == 0 for r in verified)
    assert all(r.redownloads == r.affected_devices > 0 for r in verified)
    t_dn = model.t_dn(results.params[2])
    for dirty, ok in zip(verified, clean, strict=True):
        assert dirty.latency == pytest.approx(ok.latency + t_dn)
    assert verified[-1].cumulative_latency > clean[-1].cumulative_latency
    unverified = results.trajectory("blockfl-unverified", 0.5)
    assert [r.latency for r in unverified] == [r.latency for r in clean]


def test_vanilla_rounds_are_faster_than_blockfl_rounds(results):
    vanilla = results.trajectory("vanilla", 0.0)
    params = results.params[2]
    assert all(r.latency == vanilla_latency(params) for r in vanilla)
    assert vanilla_latency(params) < model.expected_latency(params).total
    # the latency model of the experiment: its config, the model's size, the shard sizes
    assert params.n_devices == DEVICES and params.lambda_ == CONFIG.chain.block_rate
    initial = build_experiment(CONFIG).initial
    assert params.delta_m == 32 * sum(t.numel() for t in initial.values())  # float32 weights


def test_every_miner_malfunctioning_stalls_the_verified_system():
    config = replace(
        CONFIG, run=RunConfig(rounds=2), network=NetworkConfig(devices=3, miners=1),
        malfunction=MalfunctionConfig(p=0.5, sweep_p=()),
    )
    config = replace(config, model=replace(config.model, name="logreg"))
    results = run_malfunction(config)
    t_dn = model.t_dn(results.params[0])
    verified = results.trajectory("blockfl", 0.5)
    unverified = results.trajectory("blockfl-unverified", 0.5)
    stalled = [r.stalled_slots for r in verified]
    assert any(stalled)
    assert [r.accuracy for r in verified] != [r.accuracy for r in unverified]
    for v, u, stalls in zip(verified, unverified, stalled, strict=True):
        assert (v.latency > u.latency + stalls * t_dn) == bool(stalls)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruption_changes_the_model_hash(kind):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    corrupted = CORRUPTIONS[kind](state, torch.Generator().manual_seed(0))
    assert tensor_hash(corrupted) != tensor_hash(state)
    assert {k: v.shape for k, v in corrupted.items()} == {k: v.shape for k, v in state.items()}


def test_invalid_probability_is_rejected():
    with pytest.raises(ValueError, match="probabilities"):
        run_malfunction(replace(CONFIG, malfunction=MalfunctionConfig(p=1.0)))


def test_outputs_are_written(results, tmp_path):
    paths = write_outputs(results, tmp_path)
    assert {p.name for p in paths} == {
        "malfunction_rounds.csv",
        "malfunction_time_to_target.csv",
        "malfunction_summary.json",
        "malfunction_config.toml",
        "malfunction_accuracy.png",
        "malfunction_latency.png",
        "malfunction_accuracy_vs_p.png",
        "malfunction_time_to_target.png",
    }
    with open(tmp_path / "malfunction_rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(SYSTEMS) * CONFIG.run.rounds
    summary = json.loads((tmp_path / "malfunction_summary.json").read_text())
    final = {(run["system"], run["p"]): run["final_accuracy"] for run in summary["runs"]}
    assert final[("blockfl", 0.5)] == results.final("blockfl", 0.5).accuracy
    for name in ("malfunction_accuracy.png", "malfunction_time_to_target.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_time_to_target_is_the_first_round_reaching_it(results):
    target = CONFIG.malfunction.target_accuracy
    times = times_to_target(results)
    assert len(times) == 2 * len(SYSTEMS)  # one seed, two p
    for t in times:
        trajectory = results.trajectory(t.system, t.p)
        reached = [r for r in trajectory if r.accuracy >= target]
        if reached:
            assert t.round == reached[0].round + 1
            assert t.latency == reached[0].cumulative_latency
        else:
            assert t.round is None and t.latency == math.inf
    by_run = {(t.system, t.p): t for t in times}
    # verification keeps the clean trajectory, so it reaches the target in the same round
    assert by_run[("blockfl", 0.5)].round == by_run[("blockfl", 0.0)].round


def test_time_to_target_over_seeds_has_a_confidence_interval():
    config = replace(CONFIG, run=RunConfig(rounds=3, seed=0),
                     network=NetworkConfig(devices=4, miners=2),
                     malfunction=MalfunctionConfig(p=0.3, sweep_p=(), seeds=3,
                                                   target_accuracy=0.5))
    config = replace(config, model=replace(config.model, name="logreg"))
    results = run_malfunction(config)
    assert results.seeds == [0, 1, 2]
    summaries = summarize(times_to_target(results))
    assert [(s.system, s.p) for s in summaries] == [(system, 0.3) for system in SYSTEMS]
    for s in summaries:
        times = [t.latency for t in times_to_target(results) if t.system == s.system]
        assert s.seeds == 3 and s.reached == sum(math.isfinite(t) for t in times)
        assert s.time.value == statistics.median(times)
        if s.reached == 3:
            assert 0 < min(times) <= s.time.low <= s.time.value <= s.time.high <= max(times)


def test_cli_prints_tables_and_writes_figures(tmp_path, capsys):
    argv = ["malfunction", "--rounds", "2", "--devices", "3", "--miners", "2", "--seeds", "2"]
    argv += ["--sweep-p", "0,0.5", "--model-name", "logreg", "--out", str(tmp_path)]
    assert main([*argv, "--set", "chain.block_rate=0.2"]) == 0
    out = capsys.readouterr().out
    assert "blockfl-unverified" in out and "final acc" in out and "time to test accuracy" in out
    assert (tmp_path / "malfunction_time_to_target.png").is_file()
    summary = json.loads((tmp_path / "malfunction_summary.json").read_text())
    assert summary["latency_model"]["lambda_"] == 0.2
    assert summary["latency_model"]["n_miners"] == 2
    assert summary["config"]["network"]["miners"] == 2
    assert len(summary["time_to_target"]["runs"]) == 2 * 3 * len(SYSTEMS)  # p: 0, 0.3, 0.5


def test_a_shortcut_never_silently_overrides_an_explicit_flag(tmp_path, capsys):
    argv = ["malfunction", "--miners", "3", "--set", "network.miners=5", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "network.miners is set twice" in capsys.readouterr().err
    assert main(["malfunction", "--set", "malfunction.p=1.5", "--out", str(tmp_path)]) == 2
    assert "probabilities must lie in [0, 1)" in capsys.readouterr().err


# Five seeds of each system at p = 0 and 0.8, as the review found them: at p = 0.8 the
# unverified system reaches the target in one seed of five, verified BlockFL in all five, each
# seed exactly twice as slowly as at p = 0; times are positive and spread over a decade.
SEEDS = range(5)
BASE = [2.7, 5.2, 6.0, 7.1, 30.0]
SYNTHETIC = {
    ("vanilla", 0.0): [0.2, 0.38, 0.4, 0.45, 0.48],
    ("vanilla", 0.8): [0.4, 0.5, 0.7, 0.9, math.inf],
    ("blockfl-unverified", 0.0): BASE,
    ("blockfl-unverified", 0.8): [8.16] + [math.inf] * 4,
    ("blockfl", 0.0): BASE,
    ("blockfl", 0.8): [2 * t for t in BASE],
}


def synthetic_times():
    return [TimeToTarget(system, p, seed, None if math.isinf(t) else 5, t, 70.0)
            for (system, p), values in SYNTHETIC.items() for seed, t in zip(SEEDS, values,
                                                                            strict=True)]


def synthetic_summary():
    return {(s.system, s.p): s for s in summarize(synthetic_times())}


def test_a_time_most_seeds_never_reach_is_infinite_not_the_mean_of_the_one_that_did():
    unverified = synthetic_summary()[("blockfl-unverified", 0.8)]
    assert unverified.reached == 1 and unverified.seeds == 5
    assert unverified.time.value == math.inf and unverified.time.high == math.inf
    vanilla = synthetic_summary()[("vanilla", 0.8)]
    assert vanilla.reached == 4 and vanilla.time.value == 0.7  # the median of all five seeds


def test_intervals_on_few_positive_seeds_stay_positive_and_are_seeded():
    summary = synthetic_summary()
    for s in summary.values():
        assert 0 < s.time.low <= s.time.value <= s.time.high
    blockfl = summary[("blockfl", 0.0)].time
    assert BASE[0] <= blockfl.low < blockfl.high <= BASE[-1]
    assert synthetic_summary() == summary  # a seeded bootstrap: the same intervals


def test_the_cost_of_malfunction_is_a_paired_ratio_with_its_interval():
    blockfl = synthetic_summary()[("blockfl", 0.8)]
    assert blockfl.pairs == 5 and blockfl.ratio.value == pytest.approx(2.0)
    assert blockfl.ratio.low == pytest.approx(2.0) and blockfl.ratio.high == pytest.approx(2.0)
    unverified = synthetic_summary()[("blockfl-unverified", 0.8)]
    assert unverified.ratio.value == math.inf  # four seeds never reach it at p = 0.8
    assert math.isnan(synthetic_summary()[("blockfl", 0.0)].ratio.value)  # the baseline itself


def test_time_to_target_figure_shows_the_fraction_reached_and_survival_curves():
    config = replace(CONFIG, malfunction=MalfunctionConfig(p=0.8, sweep_p=(0.0,), seeds=5))
    results = MalfunctionResults(config, [], {seed: LatencyParams() for seed in SEEDS},
                                 "classification")
    times = synthetic_times()
    fig = time_to_target_figure(results, summarize(times), times)
    axes = {ax.get_label(): ax for ax in fig.axes}
    labels = sorted(text.get_text() for text in axes["time"].texts if "/" in text.get_text())
    assert labels == sorted(["5/5"] * 4 + ["4/5", "1/5"])  # on every point
    curves = {line.get_label(): line for line in axes["p1"].lines}  # p = 0.8
    assert list(curves["blockfl-unverified"].get_ydata())[-1] == pytest.approx(0.2)
    assert list(curves["blockfl"].get_ydata())[-1] == 1.0
    ceiling = axes["time"].lines[-1].get_ydata()[0]  # the dashed ∞ line
    points = {bars.get_label(): bars.lines[0] for bars in axes["time"].containers}
    assert list(points["blockfl-unverified"].get_ydata())[-1] == ceiling  # not one at 8.16 s
    assert "ratio" in axes
