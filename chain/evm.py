"""The `evm` ledger: the BlockFL contract on a real EVM through web3.py.

The chain is either embedded (eth-tester with py-evm, in this process: the default) or any
JSON-RPC node (`--rpc-url`: anvil, geth, hardhat). Transactions are signed locally with the
sender's key. A commit is sent with an analytic gas limit (`commit_gas_limit`) rather than
`estimate_gas`, whose binary search re-executes the whole block about 15 times on the embedded
EVM; a reverted commit is replayed once as a call to learn the contract's custom error, which
surfaces as `BlockRejected` named after it. Other transactions (deployment, admin) are estimated.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from eth_abi import decode
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import BadFunctionCallOutput, BlockNotFound, ContractLogicError
from web3.logs import DISCARD
from web3.types import RPCEndpoint, RPCResponse

from blockfl.chain.attestation import Attestation, equivocator, sort_attestations
from blockfl.chain.blocks import (
    MODES,
    AcceptedUpdate,
    BlockProposal,
    BlockRecord,
    ChainParams,
    CommitReceipt,
    Head,
)
from blockfl.chain.errors import BlockRejected, ChainUnavailable, DeploymentMissing, rejection
from blockfl.chain.ledger import Ledger
from blockfl.chain.merkle import MerkleClaim, block_summary
from blockfl.contracts import load_artifact
from blockfl.signing import Domain, SignedUpdate

# The first key of the standard development mnemonic ("test test ... junk") that anvil, hardhat
# and Foundry fund on every local chain: a well-known development key, never for real funds.
DEV_DEPLOYER_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
# 10 ether of gas money per funded account: anvil gives its first account 10,000, so a session
# of tests on one node can fund a thousand accounts (at 1,000 each it ran dry after ten).
FUNDING_WEI = 10**19
# eth-tester's chain id: the `local` ledger can take it (and the deployer's first contract
# address) so that signatures, block hashes and the proof-of-work race match the embedded EVM.
EMBEDDED_CHAIN_ID = 131277322940537
# Upper bounds on `commitBlock`'s gas, with margin over what bench_gas.py measures: about 225k
# for the transaction, block record, event and mining reward, and at most 36k per update (the
# signature check, a first mint to a new holder, its events, its calldata).
COMMIT_GAS_BASE = 300_000
COMMIT_GAS_PER_UPDATE = 50_000
ATTESTATION_GAS = 10_000  # an attestation's calldata, recovery and place among the miners
# What bench_gas.py measures for a direct commit paying first-time devices: a block that needs
# more than the block gas limit even so is refused before sending, pointing to merkle mode.
DIRECT_GAS_BASE = 225_000
DIRECT_GAS_PER_UPDATE = 36_500


def embedded_web3() -> Web3:
    """A fresh in-process chain (eth-tester, py-evm backend)."""
    return Web3(Web3.EthereumTesterProvider())


class NodeProvider(HTTPProvider):
    """web3's HTTP provider whose every request that gets no answer (refused, reset, timed out)
    raises ChainUnavailable: one named condition for each call that reaches the node, reads
    and transactions alike, rather than the `requests` exception of the moment."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except (RequestsConnectionError, RequestsTimeout) as exc:
            raise ChainUnavailable(
                f"the chain node {self.endpoint_uri} does not answer: {exc}") from None


def rpc_web3(url: str, timeout: float = 30.0) -> Web3:
    """A web3 connection to a JSON-RPC node."""
    w3 = Web3(NodeProvider(url, request_kwargs={"timeout": timeout}))
    if not w3.is_connected():
        raise ConnectionError(f"no Ethereum node answers at {url}: start one (`blockfl chain "
                              "up`) or pass the node's --rpc-url")
    return w3


