import hashlib
import json
import math
import random
import struct

import pytest
import torch

from blockfl.models import initial_state, model_spec
from blockfl.tensors import (
    TensorFormatError,
    canonical_bytes,
    check_against_spec,
    checked_norms,
    decode,
    decode_checked,
    dtype_name,
    encode,
    hash_hex,
    l2_norm,
    tensor_hash,
)


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.randn(4, generator=g),
        "scale": torch.tensor(2.5),
    }


def test_hash_independent_of_dict_order(state):
    reordered = dict(reversed(list(state.items())))
    assert list(reordered) != list(state)
    assert tensor_hash(reordered) == tensor_hash(state)
    assert canonical_bytes(reordered) == canonical_bytes(state)


def test_hash_is_sha256_of_canonical_bytes(state):
    digest = tensor_hash(state)
    assert len(digest) == 32
    assert digest == hashlib.sha256(canonical_bytes(state)).digest()
    assert hash_hex(state) == "0x" + digest.hex()


def test_canonical_layout_of_one_tensor():
    t = torch.tensor([[1.0, 2.0]], dtype=torch.float32)
    expected = (
        b"BFLT\x01"
        + struct.pack("<I", 1)
        + struct.pack("<I", 1)
        + b"w"
        + struct.pack("<I", 7)
        + b"float32"
        + struct.pack("<I", 2)
        + struct.pack("<QQ", 1, 2)
        + struct.pack("<Q", 8)
        + struct.pack("<ff", 1.0, 2.0)
    )
    assert canonical_bytes({"w": t}) == expected


def test_non_contiguous_tensor_hashes_like_contiguous_copy():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert tensor_hash({"w": t.T}) == tensor_hash({"w": t.T.contiguous()})


def test_hash_changes_with_one_flipped_bit(state):
    flipped = {k: v.clone() for k, v in state.items()}
    flipped["layer.bias"].view(torch.int32)[2] ^= 1 << 7
    assert tensor_hash(flipped) != tensor_hash(state)


def test_hash_changes_with_dtype_shape_and_name(state):
    base = tensor_hash(state)
    as_double = dict(state, scale=state["scale"].double())
    reshaped = dict(state, **{"layer.weight": state["layer.weight"].reshape(3, 4)})
    renamed = {("x" + k if k == "scale" else k): v for k, v in state.items()}
    assert len({base, tensor_hash(as_double), tensor_hash(reshaped), tensor_hash(renamed)}) == 4
    # same raw bytes, different dtype
    ints = {"w": torch.tensor([1.0]).view(torch.int32)}
    assert tensor_hash(ints) != tensor_hash({"w": torch.tensor([1.0])})


def test_encode_decode_roundtrip(state):
    data = encode(state)
    out = decode(data, max_bytes=len(data))
    assert tensor_hash(out) == tensor_hash(state)


def test_decode_rejects_oversized(state):
    data = encode(state)
    with pytest.raises(TensorFormatError) as exc:
        decode(data, max_bytes=len(data) - 1)
    assert exc.value.reason == "payload_too_large"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00" * 7,
        b"not a safetensors payload at all",
        struct.pack("<Q", 2**40) + b"{}",
        struct.pack("<Q", 9) + b"{not json",
        struct.pack("<Q", 60)
        + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}    '
        + b"\x00" * 8,
        bytes(range(256)) * 4,
    ],
)
def test_decode_rejects_malformed(garbage):
    with pytest.raises(TensorFormatError) as exc:
        decode(garbage, max_bytes=1 << 20)
    assert exc.value.reason == "malformed"
    assert isinstance(exc.value, ValueError)


def test_decode_rejects_truncated_payload(state):
    data = encode(state)
    with pytest.raises(TensorFormatError) as exc:
        decode(data[:-4], max_bytes=1 << 20)
    assert exc.value.reason == "malformed"


def test_check_against_spec_reasons():
    base = initial_state("mlp", (1, 8, 8), 10, seed=0)
    spec = model_spec(base)
    check_against_spec(base, spec)
    cases = {
        "missing_tensor": {k: v for k, v in base.items() if k != "out.bias"},
        "unexpected_tensor": dict(base, extra=torch.zeros(1)),
        "shape_mismatch": dict(base, **{"out.bias": torch.zeros(11)}),
        "dtype_mismatch": dict(base, **{"out.bias": torch.zeros(10, dtype=torch.float64)}),
        "non_finite": dict(base, **{"out.bias": torch.full((10,), float("nan"))}),
    }
    for reason, sd in cases.items():
        with pytest.raises(TensorFormatError) as exc:
            check_against_spec(sd, spec)
        assert exc.value.reason == reason
    inf_state = dict(base, **{"out.bias": torch.full((10,), float("inf"))})
    check_against_spec(inf_state, spec, require_finite=False)


