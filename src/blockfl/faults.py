"""Faults injected into a `LocalNetwork` at given rounds (`blockfl network up --kill ...`).

- `kill NAME:ROUND`: `kill -9` a process (`miner0`, `device3`, ...) once the chain has ROUND
  blocks, and start it again `down` seconds later (a crash and a restart);
- `restart-node ROUND`: `kill -9` anvil and start it again from its state file (saved every
  `STATE_INTERVAL` seconds: what it saved last is what the chain keeps);
- `rollback ROUND:DEPTH`: take an `evm_snapshot` when the chain has ROUND-DEPTH blocks and
  `evm_revert` to it once it has ROUND (the chain moves back DEPTH rounds under the network).

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

    kind: str  # "kill", "restart_node" or "rollback"
    round: int
    target: str = ""  # the process of a kill
    depth: int = 0  # rounds a rollback takes back


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

    def __init__(self, network: LocalNetwork, faults: list[Fault], down: float = 5.0) -> None:
        self.network = network
        self.pending = sorted(faults, key=lambda f: f.round)
        self.down = down
        self.log = EventLog("faults", network.run_dir / "logs" / "faults.jsonl")
        self._restarts: list[tuple[float, Role]] = []
        self._snapshots: dict[Fault, str] = {}
        names = {r.name for r in [*network.miners, *network.devices]}
        for fault in self.pending:
            if fault.kind == "kill" and fault.target not in names:
                raise ValueError(f"--kill {fault.target}:{fault.round}: this network has "
                                 f"{', '.join(sorted(names))}")

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
        elif fault.kind == "restart_node":
            network.stop_node(kill=True)
            network.start_node()
            self._snapshots.clear()  # a node's snapshots die with it: taken again on its state
            self.log("node_restarted", round=head, kept=network.ledger.head().round)
        else:
            reverted = self._rpc("evm_revert", self._snapshots.pop(fault)) is True
            self.log("rolled_back", round=head, to_round=network.ledger.head().round,
                     reverted=reverted)

    def finish(self) -> None:
        """Start again every process still down (so the run ends with every one serving)."""
        for _, role in self._restarts:
            self.network.start_role(role)
            self.log("restarted", role=role.name)
        self._restarts.clear()
        self.log.close()
