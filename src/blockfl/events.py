"""Structured event logs of network processes: one JSON object per line, with a timestamp.

Miner and device processes write their phase boundaries (upload accepted, mining started,
block committed, fork, model adopted, ...) here; the launcher keeps one file per process.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

Log = Callable[..., None]


class EventLog:
    """Append events as JSON lines to a file (or stdout), thread-safe and flushed per line."""

    def __init__(self, role: str, path: Path | None = None) -> None:
        self.role = role
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._out: TextIO = open(path, "a") if path else sys.stdout  # noqa: SIM115
        self._lock = threading.Lock()
        # a log dropped unclosed (a service a test made) closes its file when collected; every
        # line is flushed as written, so nothing is lost either way
        self._close = weakref.finalize(self, self._out.close) if path else (lambda: None)

    def __call__(self, event: str, **fields: Any) -> None:
        """Write one event with the wall-clock time and the role."""
        line = json.dumps({"ts": round(time.time(), 6), "role": self.role, "event": event}
                          | fields, default=str)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def close(self) -> None:
        """Close the file (stdout stays open)."""
        self._close()


class Throttled:
    """Write an event of one key (e.g. client and reason) at most once every `every` seconds,
    with the `count` of occurrences it stands for: a flood does not become a flood of lines."""

    MAX_KEYS = 10_000  # many keys (addresses): forget them all, rather than grow

    def __init__(self, log: Log, every: float) -> None:
        self.log = log
        self.every = every
        self._seen: dict[tuple[Any, ...], list[float]] = {}  # key -> [last written, unwritten]
        self._lock = threading.Lock()

    def __call__(self, event: str, key: tuple[Any, ...], **fields: Any) -> None:
        """Write `event` with `fields`, or count it for the next event of `key`."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get((event, *key))
            if seen is not None and now - seen[0] < self.every:
                seen[1] += 1
                return
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen[(event, *key)] = [now, 0]
        self.log(event, **fields, count=1 + int(seen[1] if seen else 0))


def parse_events(lines: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """The events among log lines (lines that are not JSON objects are skipped)."""
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a log file (lines that are not JSON objects are skipped)."""
    return parse_events(path.read_text().splitlines())


def role_logs(logs: Path, role: str) -> list[list[dict[str, Any]]]:
    """The event lists of the `<role>N.jsonl` files in `logs` (a network run), in the order of N."""
    found = [(int(m.group(1)), p) for p in logs.glob(f"{role}*.jsonl")
             if (m := re.fullmatch(rf"{role}(\d+)\.jsonl", p.name))]
    return [read_events(p) for _, p in sorted(found)]
