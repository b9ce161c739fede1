"""After a run of a network of processes: read every process log and the chain, and check what
must hold whatever faults were injected (Jepsen-style: the history against the invariants).

- **Nothing acknowledged is lost.** Every update a miner acknowledged (a device logged it as
  `uploaded`) is in a committed block of the final chain, or has a named reason not to be:
  a miner `excluded` it (the aggregation rule), or the chain rolled back and the device's update
  of that round in the final chain is another one (`re_uploaded`), or the chain rolled back
  under its base model (`base_rolled_back`: the device trained on a block the chain abandoned),
  or a miner dropped it when the chain rolled back and the round closed without the device's
  upload again (`dropped:rolled_back`), or the run ended before its round was committed
  (`after_last_block`), or its round was committed without it and the device was told so
  (`missed_round`: the winner sealed its block, full or at `T_wait`, before the update reached
  it; BlockFL pays only what a block holds). Anything else is `lost`.
- **No update paid twice:** at most one reward event per (round, device) on the final chain,
  and a device's own count of its earnings (`finished`) equals the chain's.
- **Balances equal reward events** for every account the chain paid.
- **One head, one global model:** every miner that still serves is on the chain head and
  serves its global model (hash checked).
- **Forks resolved:** every round some miner forked on (its block refused as the round's
  second) has its one block on the final chain; forks are counted, those while a fault
  schedule held a link down (`faults.jsonl`) on their own.
- **No traceback** in any process's output (`*.out`).

`check_run` returns a `RunCheck`; `RunCheck.ok` is what a command's exit code follows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blockfl.chain.ledger import Ledger
from blockfl.client import MinerClient, MinerUnavailable
from blockfl.events import read_events
from blockfl.hashing import from_hex, to_hex


@dataclass(frozen=True)
class Violation:
    """One broken invariant."""

    invariant: str
    detail: str


@dataclass
class RunCheck:
    """What the checker found."""

    head: int = 0
    acknowledged: int = 0
    included: int = 0
    named: Counter[str] = field(default_factory=Counter)  # reasons not to be in a block
    accounts: int = 0
    miners_on_head: int = 0
    miners_checked: int = 0
    forks: int = 0  # blocks refused as a round's second block (miners' `fork` events)
    forks_partitioned: int = 0  # of them, while a link was down (`faults.jsonl`)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every invariant held."""
        return not self.violations

    def lines(self) -> list[str]:
        """The report, one line per invariant, then each violation."""
        named = ", ".join(f"{k} {v}" for k, v in sorted(self.named.items())) or "none"
        count = Counter(v.invariant for v in self.violations)
        out = [
            f"chain head at round {self.head}",
            f"acknowledged updates: {self.acknowledged}: {self.included} in committed blocks, "
            f"named reasons: {named}; lost: {count['lost']}",
            f"paid twice: {count['paid_twice']}; device logs against the chain: "
            f"{count['log_rewards']} disagree",
            f"balances equal reward events: {self.accounts - count['balance']} of "
            f"{self.accounts} accounts",
            f"miners on the chain head with its global model: {self.miners_on_head} of "
            f"{self.miners_checked}",
            f"forks: {self.forks} ({self.forks_partitioned} while a link was down), "
            f"unresolved: {count['unresolved_fork']}",
            f"tracebacks: {count['traceback']}",
            f"valid: {'yes' if self.ok else 'NO'}",
        ]
        return out + [f"  {v.invariant}: {v.detail}" for v in self.violations]


def _address(event: dict) -> str:
    return str(event.get("role", "")).split(" ")[-1]


def check_run(logs: Path, ledger: Ledger, miners: Sequence[MinerClient] = (),
              settle: float = 30.0) -> RunCheck:
    """Check a finished run: its logs (`device*.jsonl`, `miner*.jsonl`, `*.out` in `logs`),
    the chain behind `ledger`, and the miners still serving (`miners`; each gets `settle`
    seconds to reach the chain head)."""
    report = RunCheck(head=ledger.head().round)
    device_logs = [read_events(p) for p in sorted(logs.glob("device*.jsonl"))]
    miner_events = [e for p in sorted(logs.glob("miner*.jsonl")) for e in read_events(p)]
    accepted = ledger.accepted_updates()
    _acknowledged(report, ledger, device_logs, miner_events, accepted)
    _payments(report, ledger, device_logs, accepted)
    _heads(report, ledger, miners, settle)
    _forks(report, miner_events, _partitions(logs / "faults.jsonl"))
    for out in sorted(logs.glob("*.out")):
        if "Traceback" in out.read_text(errors="replace"):
            report.violations.append(Violation("traceback", f"in {out.name}"))
    return report


