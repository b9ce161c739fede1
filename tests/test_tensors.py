import hashlib
import struct

import pytest
import torch

from blockfl.models import initial_state, model_spec
from blockfl.tensors import (
    TensorFormatError,
    canonical_bytes,
    check_against_spec,
    decode,
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
