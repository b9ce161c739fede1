"""The protocol spec: everything every node of a deployment must agree on, and its hash.

The aggregation rule and its parameters, the verification policy, the chain parameters
(block rate and hash rate, rewards, caps, allow list, block mode, quorum), the model and the
genesis model hash, and the devices' differential privacy (`[privacy]`, a section of the
canonical form only when it is on, so that specs without privacy keep their hash). It is built
from the one experiment `Config`, written into `deployment.json` (`protocol_spec`,
`protocol_spec_hash`) and its hash is stored on chain at deployment (`protocolSpecHash()`). A
miner or device whose config gives another spec refuses to start, naming the fields that
differ.

Canonical form: JSON with sorted keys, no spaces, non-finite floats as the strings "inf" and
"-inf"; the hash is keccak-256 of its UTF-8 bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from blockfl.config import (
    AggregationConfig,
    ChainConfig,
    Config,
    PrivacyConfig,
    VerificationPolicy,
    update_section,
)
from blockfl.hashing import keccak

SPEC_VERSION = 1
# the chain parameters every node must share (not where a node reaches the chain)
CHAIN_FIELDS = (
    "block_rate", "hash_rate", "reward_per_sample", "mining_reward", "max_samples_per_update",
    "max_updates_per_block", "allow_list", "mode", "quorum",
)


class SpecMismatch(ValueError):
    """A node's configuration gives another protocol spec than its deployment's."""


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return value


@dataclass(frozen=True)
class ProtocolSpec:
    """What every miner and device of a deployment runs."""

    aggregation: AggregationConfig
    verification: VerificationPolicy
    chain: ChainConfig
    model: str
    genesis_model_hash: bytes
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @classmethod
    def from_config(cls, config: Config, genesis_model_hash: bytes) -> ProtocolSpec:
        """The spec of an experiment configuration (its rule parameters checked)."""
        config.aggregation.check_devices(config.network.devices)
        if config.privacy.mode != "off":
            from blockfl.privacy import check_budget, require_accountant

            require_accountant()
            check_budget(config.privacy)
            if config.privacy.epsilon_budget > 0 and config.chain.mode != "direct":
                raise ValueError("privacy.epsilon_budget is charged by the chain's record of "
                                 "each device's included updates, which only chain.mode = "
                                 "\"direct\" keeps (merkle mode: not yet)")
        chain = ChainConfig(**{k: getattr(config.chain, k) for k in CHAIN_FIELDS})
        return cls(config.aggregation, config.verification, chain, config.model.name,
                   genesis_model_hash, config.privacy)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready nested values."""
        def section(obj: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
            values = asdict(obj)
            return {k: _json_value(v) for k, v in values.items() if names is None or k in names}

        spec = {
            "version": SPEC_VERSION,
            "aggregation": section(self.aggregation),
            "verification": section(self.verification),
            "chain": section(self.chain, CHAIN_FIELDS),
            "model": {"name": self.model,
                      "genesis_model_hash": "0x" + self.genesis_model_hash.hex()},
        }
        if self.privacy.mode != "off":
            spec["privacy"] = section(self.privacy)
        return spec

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtocolSpec:
        """Read a spec written by `to_dict` (e.g. from `deployment.json`)."""
        if data.get("version") != SPEC_VERSION:
            raise ValueError(f"protocol spec version {data.get('version')!r}, "
                             f"this node runs version {SPEC_VERSION}")
        model = data["model"]
        return cls(
            update_section(AggregationConfig(), data["aggregation"], "protocol spec aggregation"),
            update_section(VerificationPolicy(), data["verification"],
                           "protocol spec verification"),
            update_section(ChainConfig(), data["chain"], "protocol spec chain"),
            model["name"],
            bytes.fromhex(model["genesis_model_hash"].removeprefix("0x")),
            update_section(PrivacyConfig(), data.get("privacy", {}), "protocol spec privacy"),
        )

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: the bytes the hash is taken over."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)

    def hash(self) -> bytes:
        """keccak-256 of the canonical JSON (stored on chain as `protocolSpecHash`)."""
        return keccak(self.canonical_json().encode())

    def differences(self, other: ProtocolSpec) -> list[tuple[str, Any, Any]]:
        """`(section.field, this value, other value)` for every field that differs."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [(k, mine.get(k), theirs.get(k))
                for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]

    def require_same(self, deployed: ProtocolSpec) -> None:
        """Raise `SpecMismatch` naming every field where this node's spec differs from the
        deployment's."""
        diff = self.differences(deployed)
        if diff:
            fields_ = "; ".join(f"{k} = {mine!r} here, {theirs!r} deployed"
                                for k, mine, theirs in diff)
            raise SpecMismatch(
                f"this node's config disagrees with the deployment's protocol spec: {fields_}. "
                "Run it with the --config (and flags) that `chain deploy` used."
            )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
