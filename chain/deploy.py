"""Deploy an experiment's contracts: its chain parameters and protocol spec, on a ledger backend
or a node; and a node's check of its own spec against a deployment's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from blockfl.chain.blocks import ChainParams, target_for_rate
from blockfl.chain.deployment import Deployment, describe
from blockfl.chain.evm import (
    DEV_DEPLOYER_KEY,
    EMBEDDED_CHAIN_ID,
    EvmLedger,
    embedded_web3,
    rpc_web3,
)
from blockfl.chain.ledger import Ledger
from blockfl.chain.local import LocalLedger
from blockfl.config import Config
from blockfl.hashing import to_hex
from blockfl.protocol import Genesis, ProtocolSpec, SpecMismatch
from blockfl.signing import address_of


def chain_params(config: Config, genesis: Genesis) -> ChainParams:
    """Contract parameters from an experiment configuration, with its protocol spec's hash."""
    c = config.chain
    return ChainParams(
        target=target_for_rate(c.block_rate, c.hash_rate),
        reward_per_sample=c.reward_per_sample,
        mining_reward=c.mining_reward,
        max_samples_per_update=c.max_samples_per_update,
        max_updates_per_block=c.max_updates_per_block,
        device_allow_list=c.allow_list,
        genesis_model_hash=genesis.model_hash,
        protocol_spec_hash=ProtocolSpec.from_config(config, genesis).hash(),
        mode=c.mode,
        quorum=c.quorum,
    )


def deploy_to_node(
    config: Config, rpc_url: str, miners: list[str], deployer_key: bytes, genesis: Genesis
) -> Deployment:
    """Deploy an experiment's contracts to a JSON-RPC node, starting from model `genesis`; the
    deployment record carries the protocol spec."""
    params = chain_params(config, genesis)
    ledger = EvmLedger.create(rpc_web3(rpc_url), params, miners, deployer_key=deployer_key)
    return deployment_record(ledger, rpc_url, address_of(deployer_key),
                             ProtocolSpec.from_config(config, genesis))


def deployment_record(
    ledger: EvmLedger, rpc_url: str, deployer: str, spec: ProtocolSpec
) -> Deployment:
    """What `deployment.json` holds for a fresh deployment of `spec`."""
    deployment = describe(ledger, rpc_url, deployer)
    return replace(deployment, protocol_spec=spec.to_dict(), protocol_spec_hash=to_hex(spec.hash()))


def deployed_spec(deployment: Deployment, ledger: Ledger, config: Config,
                  genesis: Genesis | None = None) -> ProtocolSpec:
    """The deployment's protocol spec, once checked: its hash is the file's and the chain's,
    and this node's config (with `genesis`, its task's; None: the deployment's own, for a
    miner, which knows no task) gives the same spec (else `SpecMismatch` names the fields)."""
    if not deployment.protocol_spec:
        raise SpecMismatch("the deployment file has no protocol spec: deploy again with "
                           "`blockfl chain deploy`")
    spec = ProtocolSpec.from_dict(deployment.protocol_spec)
    on_chain = ledger.params().protocol_spec_hash
    if to_hex(spec.hash()) != deployment.protocol_spec_hash or spec.hash() != on_chain:
        raise SpecMismatch(
            f"the deployment file's protocol spec hashes to {to_hex(spec.hash())}, the file "
            f"says {deployment.protocol_spec_hash} and the chain {to_hex(on_chain)}"
        )
    ProtocolSpec.from_config(config, genesis or spec.genesis).require_same(spec)
    return spec


def open_ledger(config: Config, miners: list[str], genesis: Genesis, run_dir: Path) -> Ledger:
    """A fresh deployment on the configured ledger (embedded EVM, a node, or SQLite); on a
    node, its `deployment.json` is written into `run_dir`."""
    params = chain_params(config, genesis)
    backend = config.chain.ledger
    if backend == "local":
        # same deployer and chain id as the embedded EVM: the same run gives the same blocks
        return LocalLedger.create(
            run_dir / "ledger.db", params, miners, DEV_DEPLOYER_KEY, chain_id=EMBEDDED_CHAIN_ID
        )
    if backend == "evm" and config.chain.rpc_url:  # on a node: the run can be opened again
        deployment = deploy_to_node(config, config.chain.rpc_url, miners, DEV_DEPLOYER_KEY,
                                    genesis)
        deployment.write(run_dir / "deployment.json")
        return deployment.ledger(owner_key=DEV_DEPLOYER_KEY)
    if backend == "evm":
        return EvmLedger.create(embedded_web3(), params, miners)
    raise ValueError(f"unknown ledger {backend!r}: evm or local")