def fund(w3: Web3, addresses: list[str], amount: int = FUNDING_WEI) -> None:
    """Send ether for gas from the node's first unlocked account to each address lacking it."""
    source = w3.eth.accounts[0]
    for address in addresses:
        address = to_checksum_address(address)
        if w3.eth.get_balance(address) < amount // 2:
            tx = w3.eth.send_transaction({"from": source, "to": address, "value": amount})
            w3.eth.wait_for_transaction_receipt(tx)


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    table = {}
    for item in abi:
        if item["type"] == "error":
            types = [i["type"] for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[selector] = (item["name"], types)
    return table


def commit_gas_limit(w3: Web3, n_updates: int, n_attestations: int = 0) -> int:
    """The gas limit of a commit of `n_updates` paid in the commit (0 in merkle mode) and
    `n_attestations`: the analytic bound, at most the block's. `BlockTooLarge` when even the
    measured gas (about 225k plus 36k per update) exceeds the block's gas limit."""
    cap = block_gas_limit(w3)
    if DIRECT_GAS_BASE + DIRECT_GAS_PER_UPDATE * n_updates > cap:
        raise rejection("BlockTooLarge", n_updates,
                        (cap - DIRECT_GAS_BASE) // DIRECT_GAS_PER_UPDATE)
    gas = COMMIT_GAS_BASE + COMMIT_GAS_PER_UPDATE * n_updates + ATTESTATION_GAS * n_attestations
    return min(gas, cap)


def send(
    w3: Web3, key: bytes, call: Any, errors: dict[bytes, tuple[str, list[str]]],
    gas: int | None = None,
) -> Any:
    """Sign and send a contract call with gas limit `gas` (estimated when None); raise the
    decoded custom error if it reverts (ChainUnavailable, from `NodeProvider`, if the node does
    not answer)."""
    sender = Account.from_key(key)
    try:
        if gas is None:
            gas = int(call.estimate_gas({"from": sender.address}) * 1.25) + 20_000
        tx = call.build_transaction(
            {
                "from": sender.address,
                "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
                "gas": gas,
            }
        )
        signed = sender.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            # The call reverted on the state it was included in (a rejected block, or a race
            # on a shared node): replay it as a call on that state to learn the reason.
            call.call({"from": sender.address})
            raise BlockRejected("OutOfGas" if receipt["gasUsed"] >= gas else "Reverted",
                                (receipt["transactionHash"],))
        return receipt
    except (ContractLogicError, TransactionFailed) as exc:
        raise _decode_error(exc, errors) from None


def block_gas_limit(w3: Web3) -> int:
    """The gas limit of the latest block: the most one transaction can use."""
    return int(w3.eth.get_block("latest")["gasLimit"])


def _revert_data(exc: Exception) -> bytes:
    """The raw revert data of a failed call, from a JSON-RPC node or from eth-tester."""
    if isinstance(exc, ContractLogicError) and isinstance(exc.data, str):
        return bytes.fromhex(exc.data.removeprefix("0x"))
    # eth-tester reports `execution reverted: b"<bytes repr>"`
    message = str(exc.args[0]) if exc.args else ""
    _, _, literal = message.partition("execution reverted: ")
    if literal.startswith(("b'", 'b"')):
        value = ast.literal_eval(literal)
        if isinstance(value, bytes):
            return value
    return b""


def _decode_error(exc: Exception, errors: dict[bytes, tuple[str, list[str]]]) -> Exception:
    raw = _revert_data(exc)
    if len(raw) >= 4 and raw[:4] in errors:
        name, types = errors[raw[:4]]
        values = decode(types, raw[4:]) if types else ()
        return rejection(name, *[to_checksum_address(v) if t == "address" else v
                                 for t, v in zip(types, values, strict=True)])
    return BlockRejected("Reverted", (str(exc),))


def update_tuple(update: SignedUpdate) -> tuple:
    """The `BlockFL.Update` struct: (device, base, updateHash, samples, computeMs, v, r, s)."""
    r, sig = update.record, update.signature
    return (
        update.device, r.base_model_hash, r.update_hash, r.samples, r.compute_time_ms,
        sig[64], sig[:32], sig[32:64],
    )


def params_tuple(params: ChainParams) -> tuple:
    """The `BlockFL.Params` constructor struct."""
    return (
        params.target,
        params.reward_per_sample,
        params.mining_reward,
        params.max_samples_per_update,
        params.max_updates_per_block,
        params.device_allow_list,
        MODES.index(params.mode),
        params.quorum,
        params.genesis_model_hash,
        params.protocol_spec_hash,
    )


def leaf_tuple(claim: MerkleClaim) -> tuple:
    """The `BlockFL.Leaf` struct of a claim."""
    r = claim.record
    return (claim.index, r.device, r.round, r.base_model_hash, r.update_hash, r.samples,
            r.compute_time_ms)


def deploy(w3: Web3, deployer_key: bytes, params: ChainParams, miners: list[str]) -> str:
    """Deploy BlockFL (which is its own reward token); return the contract address."""
    artifact = load_artifact("BlockFL")
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    call = factory.constructor(params_tuple(params), [to_checksum_address(m) for m in miners])
    receipt = send(w3, deployer_key, call, _error_table(artifact["abi"]))
    return to_checksum_address(receipt["contractAddress"])


class EvmLedger(Ledger):
    """The BlockFL contract at `address` on the chain behind `w3`."""

    def __init__(self, w3: Web3, address: str, owner_key: bytes | None = None) -> None:
        self.w3 = w3
        abi = load_artifact("BlockFL")["abi"]
        # the contract is also the reward token (its `token()` is itself)
        self.contract: Contract = w3.eth.contract(address=to_checksum_address(address), abi=abi)
        self.owner_key = owner_key
        self.domain = Domain(w3.eth.chain_id, self.contract.address)
        self.mode = MODES[self._read(self.contract.functions.parameters())[6]]
        self._errors = _error_table(abi)

    def _read(self, call: Any) -> Any:
        """A view call; DeploymentMissing when the node has no code at the contract's address
        (web3 cannot decode the empty answer); ChainUnavailable (`NodeProvider`) when it does
        not answer."""
        url = getattr(self.w3.provider, "endpoint_uri", None) or "the chain node"
        try:
            return call.call()
        except BadFunctionCallOutput:
            if self.w3.eth.get_code(self.contract.address):
                raise
            raise DeploymentMissing(self.contract.address, str(url)) from None

    @classmethod
    def create(
        cls,
        w3: Web3,
        params: ChainParams,
        miners: list[str],
        deployer_key: bytes = DEV_DEPLOYER_KEY,
    ) -> EvmLedger:
        """Deploy a fresh contract (funding the deployer and miners for gas) and wrap it."""
        fund(w3, [Account.from_key(deployer_key).address, *miners])
        return cls(w3, deploy(w3, deployer_key, params, miners), owner_key=deployer_key)

    def params(self) -> ChainParams:
        p = self._read(self.contract.functions.parameters())
        return ChainParams(
            *p[:6], mode=MODES[p[6]], quorum=p[7], genesis_model_hash=bytes(p[8]),
            protocol_spec_hash=bytes(p[9]), token=self.contract.address,
        )

    def head(self) -> Head:
        round_, block_hash, model_hash = self._read(self.contract.functions.head())
        return Head(round_, bytes(block_hash), bytes(model_hash))

    def get_block(self, round_: int) -> BlockRecord | None:
        b = self._read(self.contract.functions.getBlock(round_))
        if b[0] == b"\x00" * 32:
            return None
        # the nonce and the time are in the `BlockCommitted` event, not in storage
        logs = self.contract.events.BlockCommitted().get_logs(
            from_block=0, argument_filters={"round": round_})
        if not logs:
            return None  # rolled back between the two reads
        log = logs[-1]
        try:
            timestamp = self.w3.eth.get_block(log["blockNumber"])["timestamp"]
        except BlockNotFound:
            return None  # rolled back after the event was read
        return BlockRecord(round_, *(bytes(x) for x in b[:4]), b[4], b[5], timestamp, b[6],
                           log["args"]["nonce"])

    def commit_block(
        self, miner_key: bytes, proposal: BlockProposal, attestations: Sequence[Attestation] = ()
    ) -> CommitReceipt:
        if self.mode == "merkle":  # O(1) gas in the number of updates
            summary = block_summary(proposal.updates, proposal.round)
            return self.commit_root(miner_key, proposal, summary, attestations)
        signatures = self._signatures(attestations)
        gas = commit_gas_limit(self.w3, len(proposal.updates), len(signatures))
        call = self.contract.functions.commitBlock(
            *self._head_fields(proposal), [update_tuple(u) for u in proposal.updates],
            proposal.nonce, signatures)
        return self._committed(send(self.w3, miner_key, call, self._errors, gas=gas))

    def commit_root(
        self, miner_key: bytes, proposal: BlockProposal, summary: tuple[bytes, int, int],
        attestations: Sequence[Attestation] = (),
    ) -> CommitReceipt:
        signatures = self._signatures(attestations)
        call = self.contract.functions.commitRoot(*self._head_fields(proposal), *summary,
                                                  proposal.nonce, signatures)
        gas = commit_gas_limit(self.w3, 0, len(signatures))
        return self._committed(send(self.w3, miner_key, call, self._errors, gas=gas))

    def _signatures(self, attestations: Sequence[Attestation]) -> list[tuple[bytes, bytes]]:
        return [a.compact() for a in sort_attestations(attestations, self.domain)]

    @staticmethod
    def _head_fields(proposal: BlockProposal) -> tuple[bytes, int, bytes]:
        return (proposal.prev_hash, proposal.round, proposal.global_model_hash)

    def _committed(self, receipt: Any) -> CommitReceipt:
        event = self.contract.events.BlockCommitted().process_receipt(receipt, errors=DISCARD)[0]
        return CommitReceipt(
            bytes(event["args"]["blockHash"]), receipt["gasUsed"], bytes(receipt["transactionHash"])
        )

    def required_attesters(self) -> int:
        return self._read(self.contract.functions.requiredAttesters())

    def report_equivocation(self, reporter_key: bytes, a: Attestation, b: Attestation) -> str:
        miner = equivocator(a, b, self.domain)
        call = self.contract.functions.reportEquivocation(
            a.block.round, a.block.candidate(), a.compact(), b.block.candidate(), b.compact())
        send(self.w3, reporter_key, call, self._errors)
        return miner

    def claim(self, sender_key: bytes, round_: int, claims: Sequence[MerkleClaim]) -> int:
        if not claims:
            return 0
        if len(claims) == 1:
            c = claims[0]
            call = self.contract.functions.claim(round_, leaf_tuple(c), list(c.proof))
        else:
            call = self.contract.functions.claimMany(
                round_, [(leaf_tuple(c), list(c.proof)) for c in claims])
        return send(self.w3, sender_key, call, self._errors)["gasUsed"]

    def is_claimed(self, round_: int, index: int) -> bool:
        return self._read(self.contract.functions.isClaimed(round_, index))

    def claimed_samples(self, round_: int) -> int:
        return self.contract.functions.claimedSamples(round_).call()

    def is_miner(self, address: str) -> bool:
        return self._read(self.contract.functions.isMiner(to_checksum_address(address)))

    def balance_of(self, address: str) -> int:
        return self._read(self.contract.functions.balanceOf(to_checksum_address(address)))

    def accepted_updates(self, round_: int | None = None) -> list[AcceptedUpdate]:
        filters = {} if round_ is None else {"round": round_}
        logs = self.contract.events.UpdateAccepted().get_logs(
            from_block=0, argument_filters=filters
        )
        return [
            AcceptedUpdate(
                a["round"], a["device"], bytes(a["updateHash"]), a["samples"], a["reward"]
            )
            for a in (log["args"] for log in logs)
        ]

    def add_miner(self, miner: str) -> None:
        self._admin(self.contract.functions.addMiner(to_checksum_address(miner)))
        fund(self.w3, [miner])

    def remove_miner(self, miner: str) -> None:
        self._admin(self.contract.functions.removeMiner(to_checksum_address(miner)))

    def set_target(self, target: int) -> None:
        self._admin(self.contract.functions.setTarget(target))

    def set_device_allowed(self, device: str, allowed: bool) -> None:
        self._admin(self.contract.functions.setDeviceAllowed(to_checksum_address(device), allowed))

    def _admin(self, call: Any) -> None:
        if self.owner_key is None:
            raise PermissionError("this ledger was opened without the deployer's key")
        send(self.w3, self.owner_key, call, self._errors)
