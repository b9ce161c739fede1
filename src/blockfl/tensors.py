"""Wire format, canonical hashing and validation of model tensors.

A model state is a ``StateDict`` (tensor name -> ``torch.Tensor``). On the wire it is encoded
with safetensors (never pickle). Its identity is ``tensor_hash``: SHA-256 over
``canonical_bytes``, a serialization that does not depend on dict order or on the wire format.
A miner verifying an update uses ``decode_checked``, which decodes, checks, hashes and takes the
norm of a payload in one pass over its bytes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import sys
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from blockfl import safejson

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
    """Decode safetensors bytes into a state dict, its names in ascending order (the order of
    ``canonical_bytes``; safetensors itself returns them in a different order on every call).

    Raises ``TensorFormatError`` with reason ``"payload_too_large"`` if ``data`` exceeds
    ``max_bytes`` and ``"malformed"`` for anything that is not a valid safetensors payload.
    """
    if len(data) > max_bytes:
        raise TensorFormatError("payload_too_large", f"{len(data)} > {max_bytes} bytes")
    try:
        sd = _st_load(bytes(data))
    except Exception as exc:  # the Rust parser raises several exception types
        raise TensorFormatError("malformed", str(exc)[:200]) from exc
    return {name: sd[name] for name in sorted(sd)}  # code point order == UTF-8 byte order


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
    _check_names(sd, spec)
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


def _check_names(names: Mapping[str, object], spec: TensorSpec) -> None:
    """Raise ``missing_tensor`` or ``unexpected_tensor`` unless ``names`` has those of ``spec``."""
    if names.keys() == spec.keys():
        return
    missing = sorted(set(spec) - set(names))
    if missing:
        raise TensorFormatError("missing_tensor", ", ".join(missing))
    unexpected = sorted(set(names) - set(spec))
    if unexpected:
        raise TensorFormatError("unexpected_tensor", ", ".join(unexpected))


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64))


def l2_norm(sd: Mapping[str, torch.Tensor], norms: Mapping[str, float] | None = None) -> float:
    """Euclidean norm of all tensors of ``sd`` taken together (accumulated in float64).

    ``norms`` (from ``checked_norms``) holds tensors' norms already computed.
    """
    norms = norms or {}
    return math.sqrt(sum((norms[k] if k in norms else _norm(t)) ** 2 for k, t in sd.items()))


# The verifier's fused path: decode, spec check, hash and norm straight from the payload bytes.


class _Dtype:
    """A safetensors dtype that ``decode`` maps to torch, with what the fused path needs."""

    __slots__ = ("canonical", "floating", "name", "numpy", "size", "torch")

    def __init__(self, dtype: torch.dtype, numpy: str | None) -> None:
        self.torch = dtype
        self.name = dtype_name(dtype)
        self.numpy = None if numpy is None else np.dtype(numpy)  # little-endian twin
        self.size = dtype.itemsize
        self.floating = dtype.is_floating_point
        name_b = self.name.encode("ascii")
        self.canonical = _U32.pack(len(name_b)) + name_b  # dtype_len and dtype, canonically


# the codes safetensors.torch.load maps to torch dtypes; numpy has no bfloat16 and no float8
_ST_DTYPES = {
    code: _Dtype(getattr(torch, name), np_name)
    for code, (name, np_name) in {
        "F64": ("float64", "<f8"),
        "F32": ("float32", "<f4"),
        "F16": ("float16", "<f2"),
        "BF16": ("bfloat16", None),
        "I64": ("int64", "<i8"),
        "I32": ("int32", "<i4"),
        "I16": ("int16", "<i2"),
        "I8": ("int8", "i1"),
        "U64": ("uint64", "<u8"),
        "U32": ("uint32", "<u4"),
        "U16": ("uint16", "<u2"),
        "U8": ("uint8", "u1"),
        "BOOL": ("bool", "?"),
        "F8_E4M3": ("float8_e4m3fn", None),
        "F8_E4M3FNUZ": ("float8_e4m3fnuz", None),
        "F8_E5M2": ("float8_e5m2", None),
        "F8_E5M2FNUZ": ("float8_e5m2fnuz", None),
        "C64": ("complex64", "<c8"),
    }.items()
    if isinstance(getattr(torch, name, None), torch.dtype)
}
_INFO_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_USIZE_END = 2**64  # safetensors reads shapes and offsets as 64-bit usize


class _Entry(NamedTuple):
    """One tensor of a parsed payload; its data is ``[start, end)`` of the data section."""

    dtype: _Dtype
    shape: tuple[int, ...]
    count: int
    start: int
    end: int
    canonical: bytes  # what canonical_bytes has before the tensor's data


class _Header(NamedTuple):
    """A parsed safetensors header."""

    entries: dict[str, _Entry]
    names: tuple[str, ...]  # sorted, the order of canonical_bytes and of the spec check
    data_len: int  # the size of the data section, which the tensors' data ranges tile
    uniform: _Dtype | None  # the dtype of every tensor if they share one numpy has


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate key")
    return d


def _malformed(detail: str) -> TensorFormatError:
    return TensorFormatError("malformed", detail)


def _parse(data: memoryview) -> tuple[int, _Header]:
    """Parse and validate the safetensors header of ``data``; no tensor data is read.

    Returns where the data section starts, and the header. Accepts what
    ``safetensors.torch.load`` accepts (a dtype it maps to torch, data offsets tiling the data
    section exactly, each range the size of its shape and dtype), but for duplicate keys (load
    takes the last) and keys other than dtype, shape and data_offsets in a tensor entry (load
    ignores them), which are malformed. Sizes are checked against the payload before anything
    is allocated. Honest updates of a round share their header, so small headers are parsed once.
    """
    size = len(data)
    if size < 8:
        raise _malformed("payload shorter than its header length")
    (n,) = _U64.unpack_from(data)
    if n > size - 8:
        raise _malformed(f"header length {n} beyond the payload")
    text = data[8 : 8 + n]
    header = _parse_small_header(bytes(text)) if n <= 4096 else _parse_header(text)
    if header.data_len != size - 8 - n:
        raise _malformed("data_offsets do not cover the data section")
    return 8 + n, header


def _parse_header(raw: bytes | memoryview) -> _Header:
    """The header whose JSON text is ``raw`` (see ``_parse``)."""
    try:  # a header nests 3 deep; the depth is checked before json recurses in C
        header = safejson.loads(raw, max_bytes=len(raw), object_pairs_hook=_unique_keys)
    except ValueError as exc:  # JsonRejected, or a duplicate key from _unique_keys
        raise _malformed(f"header: {str(exc)[:200]}") from None
    if type(header) is not dict:
        raise _malformed("header is no JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (type(meta) is dict and all(type(v) is str for v in meta.values())):
        raise _malformed("__metadata__ is no map of strings")
    entries = {}
    for name, info in header.items():
        if type(info) is not dict or info.keys() != _INFO_KEYS:
            raise _malformed(f"{name[:100]!r}: no tensor entry")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        dtype = _ST_DTYPES.get(code) if type(code) is str else None
        if dtype is None:
            raise _malformed(f"{name[:100]!r}: unknown dtype {str(code)[:20]}")
        if type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
            raise _malformed(f"{name[:100]!r}: bad shape or data_offsets")
        count = 1
        for d in shape:  # overflow of the element count is rejected at each step, as in Rust
            if type(d) is not int or not 0 <= d < _USIZE_END or (count := count * d) >= _USIZE_END:
                raise _malformed(f"{name[:100]!r}: bad shape")
        start, end = offsets
        if type(start) is not int or type(end) is not int or not 0 <= start <= end < _USIZE_END:
            raise _malformed(f"{name[:100]!r}: bad data_offsets")
        if end - start != count * dtype.size:
            raise _malformed(f"{name[:100]!r}: data_offsets do not fit shape and dtype")
        try:
            name_b = name.encode("utf-8")  # fails for a lone surrogate (a JSON escape)
            if count == 0:  # load builds it with torch.empty, which refuses some shapes
                torch.empty(shape, dtype=dtype.torch)
        except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
            raise _malformed(f"{name[:100]!r}: {str(exc)[:200]}") from None
        canonical = b"".join(
            [
                _U32.pack(len(name_b)),
                name_b,
                dtype.canonical,
                _U32.pack(len(shape)),
                *(_U64.pack(d) for d in shape),
                _U64.pack(end - start),
            ]
        )
        entries[name] = _Entry(dtype, tuple(shape), count, start, end, canonical)
    pos = 0  # the tensors' data ranges, by offsets, tile the data section without overlap
    for start, end in sorted((e.start, e.end) for e in entries.values()):
        if start != pos:
            raise _malformed("data_offsets overlap or leave a gap")
        pos = end
    dtypes = {e.dtype for e in entries.values()}
    uniform = dtypes.pop() if len(dtypes) == 1 else None
    if uniform is not None and uniform.numpy is None:
        uniform = None
    return _Header(entries, tuple(sorted(entries)), pos, uniform)


_parse_small_header = functools.lru_cache(maxsize=64)(_parse_header)


_SQUARES_BLOCK = 1 << 14  # elements whose float64 squares stay in cache


def _sum_of_squares(flat: np.ndarray) -> float:
    """Float64 sum of the squares of a float array, in a fixed order.

    numpy adds the squares of each block of ``_SQUARES_BLOCK`` elements pairwise; the blocks'
    sums are added in turn.
    """
    if flat.dtype.itemsize == 8:  # float64 squares and their sum may overflow to inf
        with np.errstate(over="ignore"):
            return _blocked_sum_of_squares(flat)
    return _blocked_sum_of_squares(flat)  # float32 or float16: exact squares, no overflow


def _blocked_sum_of_squares(flat: np.ndarray) -> float:
    if len(flat) <= _SQUARES_BLOCK:
        return float(np.add.reduce(np.square(flat, dtype=np.float64)))
    squares = np.empty(_SQUARES_BLOCK)
    total = 0.0
    for i in range(0, len(flat), _SQUARES_BLOCK):
        block = flat[i : i + _SQUARES_BLOCK]
        total += float(np.add.reduce(np.square(block, out=squares[: len(block)], dtype=np.float64)))
    return total


def _flat(entry: _Entry, buf: bytearray) -> np.ndarray | None:
    """A flat numpy view of the data of ``entry`` in ``buf``; None without numpy dtype or data."""
    dtype = entry.dtype
    if dtype.numpy is None or not entry.count:
        return None
    if entry.start % dtype.size:  # misaligned (safetensors writers align): on its own copy
        return np.frombuffer(bytearray(buf[entry.start : entry.end]), dtype.numpy)
    return np.frombuffer(buf, dtype.numpy, entry.count, entry.start)


def _tensor(entry: _Entry, buf: bytearray, flat: np.ndarray | None) -> torch.Tensor:
    """The tensor of ``entry``: on ``flat``, else on its bytes in ``buf``."""
    if not entry.count:
        return torch.empty(entry.shape, dtype=entry.dtype.torch)  # as load does
    if flat is not None:
        if len(entry.shape) <= 32:  # numpy's limit on dimensions (torch has none)
            return torch.from_numpy(flat.reshape(entry.shape))
        return torch.from_numpy(flat).view(entry.shape)
    start = entry.start
    if start % entry.dtype.size:  # misaligned: on its own copy
        buf, start = bytearray(buf[start : entry.end]), 0
    t = torch.frombuffer(buf, dtype=entry.dtype.torch, count=entry.count, offset=start)
    return t.view(entry.shape)


def decode_checked(
    data: bytes, spec: TensorSpec, *, max_bytes: int
) -> tuple[StateDict, bytes, float]:
    """``decode`` a payload, check it against ``spec``, hash it and take its norm, in one pass.

    Returns ``(sd, tensor_hash(sd), l2_norm(sd))`` for ``sd = decode(data, ...)`` after
    ``check_against_spec(sd, spec)``, raising the same ``TensorFormatError`` reasons in the same
    order (``payload_too_large``, ``malformed``, then those of ``check_against_spec``), but
    parsing the header more strictly (see ``_parse``). The hash is taken over the payload's
    tensor bytes as they are (little-endian, like ``canonical_bytes``); finiteness and norm come
    from numpy views of one copy of the data section, which the tensors share (each its own
    range, so they equal ``decode``'s bit for bit). The norm adds the float64 squares of the
    floating tensors in a fixed order (see ``_sum_of_squares``) and takes one square root, so
    it may differ from ``l2_norm``'s in the last bits; tensors that are not floating
    (``l2_norm`` rejects them, as it does float8) add nothing. A finite sum proves the tensors
    it covers finite, so only a sum that is not finite calls for the element-wise check.
    """
    if len(data) > max_bytes:
        raise TensorFormatError("payload_too_large", f"{len(data)} > {max_bytes} bytes")
    if sys.byteorder != "little":  # numpy views and torch tensors read the data natively
        sd = decode(data, max_bytes=max_bytes)
        return sd, tensor_hash(sd), l2_norm(sd, checked_norms(sd, spec))
    mv = memoryview(data)
    base, header = _parse(mv)
    entries = header.entries
    _check_names(entries, spec)
    buf = bytearray(mv[base:])  # the tensors' memory
    copy = memoryview(buf)  # hashed rather than the payload: it was read last (cache)
    uniform = header.uniform
    sumsq, whole, whole_finite = 0.0, None, True
    if uniform is not None:  # the usual case: the data section is one array, summed at once
        whole = np.frombuffer(buf, uniform.numpy)
        if uniform.floating:
            sumsq = _sum_of_squares(whole)
            whole_finite = math.isfinite(sumsq)
    h = hashlib.sha256(CANONICAL_MAGIC + _U32.pack(len(entries)))
    sd: StateDict = {}
    for name in header.names:  # == sorted(spec)
        shape, dtype = spec[name]
        entry = entries[name]
        if entry.shape != tuple(shape):
            raise TensorFormatError("shape_mismatch", f"{name}: {entry.shape} != {shape}")
        if entry.dtype.name != dtype:
            raise TensorFormatError("dtype_mismatch", f"{name}: {entry.dtype.name} != {dtype}")
        if whole is not None:
            size = entry.dtype.size
            flat = whole[entry.start // size : entry.end // size]
        else:
            flat = _flat(entry, buf)
        sd[name] = t = _tensor(entry, buf, flat)
        if entry.dtype.floating and entry.count:
            if whole is not None:
                finite = whole_finite
            else:  # tensor by tensor, in name order
                if flat is None:  # bfloat16 or float8, which float64 holds exactly
                    flat = t.to(torch.float64).numpy().reshape(-1)
                sq = _sum_of_squares(flat)
                sumsq += sq
                finite = math.isfinite(sq)
            if not finite and not np.isfinite(flat).all():
                raise TensorFormatError("non_finite", name)
        h.update(entry.canonical)
        h.update(copy[entry.start : entry.end])
    return sd, h.digest(), math.sqrt(sumsq)