def _acknowledged(report: RunCheck, ledger: Ledger, device_logs: list[list[dict]],
                  miner_events: list[dict], accepted: list) -> None:
    on_chain = {u.update_hash for u in accepted}
    paid = {(u.round, u.device) for u in accepted}
    excluded = {e["update_hash"]: e["reason"] for e in miner_events if e["event"] == "excluded"}
    dropped = {e["update_hash"]: e["reason"] for e in miner_events if e["event"] == "dropped"}
    bases: dict[int, bytes] = {}
    # a device told its round's block closed without its update (`block`, included false):
    # the winner sealed its candidate (block full or T_wait) before the update reached it
    missed = {(e["round"], _address(e)) for events in device_logs for e in events
              if e["event"] == "block" and e.get("included") is False}

    def base_of(round_: int) -> bytes:  # the final chain's global model before `round_`
        if round_ not in bases:
            block = ledger.get_block(round_ - 1) if round_ > 1 else None
            bases[round_] = (block.global_model_hash if block is not None
                             else ledger.params().genesis_model_hash)
        return bases[round_]

    for events in device_logs:
        for e in (e for e in events if e["event"] == "uploaded"):
            report.acknowledged += 1
            update_hash, round_ = from_hex(e["update_hash"]), e["round"]
            if update_hash in on_chain:
                report.included += 1
            elif e["update_hash"] in excluded:
                report.named[f"excluded:{excluded[e['update_hash']]}"] += 1
            elif round_ > report.head:
                report.named["after_last_block"] += 1
            elif (round_, _address(e)) in paid:
                report.named["re_uploaded"] += 1
            elif "base_model_hash" in e and from_hex(e["base_model_hash"]) != base_of(round_):
                report.named["base_rolled_back"] += 1
            elif e["update_hash"] in dropped:  # a miner dropped it when the chain rolled back
                report.named[f"dropped:{dropped[e['update_hash']]}"] += 1
            elif (round_, _address(e)) in missed:  # BlockFL's rule: the round closed without it
                report.named["missed_round"] += 1
            else:
                report.violations.append(Violation(
                    "lost", f"{_address(e)} round {round_} update {e['update_hash']} "
                            f"acknowledged by {e.get('miner')} is in no block"))


def _payments(report: RunCheck, ledger: Ledger, device_logs: list[list[dict]],
              accepted: list) -> None:
    for (round_, device), n in Counter((u.round, u.device) for u in accepted).items():
        if n > 1:
            report.violations.append(Violation("paid_twice", f"{device} round {round_}: {n}"))
    chain_earned = Counter()
    for u in accepted:
        chain_earned[u.device] += u.reward
    for events in device_logs:
        finished = [e for e in events if e["event"] == "finished" and "earned" in e]
        if finished and int(finished[-1]["earned"]) != chain_earned[_address(finished[-1])]:
            report.violations.append(Violation(
                "log_rewards", f"{_address(finished[-1])} logged {finished[-1]['earned']}, "
                               f"the chain paid {chain_earned[_address(finished[-1])]}"))
    totals = ledger.reward_totals()
    report.accounts = len(totals)
    for address, total in totals.items():
        balance = ledger.balance_of(address)
        if balance != total:
            report.violations.append(Violation(
                "balance", f"{address} holds {balance}, reward events say {total}"))


def _partitions(faults: Path) -> list[tuple[float, float]]:
    """The (down, up) times of every link a fault schedule took down (`faults.jsonl`)."""
    if not faults.is_file():
        return []
    down: dict[str, float] = {}
    windows = []
    for e in read_events(faults):
        if e["event"] == "partitioned":
            down[e["role"]] = e["ts"]
        elif e["event"] == "healed" and e["role"] in down:
            windows.append((down.pop(e["role"]), e["ts"]))
    return windows + [(t, float("inf")) for t in down.values()]


def _forks(report: RunCheck, miner_events: list[dict],
           partitions: list[tuple[float, float]]) -> None:
    """Count the forks, those while a link was down among them; a fork is resolved when the
    final chain holds a block of its round (every miner on the head is `_heads`' check)."""
    forks = [e for e in miner_events if e["event"] == "fork"]
    report.forks = len(forks)
    report.forks_partitioned = sum(any(a <= e["ts"] <= b for a, b in partitions) for e in forks)
    for e in forks:
        if e["round"] > report.head:
            report.violations.append(Violation(
                "unresolved_fork", f"round {e['round']} forked and has no block on the chain"))


def _heads(report: RunCheck, ledger: Ledger, miners: Sequence[MinerClient],
           settle: float) -> None:
    head = ledger.head()
    for client in miners:
        report.miners_checked += 1
        deadline = time.monotonic() + settle
        seen = None
        while True:
            try:
                seen = client.info()["head"]
                if seen["block_hash"] == to_hex(head.block_hash) and \
                        client.model(head.global_model_hash) is not None:
                    report.miners_on_head += 1
                    break
            except (MinerUnavailable, KeyError, TypeError) as exc:
                seen = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                report.violations.append(Violation(
                    "head", f"{client.url} is at {seen}, the chain at round {head.round} "
                            f"{to_hex(head.block_hash)}"))
                break
            time.sleep(0.5)
