"""The live table of `network up`: following logs as they grow, and the words it shows."""

from __future__ import annotations

import json

import pytest

from blockfl.cli import main
from blockfl.network_view import LogTail, describe_event


def test_log_tail_reads_only_what_was_appended_and_waits_for_whole_lines(tmp_path):
    path = tmp_path / "miner0.jsonl"
    tail = LogTail(path)
    assert tail.read() == []  # no file yet
    path.write_text(json.dumps({"event": "mining", "round": 1}) + "\n" + '{"event": "comm')
    assert tail.read() == [{"event": "mining", "round": 1}]
    with path.open("a") as handle:
        handle.write('itted", "round": 1, "updates": 3}\nnot json\n')
    assert tail.read() == [{"event": "committed", "round": 1, "updates": 3}]
    assert tail.read() == []


@pytest.mark.parametrize(("event", "text"), [
    ({"event": "committed", "round": 3, "updates": 6}, "committed round 3 (6 updates)"),
    ({"event": "block", "round": 2, "included": True}, "block round 2 (paid)"),
    ({"event": "block", "round": 2, "included": False}, "block round 2 (not included)"),
    ({"event": "update_rejected", "round": 1, "reason": "stale_base_model"},
     "update rejected round 1: stale_base_model"),
    ({"event": "listening"}, "listening"),
])
def test_events_in_a_few_words(event, text):
    assert describe_event(event) == text


@pytest.mark.parametrize(("argv", "message"), [
    (["network", "up", "--miners", "0"], "network.miners (--miners) must be at least 1, got 0"),
    (["network", "up", "--rounds", "-1"], "run.rounds (--rounds) must be at least 1, got -1"),
    (["simulate", "--rounds", "0"], "run.rounds (--rounds) must be at least 1, got 0"),
    (["simulate", "--miners", "0"], "network.miners (--miners) must be at least 1, got 0"),
    (["simulate", "--devices", "0"], "network.devices (--devices) must be at least 1, got 0"),
    (["attack", "--rounds", "0"], "run.rounds (--rounds) must be at least 1, got 0"),
])
def test_counts_below_one_are_refused_before_anything_starts(argv, message, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no run directory left behind


def test_late_devices_are_explained_under_the_round_table(tmp_path, capsys):
    # modelled training: 10 ms per sample; the shards hold 345, 304, 447 and 342 samples, so
    # with t_wait = 4 s only the device of 447 samples (4.47 s) misses the block
    code = main(["simulate", "--rounds", "1", "--devices", "4", "--miners", "1", "--ledger",
                 "local", "--model-name", "logreg", "--training-compute-time", "modelled",
                 "--training-ms-per-sample", "10", "--training-epochs", "1",
                 "--network-t-wait", "4", "--run-out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    words = " ".join(out.split())
    assert "Late devices (training + upload > t_wait = 4 s)" in words
    late_rows = [line for line in out.splitlines() if "> 4" in line and "│" in line]
    assert len(late_rows) == 1 and "4.470" in late_rows[0]  # the 447-sample device's training
    assert "modelled: epochs (1) x samples x 10 ms" in words