def test_l2_norm():
    sd = {"a": torch.tensor([3.0]), "b": torch.tensor([[4.0, 0.0]])}
    assert l2_norm(sd) == pytest.approx(5.0)


# decode_checked: the verifier's fused decode, spec check, hash and norm

_FUSED_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.bool,
    torch.complex64,
]
_SHAPES = [(), (0,), (1,), (7,), (3, 4), (2, 0, 5), (2, 3, 2), (1, 1, 1, 3), (64, 10)]
_NAMES = ["w", "out.bias", "out.weight", "features.1.weight", "a", "Z", "é", "名", "x" * 40, ""]


def _random_tensor(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        return (torch.randn(shape, generator=gen, dtype=torch.float32) * 3).to(dtype)
    if dtype in (torch.uint16, torch.uint32, torch.uint64):
        return torch.randint(0, 60000, shape, generator=gen).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=gen).to(dtype)


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    names = [_NAMES[i] for i in torch.randperm(len(_NAMES), generator=gen)[: 1 + seed % 6]]
    uniform = seed % 3 == 0  # every tensor float32, as the models have it
    state = {}
    for name in names:
        shape = _SHAPES[int(torch.randint(len(_SHAPES), (1,), generator=gen))]
        dtype = torch.float32
        if not uniform:
            dtype = _FUSED_DTYPES[int(torch.randint(len(_FUSED_DTYPES), (1,), generator=gen))]
        state[name] = _random_tensor(gen, shape, dtype)
    return state


