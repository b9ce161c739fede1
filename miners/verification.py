"""A miner's verification of one uploaded or gossiped update, each failure a named reason.

Checks run cheapest first, so junk costs little: payload size, round, base model, device,
sample count, computation time against samples (BlockFL's check), signature, replay, decoding,
tensor spec (names, shapes, dtypes, finite values), hash of the tensors against the signed
update hash, the norm bound, and with `[privacy]` on, the differential-privacy rules
(`blockfl.privacy.PrivacyRule`: a norm no clipped and noised update reaches, and the device's
budget, charged by its updates in committed blocks). A replay of an earlier round's update
carries that round in its signed record, so it fails as `wrong_round` (rewriting the round
breaks the signature); a second update from a device in the same round, or the same update
hash again, fails as `replay`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from blockfl.config import NO_PRIVACY, ChainConfig, PrivacyConfig, VerificationPolicy
from blockfl.privacy import PrivacyRule
from blockfl.signing import Domain, SignatureError, SignedUpdate
from blockfl.tensors import (
    StateDict,
    TensorFormatError,
    TensorSpec,
    decode_checked,
)
from blockfl.wire import UpdateSubmission

REASONS = frozenset(
    {
        "payload_too_large",
        "wrong_round",
        "stale_base_model",
        "unknown_device",
        "sample_count",
        "implausible_compute_time",
        "malformed_signature",
        "bad_signature",
        "replay",
        "malformed_payload",
        "missing_tensor",
        "unexpected_tensor",
        "shape_mismatch",
        "dtype_mismatch",
        "non_finite",
        "hash_mismatch",
        "norm_bound",
        "dp_norm_implausible",
        "privacy_budget_exhausted",
    }
)


class UpdateRejected(ValueError):
    """An update the miner refuses; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RoundContext:
    """What the miner knows about the round it collects updates for."""

    round: int
    base_model_hash: bytes
    domain: Domain
    spec: TensorSpec


@dataclass(frozen=True)
class VerifiedUpdate:
    """An update that passed every check, with its decoded tensors."""

    signed: SignedUpdate
    delta: StateDict
    payload_size: int


def _second_update(signed: SignedUpdate, round_: int) -> UpdateRejected:
    """The `replay` rejection of a device's second update in a round."""
    return UpdateRejected("replay", f"{signed.device} already has an update in round {round_}")


