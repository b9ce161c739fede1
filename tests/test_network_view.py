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
])
def test_counts_below_one_are_refused_before_anything_starts(argv, message, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no run directory left behind
