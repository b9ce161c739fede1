"""Throughput of a miner's update verification against the raw cost of recover + SHA-256.

For each model, distinct devices submit distinct signed updates, so no replay check triggers.
`verify/s` is the rate of `Verifier.verify`; `baseline/s` is the rate of one secp256k1 public-key
recovery (coincurve) plus SHA-256 (hashlib) over the payload bytes, the least any verifier must
do; `ratio` is verify time over baseline time (the target is at most 2). The breakdown times
each check of the verify path on its own: `payload` is `decode_checked`, which decodes the
payload, checks it against the spec (finite values included), hashes it and takes its norm in
one pass; the `unfused` line times the separate functions it replaces.

Run: python benchmarks/bench_verification.py [--repeats N]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Sequence

import coincurve
import torch

from blockfl.keys import derived_key
from blockfl.miners.verification import RoundContext, VerificationPolicy, Verifier
from blockfl.models import initial_state, model_spec
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.tensors import StateDict, checked_norms, decode, decode_checked, tensor_hash
from blockfl.tensors import encode as encode_tensors
from blockfl.wire import UpdateSubmission

DOMAIN = Domain(31337, address_of(derived_key("contract", 0)))
BASE = bytes(32)
ROUND = 1
BIG_SHAPES = {"fc1.weight": (1000, 784), "fc1.bias": (1000,), "fc2.weight": (216, 1000)}


def _submissions(spec: dict, count: int, seed: int) -> list[UpdateSubmission]:
    """`count` updates of shape `spec`, each from its own device with its own delta."""
    gen = torch.Generator().manual_seed(seed)
    subs = []
    for i in range(count):
        delta = {k: torch.randn(shape, generator=gen) * 0.01 for k, (shape, _) in spec.items()}
        key = derived_key("bench-device", i, seed)
        record = UpdateRecord(address_of(key), ROUND, BASE, tensor_hash(delta), 100, 1000)
        signed = SignedUpdate(record, sign_update(key, record, DOMAIN))
        subs.append(UpdateSubmission(signed, encode_tensors(delta)))
    return subs


def _per_item(fn: Callable[[object], object], items: Sequence[object], repeats: int) -> float:
    """Best over `repeats` of the mean seconds of `fn` per item."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best


def _baseline_one(item: tuple[bytes, bytes, bytes]) -> None:
    """Recover + SHA-256 only, the EIP-712 digest precomputed."""
    sig, digest, payload = item
    coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None)
    hashlib.sha256(payload).digest()


def _rates(
    subs: list[UpdateSubmission],
    ctx: RoundContext,
    raw: list[tuple[bytes, bytes, bytes]],
    repeats: int,
) -> tuple[float, float]:
    """Best mean seconds per update of `Verifier.verify` and of the baseline.

    Each round times one verify pass (a fresh verifier, so no replays) then one baseline pass,
    so that a change of machine load between them skews the ratio less; the first round warms up.
    """
    best_verify = best_base = float("inf")
    for _ in range(repeats + 1):
        verifier = Verifier(VerificationPolicy(norm_bound=1e9))
        start = time.perf_counter()
        for sub in subs:
            verifier.verify(sub, ctx)
        best_verify = min(best_verify, (time.perf_counter() - start) / len(subs))
        best_base = min(best_base, _per_item(_baseline_one, raw, 1))  # type: ignore[arg-type]
    return best_verify, best_base


def bench(name: str, spec: dict, count: int, repeats: int) -> tuple[str, list[str]]:
    """One table row and the per-check breakdown lines for model `name`."""
    subs = _submissions(spec, count, seed=len(name))
    ctx = RoundContext(ROUND, BASE, DOMAIN, spec)
    n_params = sum(torch.Size(shape).numel() for shape, _ in spec.values())
    raw = [
        (s.signed.signature[:64] + bytes([s.signed.signature[64] - 27]),
         s.signed.record.digest(DOMAIN), s.payload)
        for s in subs
    ]
    verify, base = _rates(subs, ctx, raw, repeats)
    deltas: list[StateDict] = [decode(s.payload, max_bytes=2**30) for s in subs]
    checks = {
        "signature": _per_item(lambda s: s.signed.verify(DOMAIN), subs, repeats),
        "payload": _per_item(
            lambda s: decode_checked(s.payload, spec, max_bytes=2**30), subs, repeats),
        "recover": _per_item(
            lambda r: coincurve.PublicKey.from_signature_and_message(r[0], r[1], hasher=None),
            raw, repeats),
        "sha256": _per_item(lambda r: hashlib.sha256(r[2]).digest(), raw, repeats),
    }
    unfused = {
        "decode": _per_item(lambda s: decode(s.payload, max_bytes=2**30), subs, repeats),
        "spec+finite+norm": _per_item(lambda d: checked_norms(d, spec), deltas, repeats),
        "tensor_hash": _per_item(tensor_hash, deltas, repeats),
    }
    kb = len(subs[0].payload) / 1024
    row = (f"{name:<8} {n_params:>10,} {kb:>10.1f} {1 / verify:>10.0f} {1 / base:>11.0f} "
           f"{verify / base:>6.2f}x")
    detail = "  ".join(f"{k} {v * 1e6:.0f}" for k, v in checks.items())
    unfused_detail = "  ".join(f"{k} {v * 1e6:.0f}" for k, v in unfused.items())
    return row, [f"{name:<8} us/update: {detail}  (unfused: {unfused_detail})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    big = {k: (s, "float32") for k, s in BIG_SHAPES.items()}
    models = [
        ("logreg", model_spec(initial_state("logreg", (64,), 10, seed=0)), 300),
        ("mlp", model_spec(initial_state("mlp", (64,), 10, seed=0)), 300),
        ("1M", big, 24),
    ]
    print(f"torch threads: {torch.get_num_threads()}, coincurve {coincurve.__version__}")
    print(f"{'model':<8} {'params':>10} {'payload KB':>10} {'verify/s':>10} {'baseline/s':>11} "
          f"{'ratio':>7}")
    details = []
    for name, spec, count in models:
        row, lines = bench(name, spec, count, args.repeats)
        print(row, flush=True)
        details += lines
    print("per-check breakdown (baseline = recover + sha256 over the payload):")
    for line in details:
        print(line)


if __name__ == "__main__":
    main()