class Verifier:
    """Verifies submissions against a policy and remembers accepted ones to catch replays.

    `max_samples` is the chain's sample cap; `allowed_devices`, when given, the only devices
    whose updates are accepted; `privacy` the spec's `[privacy]`, and `included_rounds` the
    number of committed blocks holding a device's update (its budget's charge; required when
    the privacy section sets a budget).
    """

    def __init__(
        self,
        policy: VerificationPolicy,
        *,
        max_samples: int = ChainConfig.max_samples_per_update,
        allowed_devices: frozenset[str] | None = None,
        memory: int = 100_000,
        privacy: PrivacyConfig = NO_PRIVACY,
        included_rounds: Callable[[str], int] | None = None,
    ) -> None:
        if privacy.epsilon_budget > 0 and included_rounds is None:
            raise ValueError("a privacy budget is charged by the chain: pass included_rounds")
        self.policy = policy
        self.privacy = PrivacyRule(privacy)
        self.included_rounds = included_rounds
        self.max_samples = max_samples
        self.allowed_devices = allowed_devices
        self._memory = memory
        self._lock = threading.Lock()
        self._seen_devices: set[tuple[int, bytes]] = set()  # (round, raw device address)
        self._seen_hashes: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()  # -> key

    def verify(
        self, submission: UpdateSubmission, ctx: RoundContext, *, alternative: bool = False
    ) -> VerifiedUpdate:
        """Check a submission for round `ctx.round`; raise UpdateRejected with the reason.

        `alternative` checks a device's other update of this round, as a peer's candidate holds
        it (the device re-trained after a restart, and each miner got one of the two): in full,
        except that this device's own update of the round does not make it a `replay`, and it
        is not remembered. Either may be in the block; the chain pays a (round, device) once.
        """
        policy = self.policy
        signed = submission.signed
        record = signed.record
        payload = submission.payload
        size = len(payload)
        if size > policy.max_payload_bytes:
            raise UpdateRejected("payload_too_large", f"{size} > {policy.max_payload_bytes} bytes")
        round_ = record.round
        if round_ != ctx.round:
            raise UpdateRejected("wrong_round", f"update for round {round_}, now {ctx.round}")
        if record.base_model_hash != ctx.base_model_hash:
            raise UpdateRejected("stale_base_model", "update not trained on the current model")
        # the checksum form costs a keccak: only needed for the device allowlist, or to raise
        # (as `submission.device` does) for a device that is no address at all
        allowed = self.allowed_devices
        if allowed is not None or signed.device_bytes is None:
            device = submission.device
            if allowed is not None and device not in allowed:
                raise UpdateRejected("unknown_device", f"{device} is not a registered device")
        samples = record.samples
        if not 1 <= samples <= self.max_samples:
            raise UpdateRejected("sample_count", f"{samples} not in [1, {self.max_samples}]")
        needed = samples * policy.min_ms_per_sample
        if record.compute_time_ms < needed:
            raise UpdateRejected(
                "implausible_compute_time",
                f"{samples} samples in {record.compute_time_ms} ms (at least {needed:.0f})",
            )
        try:
            raw_device = signed.verify(ctx.domain)
        except SignatureError as exc:
            raise UpdateRejected(exc.reason, str(exc)) from None
        update_hash = record.update_hash
        self._check_replay((round_, raw_device), update_hash, signed, alternative)
        try:  # decoding, the spec check, the tensor hash and the norm in one pass
            delta, digest, norm = decode_checked(
                payload, ctx.spec, max_bytes=policy.max_payload_bytes
            )
        except TensorFormatError as exc:
            reason = "malformed_payload" if exc.reason == "malformed" else exc.reason
            raise UpdateRejected(reason, exc.detail) from None
        if digest != update_hash:
            raise UpdateRejected("hash_mismatch", "tensors do not hash to the signed update hash")
        if norm > policy.norm_bound:
            raise UpdateRejected("norm_bound", f"L2 norm {norm:.4g} > {policy.norm_bound}")
        if self.privacy.active:
            values = sum(math.prod(shape) for shape, dtype in ctx.spec.values()
                         if "float" in dtype)
            spent = self.included_rounds(submission.device) if self.included_rounds else 0
            refusal = self.privacy.refusal(norm, values, spent, samples)
            if refusal is not None:
                raise UpdateRejected(*refusal)
        if not alternative:
            self._remember((round_, raw_device), update_hash, signed)
        return VerifiedUpdate(signed, delta, size)

    def _check_replay(
        self, key: tuple[int, bytes], update_hash: bytes, signed: SignedUpdate,
        alternative: bool,
    ) -> None:
        with self._lock:
            if key in self._seen_devices and not alternative:
                raise _second_update(signed, key[0])
            seen = self._seen_hashes.get(update_hash)
            if seen is not None and not (alternative and seen == key):
                raise UpdateRejected("replay", "this update was already accepted")

    def _remember(
        self, key: tuple[int, bytes], update_hash: bytes, signed: SignedUpdate
    ) -> None:
        with self._lock:
            # a concurrent twin may have passed the first check: the second to get here loses
            if key in self._seen_devices or update_hash in self._seen_hashes:
                raise _second_update(signed, key[0])
            self._seen_devices.add(key)
            self._seen_hashes[update_hash] = key
            while len(self._seen_hashes) > self._memory:
                self._seen_hashes.popitem(last=False)

    def forget_from(self, round_: int) -> None:
        """Drop the memory of rounds from `round_` on: they were accepted on blocks the chain
        abandoned (a rollback), so their updates may come again."""
        with self._lock:
            self._seen_devices = {(r, d) for r, d in self._seen_devices if r < round_}
            for h in [h for h, (r, _) in self._seen_hashes.items() if r >= round_]:
                del self._seen_hashes[h]

    def forget_before(self, round_: int) -> None:
        """Drop per-round memory of rounds before `round_` (hashes are kept, bounded)."""
        with self._lock:
            self._seen_devices = {(r, d) for r, d in self._seen_devices if r >= round_}