def _spec(sd: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), dtype_name(v.dtype)) for k, v in sd.items()}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t`` as integers with its bits, so that NaN and float8 compare exactly."""
    flat = t.contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)


def _reference_norm(sd: dict[str, torch.Tensor]) -> float:
    """The float64 L2 norm of the floating tensors (l2_norm rejects float8, so not via it)."""
    return math.sqrt(
        sum(float(t.double().square().sum()) for t in sd.values() if t.is_floating_point())
    )


def _assert_same_tensors(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert sorted(out) == sorted(ref)
    for name, t in ref.items():
        assert out[name].dtype == t.dtype, name
        assert out[name].shape == t.shape, name
        assert out[name].is_contiguous(), name
        assert torch.equal(_bits(out[name]), _bits(t)), name


@pytest.mark.parametrize("seed", range(120))
def test_decode_checked_matches_decode_hash_and_norm(seed):
    sd = _random_state(seed)
    data = encode(sd)
    spec = _spec(sd)
    out, digest, norm = decode_checked(data, spec, max_bytes=len(data))
    ref = decode(data, max_bytes=len(data))
    if not any(t.dtype.itemsize == 1 and t.is_floating_point() for t in ref.values()):
        check_against_spec(ref, spec)  # which has no isfinite for float8
    _assert_same_tensors(out, ref)
    assert digest == tensor_hash(ref) == tensor_hash(out)
    assert norm == pytest.approx(_reference_norm(ref), rel=1e-12, abs=0.0)
    if all(t.dtype in (torch.float32, torch.float64, torch.float16) for t in ref.values()):
        assert norm == pytest.approx(l2_norm(ref, checked_norms(ref, spec)), rel=1e-12, abs=0.0)
    assert encode(out) == data  # no tensors share memory
    assert decode_checked(data, spec, max_bytes=len(data))[1:] == (digest, norm)  # cached header


def test_decode_checked_tensors_are_writable_and_independent():
    sd = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}
    data = encode(sd)
    out, _, _ = decode_checked(data, _spec(sd), max_bytes=len(data))
    out["a"].add_(1)
    assert torch.equal(out["b"], torch.ones(4))
    assert torch.equal(decode(data, max_bytes=len(data))["a"], sd["a"])
    again, _, _ = decode_checked(data, _spec(sd), max_bytes=len(data))
    assert torch.equal(again["a"], sd["a"])


def test_decode_checked_norm_of_a_model_update():
    spec = model_spec(initial_state("mlp", (64,), 10, seed=0))
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(shape, generator=gen) * 0.01 for k, (shape, _) in spec.items()}
    data = encode(sd)
    _, digest, norm = decode_checked(data, spec, max_bytes=len(data))
    assert digest == tensor_hash(sd)
    assert norm == pytest.approx(l2_norm(sd, checked_norms(sd, spec)), rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_decode_checked_norm_of_tensors_larger_than_a_block(dtype):
    gen = torch.Generator().manual_seed(2)
    sd = {"w": torch.randn(300, 200, generator=gen).to(dtype), "b": torch.randn(70_001).to(dtype)}
    data = encode(sd)
    _, digest, norm = decode_checked(data, _spec(sd), max_bytes=len(data))
    assert digest == tensor_hash(sd)
    assert norm == pytest.approx(_reference_norm(sd), rel=1e-13, abs=0.0)
    sd["b"][50_000] = float("inf")
    data = encode(sd)
    with pytest.raises(TensorFormatError, match="non_finite: b"):
        decode_checked(data, _spec(sd), max_bytes=len(data))


def _spec_cases() -> dict[str, tuple[str, dict[str, torch.Tensor]]]:
    nan, inf = float("nan"), float("inf")
    c = torch.ones(4, dtype=torch.float64)
    base = {"a": torch.ones(3), "b": torch.ones(2, 2), "c": c}
    return {
        "missing": ("missing_tensor", {"a": base["a"], "b": base["b"]}),
        "unexpected": ("unexpected_tensor", dict(base, d=torch.ones(1))),
        "missing and unexpected": ("missing_tensor", {"a": base["a"], "b": base["b"], "d": c}),
        "shape": ("shape_mismatch", dict(base, b=torch.ones(4))),
        "dtype": ("dtype_mismatch", dict(base, b=torch.ones(2, 2, dtype=torch.float16))),
        "nan": ("non_finite", dict(base, b=torch.tensor([[1.0, nan], [0.0, 0.0]]))),
        "inf float64": ("non_finite", dict(base, c=torch.tensor([1.0, inf, 0, 0]).double())),
        "nan before later shape": (
            "non_finite",
            dict(base, a=torch.full((3,), nan), c=c[:3].clone()),
        ),
        "shape before later nan": (
            "shape_mismatch",
            dict(base, a=c[:2].clone(), b=torch.full((2, 2), nan)),
        ),
        "dtype before later inf": (
            "dtype_mismatch",
            dict(base, a=torch.ones(3, dtype=torch.int32), b=torch.full((2, 2), inf)),
        ),
        "nan bfloat16": ("non_finite", dict(base, b=torch.full((2, 2), nan).bfloat16())),
    }


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("case", list(_spec_cases()))
def test_decode_checked_raises_the_reasons_of_check_against_spec_in_order(case, uniform):
    reason, sd = _spec_cases()[case]
    spec = {"a": ((3,), "float32"), "b": ((2, 2), "float32"), "c": ((4,), "float64")}
    if uniform:  # one dtype: the data section is checked as one array
        sd = {k: v.float() if v.dtype == torch.float64 else v for k, v in sd.items()}
        spec["c"] = ((4,), "float32")
    if case == "nan bfloat16":
        spec["b"] = ((2, 2), "bfloat16")
    data = encode(sd)
    with pytest.raises(TensorFormatError) as ref:
        check_against_spec(decode(data, max_bytes=len(data)), spec)
    assert ref.value.reason == reason
    with pytest.raises(TensorFormatError) as exc:
        decode_checked(data, spec, max_bytes=len(data))
    assert (exc.value.reason, exc.value.detail) == (ref.value.reason, ref.value.detail)


def test_decode_checked_huge_finite_float64_is_finite_with_infinite_norm():
    sd = {"w": torch.tensor([3e200, -3e200], dtype=torch.float64)}
    data = encode(sd)
    out, _, norm = decode_checked(data, _spec(sd), max_bytes=len(data))
    assert torch.equal(out["w"], sd["w"])
    assert norm == math.inf == l2_norm(sd, checked_norms(sd, _spec(sd)))


def test_decode_checked_rejects_oversized():
    data = encode({"w": torch.ones(2)})
    with pytest.raises(TensorFormatError) as exc:
        decode_checked(data, {"w": ((2,), "float32")}, max_bytes=len(data) - 1)
    assert exc.value.reason == "payload_too_large"


def _raw(header: str | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors payload from its JSON header and data section."""
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def _w(**fields: object) -> str:
    """A header with one tensor "w" (by default float32 of shape (2,), 8 bytes of data)."""
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], **fields}
    return json.dumps({"w": {k: v for k, v in entry.items() if v is not None}})


_TWO = (
    '{"a":{"dtype":"F32","shape":[2],"data_offsets":%s},'
    '"b":{"dtype":"F32","shape":[2],"data_offsets":%s}}'
)

