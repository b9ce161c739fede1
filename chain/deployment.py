"""`deployment.json`: what any Ethereum client needs to reach a BlockFL deployment."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blockfl import safejson
from blockfl.chain.blocks import ChainParams
from blockfl.chain.evm import EvmLedger, rpc_web3
from blockfl.contracts import load_artifact

MAX_FILE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Deployment:
    """Chain id, addresses, parameters and ABIs of one deployment."""

    chain_id: int
    rpc_url: str
    contract: str
    token: str
    deployer: str
    block_number: int
    miners: list[str]
    parameters: dict[str, Any]
    abi: dict[str, list] = field(default_factory=dict)
    protocol_spec: dict[str, Any] = field(default_factory=dict)  # see blockfl.protocol
    protocol_spec_hash: str = ""

    def write(self, path: Path) -> None:
        """Write as JSON (big integers as decimal strings, hashes as 0x-hex)."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Deployment:
        """Read a deployment file (size- and depth-checked JSON: it may come from anyone)."""
        if not path.exists():
            raise FileNotFoundError(f"no deployment file at {path}; run `blockfl chain deploy`")
        try:
            data = safejson.loads(path.read_bytes(), MAX_FILE_BYTES)
            return cls(**data)
        except (safejson.JsonRejected, TypeError) as exc:
            raise ValueError(f"{path} is not a deployment file: {exc}") from None

    def ledger(self, rpc_url: str | None = None, owner_key: bytes | None = None) -> EvmLedger:
        """An `EvmLedger` on this deployment (through `rpc_url` if given), once the node is
        checked to be on this deployment's chain and to hold its contract."""
        url = rpc_url or self.rpc_url
        w3 = rpc_web3(url)
        if w3.eth.chain_id != self.chain_id:
            raise ValueError(f"the node at {url} runs chain {w3.eth.chain_id}, the deployment "
                             f"chain {self.chain_id}: wrong --rpc-url or deployment file")
        if not w3.eth.get_code(self.contract):
            raise LookupError(f"no contract at {self.contract} on the chain at {url}: the node "
                              "was restarted without its state, or the deployment file is for "
                              "another chain; deploy again (`blockfl chain deploy`)")
        return EvmLedger(w3, self.contract, owner_key=owner_key)


def describe(ledger: EvmLedger, rpc_url: str, deployer: str) -> Deployment:
    """The deployment record of a freshly deployed ledger."""
    params = ledger.params()
    return Deployment(
        chain_id=ledger.domain.chain_id,
        rpc_url=rpc_url,
        contract=ledger.contract.address,
        token=params.token,
        deployer=deployer,
        block_number=ledger.w3.eth.block_number,
        miners=ledger_miners(ledger),
        parameters=params_json(params),
        abi={"BlockFL": load_artifact("BlockFL")["abi"]},  # also the reward token's
    )


def ledger_miners(ledger: EvmLedger) -> list[str]:
    """The miners registered now, in ascending address order (the contract's `miners()`)."""
    return list(ledger.contract.functions.miners().call())


def params_json(params: ChainParams) -> dict[str, Any]:
    """Parameters as JSON-safe values (integers above 2^53 as strings)."""
    out: dict[str, Any] = {}
    for key, value in asdict(params).items():
        if isinstance(value, bytes):
            out[key] = "0x" + value.hex()
        elif isinstance(value, int) and not isinstance(value, bool) and value > 2**53:
            out[key] = str(value)
        else:
            out[key] = value
    return out
