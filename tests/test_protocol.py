"""The protocol spec: canonical, hashed, on chain at deployment, and a node with another config
refuses to start, naming the fields that differ."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from blockfl.chain.deploy import chain_params, deployed_spec, deployment_record, open_ledger
from blockfl.chain.evm import DEV_DEPLOYER_KEY, EvmLedger, embedded_web3
from blockfl.config import AggregationConfig, Config, load_config
from blockfl.hashing import keccak, to_hex
from blockfl.keys import derived_key
from blockfl.protocol import Genesis, ProtocolSpec, SpecMismatch
from blockfl.signing import address_of

GENESIS = Genesis("test-task", bytes(range(32)),
                  {"out.weight": ((10, 64), "float32"), "out.bias": ((10,), "float32")})
MINERS = [address_of(derived_key("spec-miner", i)) for i in range(2)]


def _with(config: Config, section: str, **values) -> Config:
    return replace(config, **{section: replace(getattr(config, section), **values)})


def test_hash_is_keccak_of_canonical_json_and_round_trips():
    spec = ProtocolSpec.from_config(load_config("network"), GENESIS)
    text = spec.canonical_json()
    assert json.loads(text) == spec.to_dict()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert spec.hash() == keccak(text.encode())
    assert ProtocolSpec.from_dict(json.loads(text)) == spec
    assert ProtocolSpec.from_dict(json.loads(text)).hash() == spec.hash()


@pytest.mark.parametrize(("section", "field", "value"), [
    ("aggregation", "rule", "median"),
    ("aggregation", "beta", 0.2),
    ("verification", "norm_bound", float("inf")),
    ("verification", "min_ms_per_sample", 0.5),
    ("chain", "block_rate", 1.0),
    ("chain", "quorum", 2),
    ("chain", "mode", "merkle"),
])
def test_every_consensus_field_changes_the_hash(section, field, value):
    config = Config()
    base = ProtocolSpec.from_config(config, GENESIS)
    other = ProtocolSpec.from_config(_with(config, section, **{field: value}), GENESIS)
    assert other.hash() != base.hash()
    assert [d[0] for d in other.differences(base)] == [f"{section}.{field}"]
    assert ProtocolSpec.from_dict(json.loads(other.canonical_json())) == other


def test_local_settings_are_not_in_the_spec():
    config = Config()
    local = _with(_with(config, "chain", ledger="local", rpc_url="http://x"), "run", seed=3)
    assert ProtocolSpec.from_config(local, GENESIS).hash() == (
        ProtocolSpec.from_config(config, GENESIS).hash())
    assert ProtocolSpec.from_config(config, replace(GENESIS, model_hash=bytes(32))).hash() != (
        ProtocolSpec.from_config(config, GENESIS).hash())


@pytest.mark.parametrize(("genesis", "field"), [
    (replace(GENESIS, task="other-task"), "task.name"),
    (replace(GENESIS, model_hash=bytes(32)), "task.genesis_model_hash"),
    (replace(GENESIS, tensors={**GENESIS.tensors, "out.bias": ((10,), "float64")}),
     "task.tensor_spec.out.bias"),
    (replace(GENESIS, tensors={**GENESIS.tensors, "extra": ((1,), "float32")}),
     "task.tensor_spec.extra"),
])
def test_the_task_name_genesis_hash_and_tensor_spec_are_in_the_spec(genesis, field):
    base = ProtocolSpec.from_config(Config(), GENESIS)
    other = ProtocolSpec.from_config(Config(), genesis)
    assert other.hash() != base.hash()
    assert [d[0] for d in other.differences(base)] == [field]
    assert ProtocolSpec.from_dict(json.loads(other.canonical_json())) == other


@pytest.mark.parametrize("backend", ["evm", "local"])
def test_the_chain_holds_the_spec_hash(tmp_path, backend):
    config = _with(Config(), "chain", ledger=backend)
    ledger = open_ledger(config, MINERS, GENESIS, tmp_path)
    assert ledger.params().protocol_spec_hash == ProtocolSpec.from_config(config, GENESIS).hash()


def test_a_node_with_another_config_refuses_naming_the_fields():
    config = _with(Config(), "aggregation", rule="multi_krum", f=3)
    ledger = EvmLedger.create(embedded_web3(), chain_params(config, GENESIS), MINERS)
    spec = ProtocolSpec.from_config(config, GENESIS)
    deployment = deployment_record(ledger, "embedded", address_of(DEV_DEPLOYER_KEY), spec)
    assert deployment.protocol_spec_hash == to_hex(spec.hash())
    assert deployed_spec(deployment, ledger, config, GENESIS) == spec

    stranger = _with(_with(config, "aggregation", rule="fedavg"), "verification",
                     norm_bound=5.0)
    with pytest.raises(SpecMismatch) as info:
        deployed_spec(deployment, ledger, stranger, GENESIS)
    message = str(info.value)
    assert "aggregation.rule = 'fedavg' here, 'multi_krum' deployed" in message
    assert "verification.norm_bound = 5.0 here, 1000.0 deployed" in message
    assert "chain." not in message

    other_task = replace(GENESIS, task="wine", tensors={"out.weight": ((3, 13), "float32")})
    with pytest.raises(SpecMismatch) as info:  # a device whose task is not the deployment's
        deployed_spec(deployment, ledger, config, other_task)
    message = str(info.value)
    assert "task.name = 'wine' here, 'test-task' deployed" in message
    assert "task.tensor_spec.out.weight = [[3, 13], 'float32'] here, [[10, 64], 'float32']" \
        in message
    assert "task.tensor_spec.out.bias = None here" in message
    assert deployed_spec(deployment, ledger, config) == spec  # a miner: no task of its own

    tampered = replace(deployment, protocol_spec=ProtocolSpec.from_config(
        _with(config, "aggregation", f=1), GENESIS).to_dict())
    with pytest.raises(SpecMismatch, match="hashes to"):
        deployed_spec(tampered, ledger, config, GENESIS)
    with pytest.raises(SpecMismatch, match="no protocol spec"):
        deployed_spec(replace(deployment, protocol_spec={}), ledger, config, GENESIS)


def test_spec_from_aggregation_section_of_a_toml(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[aggregation]\nrule = "trimmed_mean"\nbeta = 0.2\n')
    config = load_config(path)
    assert config.aggregation == AggregationConfig(rule="trimmed_mean", beta=0.2)
    path.write_text('[aggregation]\nbeta = 0.5\n')
    with pytest.raises(ValueError, match="beta"):
        load_config(path)
