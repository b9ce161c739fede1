"""Use a round's global model: fetch it checked against the chain, evaluate it, predict with it.

A global model is a safetensors file of float32 tensors whose tensor hash the chain records for
its round; `fetch` takes it from miners or from the model stores of a network run directory
(`runN/minerI/models/<hash>.safetensors`) and returns it only if it hashes to the chain's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blockfl.chain import inspection
from blockfl.chain.ledger import Ledger
from blockfl.client import MinerClient, MinerUnavailable
from blockfl.config import Config
from blockfl.hashing import to_hex
from blockfl.models import model_for_state
from blockfl.store import MAX_MODEL_BYTES
from blockfl.tensors import StateDict, TensorFormatError, decode, tensor_hash


@dataclass(frozen=True)
class FetchedModel:
    """A global model's safetensors bytes, its hash (= the chain's) and where it came from."""

    round: int
    data: bytes
    model_hash: bytes
    source: str


def _hash_of(data: bytes) -> bytes | None:
    try:
        return tensor_hash(decode(data, max_bytes=MAX_MODEL_BYTES))
    except TensorFormatError:
        return None


def fetch(
    ledger: Ledger, round_: int, miners: Sequence[MinerClient] = (), run_dir: Path | None = None
) -> FetchedModel:
    """The global model of `round_` from the first source whose copy hashes to the on-chain
    hash; LookupError naming what each source had if none does."""
    chain_hash = inspection.model_hash(ledger, round_)
    name = f"{to_hex(chain_hash)}.safetensors"
    candidates: list[tuple[str, bytes | None]] = []
    tried: list[str] = []
    if run_dir is not None:
        paths = sorted(run_dir.glob(f"miner*/models/{name}"))
        candidates += [(str(p), p.read_bytes()) for p in paths]
        if not paths:
            tried.append(f"{run_dir}: no miner*/models/{name}")
    for client in miners:
        try:
            candidates.append((client.url, client.model_bytes(chain_hash)))
        except (MinerUnavailable, ValueError) as exc:
            tried.append(f"{client.url}: {exc}")
    for source, data in candidates:
        if data is None:
            tried.append(f"{source}: has no such model")
        elif _hash_of(data) == chain_hash:
            return FetchedModel(round_, data, chain_hash, source)
        else:
            tried.append(f"{source}: its copy does not hash to the chain's value")
    if not tried:
        raise LookupError("no source to fetch the model from: give --miners or --run-dir")
    raise LookupError(f"no source holds the global model of round {round_} "
                      f"({to_hex(chain_hash)}): " + "; ".join(tried))


def load(path: Path) -> StateDict:
    """A safetensors model file."""
    data = Path(path).read_bytes()
    return decode(data, max_bytes=len(data))


def build(config: Config, state: StateDict, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """The configured model architecture with `state` loaded, ready for inference."""
    try:
        model = model_for_state(config.model.name, input_shape, state)
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"the model file does not fit model {config.model.name!r} on inputs "
                         f"of shape {input_shape}: {exc}") from None
    return model.eval()


def as_inputs(array: np.ndarray, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Samples for the model: (N, *input_shape), or one sample, or N flattened samples."""
    size = int(np.prod(input_shape))
    if array.size % size != 0:
        raise ValueError(f"the input holds {array.size} values, not a whole number of samples "
                         f"of shape {input_shape} ({size} values each)")
    return torch.as_tensor(np.asarray(array, dtype=np.float32).reshape(-1, *input_shape))


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs for a batch (no gradients)."""
    with torch.no_grad():
        return model(x)
