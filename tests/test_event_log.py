"""`blockfl.events.EventLog`: every line is on disk as soon as it is written, and a log dropped
without `close` (a service a test made) closes its file instead of leaking it."""

from __future__ import annotations

import gc

from blockfl.events import EventLog, read_events


def test_a_dropped_log_closes_its_file_and_keeps_every_line(tmp_path):
    path = tmp_path / "logs" / "miner.jsonl"
    log = EventLog("miner", path)
    log("started", port=1)
    assert [e["event"] for e in read_events(path)] == ["started"]  # flushed per line
    log("stopped")
    file = log._out
    del log
    gc.collect()
    assert file.closed  # not left open for the interpreter to warn about
    events = read_events(path)
    assert [(e["role"], e["event"]) for e in events] == [("miner", "started"), ("miner", "stopped")]


def test_close_is_idempotent_and_stdout_stays_open(tmp_path, capsys):
    log = EventLog("device", tmp_path / "d.jsonl")
    log.close()
    log.close()
    out = EventLog("device")
    out("hello")
    out.close()
    out("still")
    assert capsys.readouterr().out.count('"event": "') == 2