# hostile payloads that safetensors.torch.load rejects too
HOSTILE = {
    "empty": b"",
    "short length": b"\x00" * 7,
    "length beyond payload": _raw(_w(), bytes(8), length=2**63),
    "length just beyond payload": _raw(_w(), bytes(8), length=len(_w()) + 9),
    "length 2**64-1": _raw("{}", length=2**64 - 1),
    "not utf-8": _raw(b'{"\xff":{}}'),
    "not json": _raw("{not json"),
    "trailing garbage": _raw(_w() + "x", bytes(8)),
    "json list": _raw("[]"),
    "json number": _raw("7"),
    "json string": _raw('"w"'),
    "json null": _raw("null"),
    "deeply nested": _raw('{"w":' + "[" * 100_000 + "]" * 100_000 + "}"),
    "nested with few brackets": _raw('{"w":' + "[" * 999 + "]" * 999 + "}"),
    "deeply nested after brackets in a string": _raw(
        '{"w":["' + '[{\\"' * 2000 + '",' + "[" * 5000 + "]" * 5000 + "]}"
    ),
    "entry not object": _raw('{"w":[1,2]}', bytes(8)),
    "duplicate field": _raw(
        '{"w":{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}}', bytes(8)
    ),
    "missing field": _raw(_w(shape=None), bytes(8)),
    "unknown dtype": _raw(_w(dtype="F99"), bytes(8)),
    "dtype torch lacks": _raw(_w(dtype="F8_E8M0", shape=[8]), bytes(8)),
    "dtype not string": _raw(_w(dtype=["F32"]), bytes(8)),
    "shape not list": _raw(_w(shape=2), bytes(8)),
    "negative dim": _raw(_w(shape=[-2]), bytes(8)),
    "float dim": _raw(_w(shape=[2.0]), bytes(8)),
    "bool dim": _raw(_w(shape=[True, 2]), bytes(8)),
    "dim beyond u64": _raw(_w(shape=[2**64, 0], data_offsets=[0, 0])),
    "element count overflows": _raw(_w(shape=[2**40, 2**40, 0], data_offsets=[0, 0])),
    "empty dim beyond int64": _raw(_w(shape=[2**63, 0], data_offsets=[0, 0])),
    "empty with stride overflow": _raw(_w(shape=[0, 2**62, 2], data_offsets=[0, 0])),
    "huge shape": _raw(_w(shape=[2**31, 2**31]), bytes(8)),
    "offsets not list": _raw(_w(data_offsets=8), bytes(8)),
    "three offsets": _raw(_w(data_offsets=[0, 8, 8]), bytes(8)),
    "negative offset": _raw(_w(data_offsets=[-8, 0]), bytes(8)),
    "reversed offsets": _raw(_w(data_offsets=[8, 0]), bytes(8)),
    "offset beyond u64": _raw(_w(data_offsets=[0, 2**64 + 8]), bytes(8)),
    "offsets not ints": _raw(_w(data_offsets=[0.0, 8.0]), bytes(8)),
    "offsets not the size": _raw(_w(data_offsets=[0, 12]), bytes(12)),
    "data beyond payload": _raw(_w(shape=[2**20], data_offsets=[0, 2**22]), bytes(8)),
    "truncated data": _raw(_w(), bytes(7)),
    "trailing data": _raw(_w(), bytes(9)),
    "not at zero": _raw(_w(data_offsets=[4, 12]), bytes(12)),
    "overlap": _raw(_TWO % ("[0,8]", "[4,12]"), bytes(12)),
    "same range": _raw(_TWO % ("[0,8]", "[0,8]"), bytes(16)),
    "gap": _raw(_TWO % ("[0,8]", "[12,20]"), bytes(20)),
    "lone surrogate name": _raw(_w().replace('"w"', '"\\ud800"'), bytes(8)),
    "metadata not strings": _raw('{"__metadata__":{"a":1}}'),
    "metadata not object": _raw('{"__metadata__":[]}'),
    "nan literal": _raw('{"__metadata__":{"a":NaN}}'),
}
# hostile payloads that load accepts (the last of duplicate keys wins, unknown fields ignored)
STRICTER = {
    "duplicate tensor": _raw(
        '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        bytes(8),
    ),
    "extra field": _raw(_w(extra=1), bytes(8)),
}


