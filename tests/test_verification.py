"""A miner's verification of signed updates: every rejection reason, replays and recovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
import torch

from blockfl.config import PrivacyConfig
from blockfl.keys import derived_key
from blockfl.miners.verification import (
    REASONS,
    RoundContext,
    UpdateRejected,
    VerificationPolicy,
    Verifier,
)
from blockfl.models import initial_state, model_spec
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.tensors import StateDict, checked_norms, encode, l2_norm, tensor_hash
from blockfl.wire import UpdateSubmission

ROUND = 3
BASE = bytes(range(32))
DOMAIN = Domain(31337, address_of(derived_key("contract", 0)))
SPEC = model_spec(initial_state("logreg", (64,), 10, seed=0))
KEYS = [derived_key("device", i) for i in range(4)]
POLICY = VerificationPolicy(max_payload_bytes=100_000, norm_bound=10.0, min_ms_per_sample=1.0)
MAX_SAMPLES = 1000
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _delta(seed: int, scale: float = 0.01) -> StateDict:
    """A small deterministic update matching SPEC (seed 0 is reserved for the honest retry)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * scale for k, (shape, _) in SPEC.items()}


def _submission(
    delta: StateDict,
    key: bytes = KEYS[1],
    *,
    round_: int = ROUND,
    base: bytes = BASE,
    samples: int = 50,
    ms: int = 1000,
    domain: Domain = DOMAIN,
    update_hash: bytes | None = None,
    signer: bytes | None = None,
    payload: bytes | None = None,
) -> UpdateSubmission:
    """A submission of `delta` by the device of `key`, signed by `signer` (default `key`)."""
    record = UpdateRecord(
        device=address_of(key),
        round=round_,
        base_model_hash=base,
        update_hash=update_hash if update_hash is not None else tensor_hash(delta),
        samples=samples,
        compute_time_ms=ms,
    )
    signature = sign_update(signer or key, record, domain)
    return UpdateSubmission(
        SignedUpdate(record, signature), payload if payload is not None else encode(delta)
    )


def _ctx(round_: int = ROUND) -> RoundContext:
    return RoundContext(round_, BASE, DOMAIN, SPEC)


def _mangled(sub: UpdateSubmission, mangle: Callable[[bytes], bytes]) -> UpdateSubmission:
    """`sub` with its signature replaced by `mangle(signature)`."""
    signed = SignedUpdate(sub.signed.record, mangle(sub.signed.signature))
    return UpdateSubmission(signed, sub.payload)


def _high_s(sig: bytes) -> bytes:
    """The malleable twin `(r, n - s, v ^ 1)` of a signature: it recovers to the same signer."""
    s = _SECP256K1_N - int.from_bytes(sig[32:64], "big")
    return sig[:32] + s.to_bytes(32, "big") + bytes([sig[64] ^ 1])


def _rewritten_round(sub: UpdateSubmission) -> UpdateSubmission:
    """A record signed for round ROUND - 1 whose round was then rewritten to ROUND."""
    record = replace(sub.signed.record, round=ROUND)
    return UpdateSubmission(SignedUpdate(record, sub.signed.signature), sub.payload)


def _accept_then(verifier: Verifier, sub: UpdateSubmission) -> UpdateSubmission:
    """Accept `_delta(1)` from device 1 first, then return `sub` (a replay of it)."""
    verifier.verify(_submission(_delta(1)), _ctx())
    return sub


@dataclass(frozen=True)
class Case:
    """One bad submission and the reason it must be rejected for."""

    reason: str
    build: Callable[[Verifier], UpdateSubmission]
    verifier: dict[str, object] = field(default_factory=dict)  # Verifier keyword arguments


def _with_duplicate_entry(payload: bytes) -> bytes:
    """`payload` with its header's first tensor entry repeated (safetensors load accepts it)."""
    n = int.from_bytes(payload[:8], "little")
    header = payload[8 : 8 + n]
    first = header.index(b"},") + 1  # the end of the first entry
    header = header[:first] + b"," + header[1:first] + header[first:]
    return len(header).to_bytes(8, "little") + header + payload[8 + n :]


def _wrong_dtype() -> StateDict:
    return {k: v.double() for k, v in _delta(1).items()}


