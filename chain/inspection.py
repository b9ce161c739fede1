"""Read a BlockFL chain for people: blocks, accepted updates, reward accounting, model checks.

Everything here reads through the `Ledger` interface, so it works on any backend and, with an
`EvmLedger`, on any JSON-RPC node. Rows are dataclasses of native values; `jsonable` turns one
into JSON-safe values (hashes as 0x-hex, uint256 amounts as exact decimal strings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blockfl.chain.blocks import AcceptedUpdate, BlockRecord
from blockfl.chain.ledger import Ledger
from blockfl.hashing import to_hex
from blockfl.tensors import decode, tensor_hash

#: fields holding uint256 values (token amounts, nonces), written as decimal strings in JSON
UINT256_FIELDS = frozenset({"reward", "balance", "event_total", "nonce"})


@dataclass(frozen=True)
class RewardRow:
    """One address: its token balance against the rewards its events account for."""

    address: str
    role: str
    balance: int
    event_total: int
    agrees: bool


@dataclass(frozen=True)
class ModelCheck:
    """A local model file's tensor hash against the global model hash of a round."""

    round: int
    path: str
    file_hash: bytes
    chain_hash: bytes
    matches: bool


def jsonable(row: Any) -> dict[str, Any]:
    """A row dataclass as JSON-safe values: bytes as 0x-hex, uint256 fields as strings."""
    out: dict[str, Any] = {}
    for key, value in asdict(row).items():
        if isinstance(value, bytes):
            value = to_hex(value)
        elif key in UINT256_FIELDS:
            value = str(value)
        out[key] = value
    return out


def iso_time(timestamp: int) -> str:
    """A block timestamp as ISO 8601 in UTC."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def block_json(block: BlockRecord) -> dict[str, Any]:
    """A block as JSON-safe values, with its time as ISO 8601."""
    return jsonable(block) | {"time": iso_time(block.timestamp)}


def blocks(ledger: Ledger, first: int = 1, last: int | None = None) -> list[BlockRecord]:
    """Committed blocks of rounds `first`..`last` (inclusive; `last` defaults to the head)."""
    head = ledger.head().round
    last = head if last is None else min(last, head)
    return [b for r in range(max(first, 1), last + 1) if (b := ledger.get_block(r)) is not None]


def updates(ledger: Ledger, round_: int) -> list[AcceptedUpdate]:
    """The `UpdateAccepted` events of a round, in block order."""
    return ledger.accepted_updates(round_)


def rewards(ledger: Ledger, blocks: Sequence[BlockRecord] | None = None) -> list[RewardRow]:
    """Every rewarded address (devices, then miners): balance, events summed, whether they agree.
    `blocks`: every committed block, where the caller has read them already.

    The event total of an address is its data rewards (`UpdateAccepted`) plus the mining reward
    of each block it mined; tokens moved by ERC-20 transfers show up as a disagreement.
    """
    devices = {u.device for u in ledger.accepted_updates()}
    rows = []
    for address, total in ledger.reward_totals(blocks).items():
        flags = {"device": address in devices, "miner": ledger.is_miner(address)}
        role = "+".join(name for name, member in flags.items() if member)
        balance = ledger.balance_of(address)
        rows.append(RewardRow(address, role, balance, total, balance == total))
    return sorted(rows, key=lambda r: (r.role, int(r.address, 16)))


def model_hash(ledger: Ledger, round_: int) -> bytes:
    """The global model hash of a round (round 0: the genesis model); ValueError if none."""
    if round_ == 0:
        return ledger.params().genesis_model_hash
    block = ledger.get_block(round_)
    if block is None:
        raise ValueError(f"no block committed for round {round_}")
    return block.global_model_hash


def check_model(ledger: Ledger, round_: int, path: Path) -> ModelCheck:
    """Compare the tensor hash of a local safetensors file with the round's global model hash.

    Raises OSError if the file cannot be read, `TensorFormatError` (a ValueError) if it is not
    safetensors, and ValueError if the round has no block.
    """
    chain_hash = model_hash(ledger, round_)
    data = Path(path).read_bytes()
    file_hash = tensor_hash(decode(data, max_bytes=len(data)))  # a file the user named: no cap
    return ModelCheck(round_, str(path), file_hash, chain_hash, file_hash == chain_hash)
