"""A live table of a running local network: rounds, each process's state, accuracy, forks.

`NetworkView` follows the event log of every miner and device process (reading only what was
appended since the last look) and renders a rich table: one row per process with whether it
runs and its last event, under a title with the rounds committed, the last round's test
accuracy and the forks seen so far.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from blockfl.events import parse_events

if TYPE_CHECKING:
    from blockfl.launcher import LocalNetwork, Role

#: columns of the live table, so that its title fits on one line
TABLE_WIDTH = 100


@dataclass
class LogTail:
    """The events appended to a JSON-lines file since the last `read`."""

    path: Path
    offset: int = 0
    partial: bytes = field(default=b"", repr=False)

    def read(self) -> list[dict[str, Any]]:
        """New complete lines as events (lines that are not JSON objects are skipped)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return parse_events(lines)


def describe_event(event: dict[str, Any]) -> str:
    """One event in a few words, e.g. `committed round 3 (6 updates)`."""
    name = str(event.get("event", "?"))
    text = name.replace("_", " ")
    if event.get("round") is not None:
        text += f" round {event['round']}"
    if name == "block":
        text += " (paid)" if event.get("included") else " (not included)"
    elif name in ("committed", "mining") and event.get("updates") is not None:
        text += f" ({event['updates']} updates)"
    elif name in ("error", "update_rejected", "miner_down", "chain_unavailable"):
        text += f": {str(event.get('reason') or event.get('error') or '')[:60]}"
    return text


class NetworkView:
    """What `blockfl network up` shows while the network runs."""

    def __init__(self, network: LocalNetwork, rounds: int) -> None:
        self.network = network
        self.rounds = rounds
        self.started = time.monotonic()
        self.tails: dict[str, LogTail] = {}
        self.last: dict[str, str] = {}
        self.forks = 0
        self.head = 0
        self.accuracy: tuple[int, dict[str, float]] | None = None

    def _roles(self) -> list[Role]:
        return [*self.network.miners, *self.network.devices]

    def update(self) -> None:
        """Read the new events of every process and the chain head."""
        for role in self._roles():
            tail = self.tails.setdefault(role.name, LogTail(role.log))
            for event in tail.read():
                self.forks += event.get("event") == "fork"
                self.last[role.name] = describe_event(event)
        self.head = self.network.ledger.head().round
        if self.head and (self.accuracy is None or self.accuracy[0] != self.head):
            # a model not served yet is tried again on the next update
            with contextlib.suppress(LookupError, ConnectionError, RuntimeError):
                self.accuracy = (self.head, self.network.round_metrics(self.head))

    def table(self) -> Table:
        """The live table."""
        elapsed = time.monotonic() - self.started
        metric = ""
        if self.accuracy is not None:
            round_, values = self.accuracy
            metric = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            metric = f" · round {round_} test {metric}"
        table = Table(
            "process", "state", "last event", min_width=TABLE_WIDTH, title_justify="left",
            title=f"rounds committed {self.head}/{self.rounds} · forks {self.forks}"
                  f"{metric} · {elapsed:.0f}s",
        )
        for role in self._roles():
            process = role.process
            if process is None:
                state = "not started"
            elif process.poll() is None:
                state = "running"
            else:
                state = f"exited ({process.returncode})"
            table.add_row(role.name, state, self.last.get(role.name, "starting…"))
        return table
