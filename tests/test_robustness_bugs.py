"""Reproducibility and accounting bugs of the attack experiment (issue 24, item 6): a decoded
state's name order, noise drawn over it, Multi-Krum's count after the free-rider filter, and
the `attack` table without clean runs."""

from __future__ import annotations

import csv
from dataclasses import asdict, fields

import pytest
import torch

from blockfl.aggregation import WeightedUpdate
from blockfl.aggregation.rules import multi_krum
from blockfl.config import AttackConfig
from blockfl.devices.behaviours import behaviour
from blockfl.sim.attack import AttackRun, summary_rows
from blockfl.sim.engine import Simulation
from blockfl.tensors import canonical_bytes, decode, encode
from tests.conftest import small_config


def test_decode_returns_names_in_ascending_order_every_time():
    state = {name: torch.full((2,), float(i)) for i, name in enumerate("fcadeb")}
    payload = encode(state)
    for _ in range(20):
        assert list(decode(payload, max_bytes=10**6)) == sorted(state)


def test_noise_is_drawn_in_name_order_whatever_the_dict_order():
    delta = {name: torch.zeros(3, 2) for name in ("b", "a", "c")}
    noise = behaviour("gaussian_noise", AttackConfig(), 5, seed=4).delta
    forward = noise(delta, 2, None)
    backward = noise(dict(reversed(list(delta.items()))), 2, None)
    assert canonical_bytes(forward) == canonical_bytes(backward)


def _noise_run(tmp_path) -> list[bytes]:
    config = small_config(tmp_path, network={"devices": 6, "miners": 2},
                          model={"name": "mlp"}, run={"rounds": 3},
                          attack={"attackers": 0.34, "behaviour": "gaussian_noise"})
    sim = Simulation(config, tmp_path)
    try:
        for _ in range(config.run.rounds):
            sim.run_round()
    finally:
        sim.close()
    return [canonical_bytes(d.global_state) for d in sim.devices[:1]]


def test_a_noise_attack_run_twice_gives_the_same_bytes(tmp_path):
    assert _noise_run(tmp_path / "a") == _noise_run(tmp_path / "b")


def _update(i: int, scale: float) -> WeightedUpdate:
    g = torch.Generator().manual_seed(i)
    return WeightedUpdate(f"0x{i + 1:040x}", {"w": torch.randn(8, generator=g) * scale}, 10)


def test_multi_krum_counts_excluded_free_riders_towards_f():
    honest = [_update(i, 1.0) for i in range(7)]
    riders = [_update(10 + i, 1e-6) for i in range(3)]
    base = {"w": torch.zeros(8)}
    kept, excluded = multi_krum(base, honest + riders, f=3, m=0, min_norm_ratio=0.1)
    assert {u.device for u in kept} == {u.device for u in honest}
    assert {e.update.device for e in excluded} == {u.device for u in riders}
    # one free-rider filtered: the block keeps n - f = 7 of the 9 others
    kept, excluded = multi_krum(base, honest + riders[:1] + [_update(20, 1.0)], f=3, m=0,
                                min_norm_ratio=0.1)
    assert len(kept) == 6 and len(excluded) == 3


def _run(rule: str, fraction: float, accuracy: float) -> AttackRun:
    return AttackRun("sign_flip", rule, fraction, 0, accuracy, 0.0, 0.0, 0, 0, 0)


def test_summary_without_clean_runs_has_no_clean_accuracy_and_no_gap():
    rows = summary_rows([_run("fedavg", 0.3, 0.5), _run("median", 0.3, 0.9)], 0.3)
    assert [(r["clean_accuracy"], r["gap_points"]) for r in rows] == [(None, None)] * 2
    rows = summary_rows([_run("fedavg", 0.0, 0.95), _run("median", 0.3, 0.9)], 0.3)
    assert rows[0]["gap_points"] == pytest.approx(5.0)


def test_attack_table_shows_a_dash_without_clean_runs_and_the_gap_in_points(tmp_path, capsys):
    from blockfl.cli import main

    path = tmp_path / "attack.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [f.name for f in fields(AttackRun)])
        writer.writeheader()
        for run in (_run("fedavg", 0.3, 0.5), _run("median", 0.3, 0.9)):
            writer.writerow(asdict(run))
    assert main(["attack", "--from-csv", str(path), "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "nan" not in table and "points" in table
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, [f.name for f in fields(AttackRun)]).writerow(
            asdict(_run("fedavg", 0.0, 0.95)))
    assert main(["attack", "--from-csv", str(path), "--out", str(tmp_path / "b")]) == 0
    assert "+45.0" in capsys.readouterr().out
