"""`blockfl attack --matrix` on a small slice: one row per run, resumed where it stopped, the
oracle beside the rules, and a report that says where the default rule misses the bar."""

from __future__ import annotations

from blockfl.cli import main
from blockfl.sim.matrix import CLEAN, ORACLE, plan, read_rows


def _slice(out, report) -> int:
    return main(["attack", "--matrix", "--splits", "iid:0", "--rules", "trust,fedavg",
                 "--attacks", "sign_flip", "--large", "", "--rounds", "1",
                 "--model-name", "logreg", "--aggregation-rule", "trust", "--out", str(out),
                 "--report", str(report)])


def test_a_matrix_slice_writes_rows_resumes_and_reports(tmp_path, capsys):
    out, report = tmp_path / "m", tmp_path / "robustness.md"
    assert _slice(out, report) == 0
    rows = read_rows(out / "matrix.csv")
    keys = {(r.run.attack, r.run.rule, r.run.fraction) for r in rows}
    assert keys == {(CLEAN, "trust", 0.0), ("sign_flip", "trust", 0.3), (CLEAN, "fedavg", 0.0),
                    ("sign_flip", "fedavg", 0.3), (CLEAN, ORACLE, 0.3)}
    oracle = next(r for r in rows if r.run.rule == ORACLE)
    assert oracle.run.attacker_reward_share == 0.0 and oracle.devices == 10
    flipped = {r.run.rule: r.run for r in rows if r.run.attack == "sign_flip"}
    assert flipped["fedavg"].attacker_reward_share > 0.2
    assert flipped["trust"].attacker_reward_share == 0.0
    assert 0.2 < flipped["trust"].attacker_data_share < 0.5
    text = report.read_text()
    assert "## The default rule (`trust`) against the bar" in text
    assert "| `sign_flip` | `fedavg` |" in text and "`oracle`" in text
    capsys.readouterr()
    # a second start finds every run done and only rewrites the report
    report.unlink()
    assert _slice(out, report) == 0
    assert len(read_rows(out / "matrix.csv")) == len(rows)
    assert "[1/" not in capsys.readouterr().err and report.exists()


def test_the_plan_runs_oracle_fedavg_and_default_first_and_the_large_size_for_them_only():
    planned = plan(["fedavg", "trust", "median"], "trust", ["sign_flip", "ipm"])
    # at 10 devices, then at 50: the oracle, clean FedAvg, then the default (clean, 2 attacks)
    # on 11 split-seeds, round-robin over the splits
    assert [p.split for p in planned[:3]] == ["iid", "dirichlet0.3", "dirichlet1"]
    assert planned[0].rule == ORACLE and planned[11].rule == "fedavg"
    assert planned[22].rule == "trust"
    assert {p.devices for p in planned[:55]} == {10} and planned[55].devices == 50
    assert planned[-1].rule == "median"
    assert len(planned) == len({p.key for p in planned}) == 11 * (3 * 3 + 1) + 11 * (3 + 1 + 1)
    assert {p.rule for p in planned if p.devices == 50} == {"trust", "fedavg", ORACLE}
    assert {p.fraction for p in planned if p.devices == 50} == {0.0, 0.2}
