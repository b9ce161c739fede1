"""Wire format, canonical hashing and validation of model tensors.

A model state is a ``StateDict`` (tensor name -> ``torch.Tensor``). On the wire it is encoded
with safetensors (never pickle). Its identity is ``tensor_hash``: SHA-256 over
``canonical_bytes``, a serialization that does not depend on dict order or on the wire format.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from collections.abc import Iterator, Mapping

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

StateDict = dict[str, torch.Tensor]
TensorSpec = Mapping[str, tuple[tuple[int, ...], str]]

CANONICAL_MAGIC = b"BFLT\x01"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class TensorFormatError(ValueError):
    """Invalid tensor payload or state; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def dtype_name(dtype: torch.dtype) -> str:
    """Return the canonical dtype name, e.g. ``"float32"`` for ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


def encode(sd: Mapping[str, torch.Tensor]) -> bytes:
    """Encode a state dict as safetensors bytes."""
    return _st_save({name: t.detach().cpu().contiguous() for name, t in sd.items()})


def decode(data: bytes, *, max_bytes: int) -> StateDict:
    """Decode safetensors bytes into a state dict.

    Raises ``TensorFormatError`` with reason ``"payload_too_large"`` if ``data`` exceeds
    ``max_bytes`` and ``"malformed"`` for anything that is not a valid safetensors payload.
    """
    if len(data) > max_bytes:
        raise TensorFormatError("payload_too_large", f"{len(data)} > {max_bytes} bytes")
    try:
        return _st_load(bytes(data))
    except Exception as exc:  # the Rust parser raises several exception types
        raise TensorFormatError("malformed", str(exc)[:200]) from exc


def _raw_le_bytes(t: torch.Tensor) -> memoryview:
    """Little-endian, C-contiguous raw bytes of ``t`` without per-element Python work."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
    if sys.byteorder == "big" and flat.element_size() > 1:
        raw = raw.view(-1, flat.element_size()).flip(1).reshape(-1)
    return memoryview(raw.numpy())


def _canonical_chunks(sd: Mapping[str, torch.Tensor]) -> Iterator[bytes | memoryview]:
    yield CANONICAL_MAGIC
    yield _U32.pack(len(sd))
    for name in sorted(sd, key=lambda n: n.encode("utf-8")):
        t = sd[name]
        name_b = name.encode("utf-8")
        dtype_b = dtype_name(t.dtype).encode("ascii")
        raw = _raw_le_bytes(t)
        yield b"".join(
            [
                _U32.pack(len(name_b)),
                name_b,
                _U32.pack(len(dtype_b)),
                dtype_b,
                _U32.pack(t.dim()),
                *(_U64.pack(d) for d in t.shape),
                _U64.pack(raw.nbytes),
            ]
        )
        yield raw


def canonical_bytes(sd: Mapping[str, torch.Tensor]) -> bytes:
    """Canonical serialization of a state dict, independent of dict order.

    Layout (all integers little-endian)::

        magic   5 bytes  b"BFLT\\x01"
        count   u32      number of tensors
        then, for each tensor in ascending order of its UTF-8 encoded name:
          name_len  u32, name   UTF-8 bytes
          dtype_len u32, dtype  ASCII torch dtype name without "torch.", e.g. "float32"
          ndim      u32, dims   ndim x u64 (0-dim scalars have no dims)
          nbytes    u64, data   raw element bytes, C-contiguous (row-major), little-endian
    """
    return b"".join(bytes(c) for c in _canonical_chunks(sd))


def tensor_hash(sd: Mapping[str, torch.Tensor]) -> bytes:
    """SHA-256 (32 bytes) of ``canonical_bytes(sd)``, computed without materializing it."""
    h = hashlib.sha256()
    for chunk in _canonical_chunks(sd):
        h.update(chunk)
    return h.digest()


def hash_hex(sd: Mapping[str, torch.Tensor]) -> str:
    """``tensor_hash(sd)`` as ``0x``-prefixed lowercase hex."""
    return "0x" + tensor_hash(sd).hex()


def check_against_spec(
    sd: Mapping[str, torch.Tensor], spec: TensorSpec, *, require_finite: bool = True
) -> None:
    """Check names, shapes and dtypes of ``sd`` against ``spec`` (name -> (shape, dtype name)).

    Raises ``TensorFormatError`` with reason ``"missing_tensor"``, ``"unexpected_tensor"``,
    ``"shape_mismatch"``, ``"dtype_mismatch"`` or (if ``require_finite``) ``"non_finite"``.
    """
    _check_spec(sd, spec, require_finite, None)


def checked_norms(sd: Mapping[str, torch.Tensor], spec: TensorSpec) -> dict[str, float]:
    """``check_against_spec(sd, spec)``, returning the float64 norm of each floating tensor.

    Each norm doubles as its tensor's finiteness check, so a tensor is read once for both: an
    inf or NaN element makes the norm inf or NaN, so a finite norm proves every element finite
    (only a non-finite norm, e.g. float64 overflow, needs the element-wise check). Pass the
    result to ``l2_norm`` to get the norm of ``sd`` without reading the tensors again.
    """
    norms: dict[str, float] = {}
    _check_spec(sd, spec, True, norms)
    return norms


def _check_spec(
    sd: Mapping[str, torch.Tensor],
    spec: TensorSpec,
    require_finite: bool,
    norms: dict[str, float] | None,
) -> None:
    """``check_against_spec``; if ``norms`` is given, fill it with the floating tensors' norms."""
    missing = sorted(set(spec) - set(sd))
    if missing:
        raise TensorFormatError("missing_tensor", ", ".join(missing))
    unexpected = sorted(set(sd) - set(spec))
    if unexpected:
        raise TensorFormatError("unexpected_tensor", ", ".join(unexpected))
    for name in sorted(spec):
        shape, dtype = spec[name]
        t = sd[name]
        if tuple(t.shape) != tuple(shape):
            raise TensorFormatError("shape_mismatch", f"{name}: {tuple(t.shape)} != {shape}")
        if dtype_name(t.dtype) != dtype:
            raise TensorFormatError("dtype_mismatch", f"{name}: {dtype_name(t.dtype)} != {dtype}")
        if not (require_finite and t.is_floating_point()):
            continue
        if norms is not None:
            norms[name] = _norm(t)
            if math.isfinite(norms[name]):
                continue
        if not bool(torch.isfinite(t).all()):
            raise TensorFormatError("non_finite", name)


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64))


def l2_norm(sd: Mapping[str, torch.Tensor], norms: Mapping[str, float] | None = None) -> float:
    """Euclidean norm of all tensors of ``sd`` taken together (accumulated in float64).

    ``norms`` (from ``checked_norms``) holds tensors' norms already computed.
    """
    norms = norms or {}
    return math.sqrt(sum((norms[k] if k in norms else _norm(t)) ** 2 for k, t in sd.items()))