CASES: dict[str, Case] = {
    "oversized": Case(
        "payload_too_large", lambda v: _submission(_delta(1), payload=bytes(100_001))
    ),
    "earlier_round": Case("wrong_round", lambda v: _submission(_delta(1), round_=ROUND - 1)),
    "later_round": Case("wrong_round", lambda v: _submission(_delta(1), round_=ROUND + 1)),
    "stale_base": Case("stale_base_model", lambda v: _submission(_delta(1), base=bytes(32))),
    "unregistered": Case(
        "unknown_device",
        lambda v: _submission(_delta(1)),
        {"allowed_devices": frozenset({address_of(KEYS[0])})},
    ),
    "zero_samples": Case("sample_count", lambda v: _submission(_delta(1), samples=0)),
    "too_many_samples": Case("sample_count", lambda v: _submission(_delta(1), samples=1001)),
    "too_fast": Case("implausible_compute_time", lambda v: _submission(_delta(1), ms=49)),
    "short_signature": Case(
        "malformed_signature", lambda v: _mangled(_submission(_delta(1)), lambda sig: sig[:64])
    ),
    "bad_v": Case(
        "malformed_signature",
        lambda v: _mangled(_submission(_delta(1)), lambda sig: sig[:64] + b"\x1d"),
    ),
    "high_s": Case("malformed_signature", lambda v: _mangled(_submission(_delta(1)), _high_s)),
    "other_signer": Case("bad_signature", lambda v: _submission(_delta(1), signer=KEYS[2])),
    "other_contract": Case(
        "bad_signature",
        lambda v: _submission(_delta(1), domain=Domain(31337, address_of(derived_key("c", 1)))),
    ),
    "other_chain": Case(
        "bad_signature", lambda v: _submission(_delta(1), domain=Domain(1, DOMAIN.contract))
    ),
    "other_round_signature": Case(
        "bad_signature", lambda v: _rewritten_round(_submission(_delta(1), round_=ROUND - 1))
    ),
    "same_device_same_round": Case(
        "replay", lambda v: _accept_then(v, _submission(_delta(2)))
    ),
    "same_submission_again": Case(
        "replay", lambda v: _accept_then(v, _submission(_delta(1)))
    ),
    "same_hash_other_device": Case(
        "replay", lambda v: _accept_then(v, _submission(_delta(1), KEYS[2]))
    ),
    "replay_checked_before_decoding": Case(
        "replay", lambda v: _accept_then(v, _submission(_delta(2), payload=b"junk"))
    ),
    "garbage_payload": Case(
        "malformed_payload", lambda v: _submission(_delta(1), payload=b"not safetensors")
    ),
    "duplicate_tensor_in_header": Case(
        "malformed_payload",
        lambda v: _submission(_delta(1), payload=_with_duplicate_entry(encode(_delta(1)))),
    ),
    "truncated_payload": Case(
        "malformed_payload", lambda v: _submission(_delta(1), payload=encode(_delta(1))[:-7])
    ),
    "missing": Case(
        "missing_tensor",
        lambda v: _submission({k: t for k, t in _delta(1).items() if k != "out.bias"}),
    ),
    "unexpected": Case(
        "unexpected_tensor", lambda v: _submission({**_delta(1), "extra": torch.zeros(3)})
    ),
    "shape": Case(
        "shape_mismatch", lambda v: _submission({**_delta(1), "out.bias": torch.zeros(11)})
    ),
    "dtype": Case("dtype_mismatch", lambda v: _submission(_wrong_dtype())),
    "nan": Case(
        "non_finite",
        lambda v: _submission({**_delta(1), "out.bias": torch.full((10,), float("nan"))}),
    ),
    "inf": Case(
        "non_finite",
        lambda v: _submission({**_delta(1), "out.weight": torch.full((10, 64), float("inf"))}),
    ),
    "hash_of_other_tensors": Case(
        "hash_mismatch", lambda v: _submission(_delta(1), update_hash=tensor_hash(_delta(2)))
    ),
    "payload_swapped": Case(
        "hash_mismatch", lambda v: _submission(_delta(1), payload=encode(_delta(2)))
    ),
    "too_large_norm": Case("norm_bound", lambda v: _submission(_delta(1, scale=1.0))),
    # privacy on: no clip of 0.3 without noise gives a norm of 1.3 (the honest retry has 0.26)
    "unclipped_under_dp": Case(
        "dp_norm_implausible", lambda v: _submission(_delta(1, scale=0.05)),
        {"privacy": PrivacyConfig(mode="client", noise_multiplier=0.0, clip=0.3)},
    ),
    # device 1 has updates in two committed blocks, all its budget of 8 admits
    "past_budget": Case(
        "privacy_budget_exhausted", lambda v: _submission(_delta(1)),
        {"privacy": PrivacyConfig(mode="client", noise_multiplier=2.0, epsilon_budget=8.0),
         "included_rounds": lambda device: 2 if device == address_of(KEYS[1]) else 0},
    ),
}


def test_cases_cover_every_reason():
    assert {case.reason for case in CASES.values()} == REASONS