@pytest.mark.parametrize("name", list(HOSTILE) + list(STRICTER))
def test_decode_checked_rejects_hostile_payloads_as_malformed(name):
    data = HOSTILE.get(name, STRICTER.get(name))
    spec = {"w": ((2,), "float32")}
    for _ in range(2):  # also once the header may be cached
        with pytest.raises(TensorFormatError) as exc:
            decode_checked(data, spec, max_bytes=1 << 30)
        assert exc.value.reason == "malformed", str(exc.value)
    if name in HOSTILE:
        with pytest.raises(TensorFormatError, match="malformed"):
            decode(data, max_bytes=1 << 30)
    else:
        decode(data, max_bytes=1 << 30)


def test_decode_checked_accepts_what_load_accepts_at_the_edges():
    cases = {
        "leading space": (" " + _w(), bytes(8)),
        "metadata": ('{"__metadata__":{"format":"pt"},' + _w()[1:], bytes(8)),
        "null metadata": ('{"__metadata__":null,' + _w()[1:], bytes(8)),
        "empty huge dims": (_w(shape=[2**62, 0, 2**62], data_offsets=[0, 0]), b""),
        "ranges out of name order": (_TWO % ("[8,16]", "[0,8]"), bytes(range(16))),
        "empty header": ("{}", b""),
    }
    for name, (header, data) in cases.items():
        payload = _raw(header, data)
        ref = decode(payload, max_bytes=1 << 20)
        spec = _spec(ref)
        out, digest, _ = decode_checked(payload, spec, max_bytes=1 << 20)
        _assert_same_tensors(out, ref)
        assert digest == tensor_hash(ref), name


def test_decode_checked_misaligned_tensor_gets_an_aligned_copy():
    # a float32 after one byte of uint8 (safetensors writers would align it)
    header = json.dumps(
        {
            "b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
            "w": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]},
            "x": {"dtype": "BF16", "shape": [1], "data_offsets": [9, 11]},
        }
    )
    payload = _raw(header, b"\x07" + struct.pack("<ff", 1.5, -2.0) + b"\x80\x3f")
    ref = decode(payload, max_bytes=1 << 20)
    out, digest, norm = decode_checked(payload, _spec(ref), max_bytes=1 << 20)
    _assert_same_tensors(out, ref)
    assert out["w"].data_ptr() % 4 == 0
    assert digest == tensor_hash(ref)
    assert norm == pytest.approx(math.sqrt(1.5**2 + 2.0**2 + 1.0))


def test_decode_checked_cached_header_still_checks_the_data_length():
    sd = {"w": torch.ones(4)}
    data = encode(sd)
    decode_checked(data, _spec(sd), max_bytes=len(data))
    for bad in (data[:-4], data + bytes(4)):
        with pytest.raises(TensorFormatError, match="malformed"):
            decode_checked(bad, _spec(sd), max_bytes=len(bad))


def test_decode_checked_large_header_is_not_cached_but_parsed():
    # a header over 4 KiB, with more brackets than json may nest (so their nesting is checked)
    sd = {f"t{i:04d}[{{": torch.full((1,), float(i)) for i in range(400)}
    data = encode(sd)
    assert struct.unpack_from("<Q", data)[0] > 4096
    out, digest, norm = decode_checked(data, _spec(sd), max_bytes=len(data))
    _assert_same_tensors(out, sd)
    assert digest == tensor_hash(sd)
    assert norm == pytest.approx(l2_norm(sd))


@pytest.mark.parametrize("seed", range(4))
def test_decode_checked_on_mutated_headers_agrees_with_load(seed):
    gen = random.Random(seed)
    sd = _random_state(seed * 7 + 1)
    data = encode(sd)
    spec = _spec(sd)
    n = struct.unpack_from("<Q", data)[0]
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(gen.randint(1, 3)):
            pos = gen.randrange(8 + n) if gen.random() < 0.9 else gen.randrange(8)
            json_byte = gen.random() < 0.7
            mutated[pos] = (
                gen.choice(b'0123456789[]{},:"-. eE') if json_byte else gen.randrange(256)
            )
        mutated = bytes(mutated)
        try:
            out, digest, _ = decode_checked(mutated, spec, max_bytes=1 << 30)
        except TensorFormatError as exc:
            if exc.reason == "malformed":  # so for load (no mutation makes a duplicate key)
                with pytest.raises(TensorFormatError, match="malformed"):
                    decode(mutated, max_bytes=1 << 30)
            continue
        ref = decode(mutated, max_bytes=1 << 30)
        _assert_same_tensors(out, ref)
        assert digest == tensor_hash(ref)


def test_fused_dtypes_are_those_safetensors_load_maps():
    from safetensors.torch import _TYPES

    from blockfl.tensors import _ST_DTYPES

    assert {code: d.torch for code, d in _ST_DTYPES.items()} == _TYPES
