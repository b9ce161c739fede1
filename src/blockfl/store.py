"""Content-addressed model store: a model's file name is its tensor hash."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from blockfl.hashing import to_hex
from blockfl.tensors import StateDict, decode, encode, tensor_hash

MAX_MODEL_BYTES = 1 << 30  # the largest model file a store or a model reader accepts


class ModelStore:
    """Models as `<0x-hash>.safetensors` files under `root`; writes are atomic."""

    def __init__(self, root: Path, max_bytes: int = MAX_MODEL_BYTES) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def path(self, model_hash: bytes) -> Path:
        """Where the model with this hash lives."""
        return self.root / f"{to_hex(model_hash)}.safetensors"

    def put(self, state: StateDict) -> bytes:
        """Store a model; return its hash."""
        model_hash = tensor_hash(state)
        self.put_bytes(model_hash, encode(state))
        return model_hash

    def put_bytes(self, model_hash: bytes, data: bytes) -> None:
        """Store already encoded bytes under `model_hash` (the caller vouches for the hash)."""
        target = self.path(model_hash)
        if target.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)

    def has(self, model_hash: bytes) -> bool:
        """Whether the model is stored."""
        return self.path(model_hash).exists()

    def get_bytes(self, model_hash: bytes) -> bytes:
        """The stored safetensors bytes (KeyError if absent)."""
        try:
            return self.path(model_hash).read_bytes()
        except FileNotFoundError:
            raise KeyError(to_hex(model_hash)) from None

    def get(self, model_hash: bytes) -> StateDict:
        """The stored model, checked against its hash."""
        state = decode(self.get_bytes(model_hash), max_bytes=self.max_bytes)
        if tensor_hash(state) != model_hash:
            raise ValueError(f"stored model {to_hex(model_hash)} is corrupt")
        return state
