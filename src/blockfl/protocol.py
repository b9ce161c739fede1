"""The protocol spec: everything every node of a deployment must agree on, and its hash.

The aggregation rule and its parameters, the verification policy, the chain parameters
(block rate and hash rate, rewards, caps, allow list, block mode, quorum), the task (its
name, the genesis model hash and the genesis model's tensor spec: names, shapes, dtypes, all
that miners know of the model), and the devices' differential privacy (`[privacy]`, a section
of the canonical form only when it is on, so that specs without privacy keep their hash). It is
built from the one experiment `Config`, written into `deployment.json` (`protocol_spec`,
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
from typing import TYPE_CHECKING, Any

from blockfl.config import (
    AggregationConfig,
    ChainConfig,
    Config,
    PrivacyConfig,
    VerificationPolicy,
    update_section,
)
from blockfl.hashing import keccak

if TYPE_CHECKING:
    from blockfl.tensors import StateDict

SPEC_VERSION = 2
# the chain parameters every node must share (not where a node reaches the chain)
CHAIN_FIELDS = (
    "block_rate", "hash_rate", "reward_per_sample", "mining_reward", "max_samples_per_update",
    "max_updates_per_block", "allow_list", "mode", "quorum",
)


class SpecMismatch(ValueError):
    """A node's configuration gives another protocol spec than its deployment's."""


#: a tensor's (shape, dtype name), e.g. ((10, 64), "float32")
TensorSpec = dict[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class Genesis:
    """The task a deployment learns and its genesis model: the name, the hash, the spec."""

    task: str
    model_hash: bytes
    tensors: TensorSpec

    @classmethod
    def of(cls, task: str, state: StateDict) -> Genesis:
        """The genesis of a task named `task` whose initial model is `state`."""
        from blockfl.models import model_spec
        from blockfl.tensors import tensor_hash

        return cls(task, tensor_hash(state), model_spec(state))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: hash as 0x-hex, each tensor as [shape, dtype]."""
        return {"name": self.task, "genesis_model_hash": "0x" + self.model_hash.hex(),
                "tensor_spec": {k: [list(shape), dtype]
                                for k, (shape, dtype) in sorted(self.tensors.items())}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genesis:
        """Read `to_dict`'s form."""
        return cls(data["name"], bytes.fromhex(data["genesis_model_hash"].removeprefix("0x")),
                   {k: (tuple(int(n) for n in shape), str(dtype))
                    for k, (shape, dtype) in data["tensor_spec"].items()})


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
    genesis: Genesis
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def genesis_model_hash(self) -> bytes:
        """The genesis model's hash (the contract's)."""
        return self.genesis.model_hash

    @classmethod
    def from_config(cls, config: Config, genesis: Genesis) -> ProtocolSpec:
        """The spec of an experiment configuration and its task's genesis (its rule parameters
        checked)."""
        config.aggregation.check_devices(config.network.devices)
        privacy = config.privacy.for_training(config.training)
        if privacy.mode != "off":
            from blockfl.privacy import check_budget, require_accountant

            require_accountant()
            check_budget(privacy)
            if privacy.epsilon_budget > 0 and config.chain.mode != "direct":
                raise ValueError("privacy.epsilon_budget is charged by the chain's record of "
                                 "each device's included updates, which only chain.mode = "
                                 "\"direct\" keeps (merkle mode: not yet)")
        chain = ChainConfig(**{k: getattr(config.chain, k) for k in CHAIN_FIELDS})
        return cls(config.aggregation, config.verification, chain, genesis, privacy)

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
            "task": self.genesis.to_dict(),
        }
        if self.privacy.mode != "off":
            spec["privacy"] = section(self.privacy, self.privacy.spec_fields())
        return spec

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtocolSpec:
        """Read a spec written by `to_dict` (e.g. from `deployment.json`)."""
        if data.get("version") != SPEC_VERSION:
            raise ValueError(f"protocol spec version {data.get('version')!r}, "
                             f"this node runs version {SPEC_VERSION}")
        return cls(
            update_section(AggregationConfig(), data["aggregation"], "protocol spec aggregation"),
            update_section(VerificationPolicy(), data["verification"],
                           "protocol spec verification"),
            update_section(ChainConfig(), data["chain"], "protocol spec chain"),
            Genesis.from_dict(data["task"]),
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
