"""The genesis model file: `chain deploy` writes the genesis model as safetensors beside
`deployment.json` (its hash is on chain and in the protocol spec); miners and devices start
from that file, never from re-running a task's initialisation, so the torch build that made it
is no part of consensus."""

from __future__ import annotations

from pathlib import Path

from blockfl.hashing import to_hex
from blockfl.store import MAX_MODEL_BYTES
from blockfl.tensors import StateDict, decode, encode, tensor_hash


def genesis_file(deployment: Path) -> Path:
    """Where the genesis model of the deployment file `deployment` lies:
    `deployment.json` -> `deployment.genesis.safetensors`, in the same folder."""
    return deployment.with_name(f"{deployment.stem}.genesis.safetensors")


def write_genesis(deployment: Path, state: StateDict) -> Path:
    """Write the genesis model beside `deployment`; the path written."""
    path = genesis_file(deployment)
    path.write_bytes(encode(state))
    return path


def read_genesis(deployment: Path, expected: bytes) -> StateDict:
    """The genesis model beside `deployment`, refused (one line naming the file) unless it is
    a readable safetensors file hashing to `expected`, the deployment's genesis model hash."""
    path = genesis_file(deployment)
    if not path.is_file():
        raise FileNotFoundError(f"no genesis model file {path} (written by `blockfl chain "
                                "deploy` beside the deployment file): copy it beside "
                                f"{deployment.name}")
    try:
        data = path.read_bytes()
        state = decode(data, max_bytes=MAX_MODEL_BYTES)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a safetensors model file: {exc}") from None
    got = tensor_hash(state)
    if got != expected:
        raise ValueError(f"{path} hashes to {to_hex(got)}, the deployment's genesis model is "
                         f"{to_hex(expected)}: it belongs to another deployment")
    return state
