"""Faults injected into a `LocalNetwork` at given rounds (`blockfl network up --kill ...`).

- `kill NAME:ROUND`: `kill -9` a process (`miner0`, `device3`, ...) once the chain has ROUND
  blocks, and start it again `down` seconds later (a crash and a restart);
- `restart-node ROUND`: `kill -9` anvil and start it again from its state file (saved every
  `STATE_INTERVAL` seconds: what it saved last is what the chain keeps);
- `rollback ROUND:DEPTH`: take an `evm_snapshot` when the chain has ROUND-DEPTH blocks and
  `evm_revert` to it once it has ROUND (the chain moves back DEPTH rounds under the network);
- `partition NAME:FROM-TO`: on emulated links (`--emulate-links`), take process NAME's link
  down once the chain has FROM blocks and bring it back once it has TO (or when the round
  cannot come without it: after `heal_after` seconds without a new block).

`check_schedule` refuses, before anything is made, a fault that names an unknown process, a
round outside the run, or a partition without emulated links.

What was injected, and when, is logged in `faults.jsonl` beside the processes' logs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from blockfl.events import EventLog
from blockfl.launcher import LocalNetwork, Role


@dataclass(frozen=True)
class Fault:
    """One fault: what, at which round (blocks on chain), and on what."""

    kind: str  # "kill", "restart_node", "rollback", "partition" or "heal"
    round: int
    target: str = ""  # the process of a kill or a partition
    depth: int = 0  # rounds a rollback takes back
    until: int = 0  # the round a partition heals at


def _number(value: str, what: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{what} is a whole number, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{what} is at least {minimum}, got {number}")
    return number


def parse_kill(spec: str) -> Fault:
    """`NAME:ROUND`, e.g. `miner1:7`."""
    name, _, round_ = spec.partition(":")
    if not name.startswith(("miner", "device")) or not name.removeprefix("miner").removeprefix(
            "device").isdigit():
        raise ValueError(f"--kill takes NAME:ROUND with NAME minerI or deviceJ, got {spec!r}")
    return Fault("kill", _number(round_, "the round of --kill", 0), target=name)


def parse_partition(spec: str) -> Fault:
    """`NAME:FROM-TO`, e.g. `miner1:5-10`."""
    name, _, span = spec.partition(":")
    first, _, last = span.partition("-")
    if not name or not first or not last:
        raise ValueError(f"--partition takes NAME:FROM-TO (e.g. miner1:5-10), got {spec!r}")
    fault = Fault("partition", _number(first, "the first round of --partition", 0),
                  target=name, until=_number(last, "the last round of --partition", 1))
    if fault.until <= fault.round:
        raise ValueError(f"--partition {spec}: the link comes back at a later round than it "
                         "goes down")
    return fault


def check_schedule(faults: list[Fault], miners: int, devices: int, rounds: int,
                   emulated: bool) -> None:
    """ValueError, one line, for a fault that could not happen in this run."""
    names = {*(f"miner{i}" for i in range(miners)), *(f"device{j}" for j in range(devices))}
    for fault in faults:
        flag = "--" + fault.kind.replace("_", "-")
        if fault.target and fault.target not in names:
            raise ValueError(f"{flag} {fault.target}: this network has miner0-miner{miners - 1}"
                             f" and device0-device{devices - 1}")
        last = fault.until or fault.round
        if last > rounds:
            raise ValueError(f"{flag} at round {last}: the run has {rounds} rounds")
        if fault.kind == "partition" and not emulated:
            raise ValueError("--partition takes a host's link down: it needs --emulate-links")


def parse_rollback(spec: str) -> Fault:
    """`ROUND:DEPTH`, e.g. `12:10`."""
    round_, _, depth = spec.partition(":")
    fault = Fault("rollback", _number(round_, "the round of --rollback", 1),
                  depth=_number(depth, "the depth of --rollback", 1))
    if fault.depth > fault.round:
        raise ValueError(f"--rollback {spec}: a chain of {fault.round} blocks cannot go back "
                         f"{fault.depth}")
    return fault


def restart_node(round_: int) -> Fault:
    """`--restart-node ROUND`."""
    return Fault("restart_node", round_)


class FaultSchedule:
    """Applies due faults whenever `tick` is called (the launcher's wait loop does)."""

    def __init__(self, network: LocalNetwork, faults: list[Fault], down: float = 5.0,
                 heal_after: float = 60.0) -> None:
        self.network = network
        self.pending = sorted(faults, key=lambda f: f.round)
        self.down = down
        self.heal_after = heal_after
        self._progress = (-1, time.monotonic())  # the head, and when it was first seen
        self.log = EventLog("faults", network.run_dir / "logs" / "faults.jsonl")
        self._restarts: list[tuple[float, Role]] = []
        self._snapshots: dict[Fault, str] = {}

    def _rpc(self, method: str, *params: object) -> object:
        return self.network.ledger.w3.provider.make_request(method, list(params))["result"]

    def tick(self) -> None:
        """Restart what is due, snapshot for rollbacks to come, apply the faults now due."""
        now, network = time.monotonic(), self.network
        for at, role in [r for r in self._restarts if r[0] <= now]:
            self._restarts.remove((at, role))
            network.start_role(role, wait=False)
            self.log("restarted", role=role.name)
        head = network.ledger.head().round
        if head != self._progress[0]:
            self._progress = (head, now)
        stalled = now - self._progress[1] > self.heal_after
        for fault in [f for f in self.pending if f.kind == "heal" and stalled]:
            self.pending.remove(fault)  # the round cannot come without it: heal now
            self._apply(fault, head)
        for fault in [f for f in self.pending if f.kind == "rollback"]:
            if fault not in self._snapshots and head >= fault.round - fault.depth:
                self._snapshots[fault] = str(self._rpc("evm_snapshot"))
                self.log("snapshot", round=head, rollback_at=fault.round)
        for fault in [f for f in self.pending if head >= f.round]:
            self.pending.remove(fault)
            self._apply(fault, head)

    def _apply(self, fault: Fault, head: int) -> None:
        network = self.network
        if fault.kind == "kill":
            role = next(r for r in [*network.miners, *network.devices] if r.name == fault.target)
            network.stop_role(role, kill=True)
            self._restarts.append((time.monotonic() + self.down, role))
            self.log("killed", role=role.name, round=head, restart_in=self.down)
        elif fault.kind in ("partition", "heal"):
            assert network.hosts is not None  # check_schedule: partitions need emulated hosts
            down = fault.kind == "partition"
            network.hosts.set_link(fault.target, up=not down)
            if down:
                self.pending.append(Fault("heal", fault.until, target=fault.target))
            self.log("partitioned" if down else "healed", role=fault.target, round=head)
        elif fault.kind == "restart_node":
            network.stop_node(kill=True)
            network.start_node()
            self._snapshots.clear()  # a node's snapshots die with it: taken again on its state
            self.log("node_restarted", round=head, kept=network.ledger.head().round)
        else:  # `round`: the head read right before the revert (the tick's may be older)
            before = network.ledger.head().round
            reverted = self._rpc("evm_revert", self._snapshots.pop(fault)) is True
            self.log("rolled_back", round=before, to_round=network.ledger.head().round,
                     reverted=reverted)

    def finish(self) -> None:
        """Heal every partition and start again every process still down (so the run ends
        with every one serving)."""
        for fault in [f for f in self.pending if f.kind == "heal"]:
            self.pending.remove(fault)
            self._apply(fault, self.network.ledger.head().round)
        for _, role in self._restarts:
            self.network.start_role(role)
            self.log("restarted", role=role.name)
        self._restarts.clear()
        self.log.close()