@pytest.mark.parametrize("name", list(CASES))
def test_bad_update_rejected_with_reason_and_verifier_not_poisoned(name):
    case = CASES[name]
    verifier = Verifier(POLICY, max_samples=MAX_SAMPLES, **case.verifier)
    submission = case.build(verifier)
    with pytest.raises(UpdateRejected) as info:
        verifier.verify(submission, _ctx())
    assert info.value.reason == case.reason, str(info.value)
    # the same round still accepts an honest update, from device 1 where it is not a replay
    key = KEYS[0] if case.reason in ("replay", "unknown_device",
                                     "privacy_budget_exhausted") else KEYS[1]
    verified = verifier.verify(_submission(_delta(0), key), _ctx())
    assert verified.signed.device == address_of(key)


def test_honest_update_passes_with_decoded_delta():
    delta = _delta(0)
    submission = _submission(delta)
    verified = Verifier(POLICY, max_samples=MAX_SAMPLES).verify(submission, _ctx())
    assert verified.signed == submission.signed
    assert verified.payload_size == len(submission.payload)
    assert sorted(verified.delta) == sorted(delta)
    for name, tensor in delta.items():
        assert torch.equal(verified.delta[name], tensor), name


def test_norms_from_the_spec_check_give_the_same_l2_norm():
    delta = _delta(5)
    norms = checked_norms(delta, SPEC)
    assert sorted(norms) == sorted(SPEC)
    assert l2_norm(delta, norms) == l2_norm(delta)


def test_huge_finite_values_are_not_non_finite():
    """A float64 norm that overflows falls back to the element-wise finiteness check."""
    delta = {"w": torch.tensor([3e200, -3e200], dtype=torch.float64)}
    ctx = RoundContext(ROUND, BASE, DOMAIN, {"w": ((2,), "float64")})
    unbounded = VerificationPolicy(norm_bound=float("inf"))
    verified = Verifier(unbounded).verify(_submission(delta), ctx)
    assert torch.equal(verified.delta["w"], delta["w"])
    delta = {"w": torch.tensor([3e200, float("nan")], dtype=torch.float64)}
    with pytest.raises(UpdateRejected, match="non_finite"):
        Verifier(unbounded).verify(_submission(delta), ctx)


def test_default_policy_accepts_any_device():
    verifier = Verifier(VerificationPolicy())
    for i, key in enumerate(KEYS):
        verifier.verify(_submission(_delta(10 + i), key, ms=0), _ctx())


def test_same_device_may_submit_again_next_round():
    verifier = Verifier(POLICY, max_samples=MAX_SAMPLES)
    verifier.verify(_submission(_delta(1)), _ctx())
    verifier.verify(_submission(_delta(2), round_=ROUND + 1), _ctx(ROUND + 1))
    with pytest.raises(UpdateRejected) as info:  # the hash is remembered across rounds
        verifier.verify(_submission(_delta(1), KEYS[2], round_=ROUND + 1), _ctx(ROUND + 1))
    assert info.value.reason == "replay"


def test_forget_before_drops_device_memory_of_earlier_rounds_only():
    verifier = Verifier(POLICY, max_samples=MAX_SAMPLES)
    verifier.verify(_submission(_delta(1)), _ctx())
    verifier.forget_before(ROUND)  # keeps round ROUND
    with pytest.raises(UpdateRejected, match="replay"):
        verifier.verify(_submission(_delta(2)), _ctx())
    verifier.forget_before(ROUND + 1)
    verifier.verify(_submission(_delta(2)), _ctx())  # device memory of ROUND is gone
    with pytest.raises(UpdateRejected) as info:  # but the accepted hashes are kept
        verifier.verify(_submission(_delta(1), KEYS[2]), _ctx())
    assert info.value.reason == "replay"


def test_hash_memory_is_bounded():
    verifier = Verifier(POLICY, max_samples=MAX_SAMPLES, memory=1)
    verifier.verify(_submission(_delta(1), KEYS[1]), _ctx())
    verifier.verify(_submission(_delta(2), KEYS[2]), _ctx())
    verifier.verify(_submission(_delta(1), KEYS[3]), _ctx())  # hash of _delta(1) was evicted
    with pytest.raises(UpdateRejected, match="replay"):
        verifier.verify(_submission(_delta(1), KEYS[0]), _ctx())


def test_rejection_carries_reason_and_detail():
    exc = UpdateRejected("norm_bound", "too big")
    assert (exc.reason, exc.detail, str(exc)) == ("norm_bound", "too big", "norm_bound: too big")
    with pytest.raises(AssertionError):
        UpdateRejected("no_such_reason")
