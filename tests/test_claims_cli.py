"""`blockfl inspect claims` and `blockfl claim` on a real embedded chain (eth-tester): a merkle
deployment with two blocks, some updates claimed and the others still claimable."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from blockfl.chain.blocks import BlockProposal
from blockfl.chain.evm import EvmLedger, embedded_web3, fund
from blockfl.cli import claim as claim_cli
from blockfl.cli import inspect as inspect_cli
from blockfl.devices.claims import claim, served_blocks
from blockfl.hashing import keccak
from blockfl.signing import address_of
from tests.conftest import MINER_KEYS, MINERS, default_params
from tests.test_ledger_conformance import DEVICE_KEYS, SAMPLES, block, honest_updates

RATE = 10**15  # reward per sample of default_params
DEVICES = [address_of(k) for k in DEVICE_KEYS]


@dataclass
class Miner:
    """Serves committed blocks by round, as a miner's GET /blocks/{round}."""

    blocks: dict[int, BlockProposal]

    def block(self, ref: int) -> BlockProposal | None:
        return self.blocks.get(ref)


@dataclass
class Chain:
    ledger: EvmLedger
    miner: Miner
    samples: dict[int, dict[str, int]]  # round -> device -> samples


def make_chain() -> Chain:
    """Round 1 pays all four devices, round 2 the first three; device 0 claimed both rounds,
    device 2 round 1 only."""
    ledger = EvmLedger.create(embedded_web3(), default_params(mode="merkle"), MINERS)
    fund(ledger.w3, DEVICES)
    first = block(ledger, honest_updates(ledger))
    ledger.commit_block(MINER_KEYS[0], first)
    second = block(ledger, honest_updates(ledger, 2, keccak(b"model 1"))[:3], 2, 1)
    ledger.commit_block(MINER_KEYS[1], second)
    claim(ledger, DEVICE_KEYS[0], first, DEVICES[0])
    claim(ledger, DEVICE_KEYS[0], second, DEVICES[0])
    claim(ledger, DEVICE_KEYS[2], first, DEVICES[2])
    samples = {1: dict(zip(DEVICES, SAMPLES, strict=True)),
               2: dict(zip(DEVICES[:3], SAMPLES[:3], strict=True))}
    return Chain(ledger, Miner({1: first, 2: second}), samples)


@pytest.fixture(scope="module")
def chain() -> Chain:
    """A chain that the tests only read."""
    return make_chain()


def run(monkeypatch, chain: Chain, *argv: str) -> int:
    """`blockfl ARGV` against the chain, its blocks served by `chain.miner`."""
    for cli in (inspect_cli, claim_cli):
        monkeypatch.setattr(cli, "open_ledger", lambda args: chain.ledger)
        monkeypatch.setattr(cli, "miner_clients", lambda args: [chain.miner])
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    inspect_cli.register(commands)
    claim_cli.register(commands)
    args = parser.parse_args([*argv, "--miners", "http://miner.invalid"])
    return args.func(args)


def expected_rows(chain: Chain, claimed: set[tuple[int, str]]) -> list[dict]:
    """Per round, the block's updates in leaf order (ascending device address)."""
    return [{"round": r, "index": i, "device": d, "samples": n, "reward": str(n * RATE),
             "claimed": (r, d) in claimed}
            for r, by_device in chain.samples.items()
            for i, (d, n) in enumerate(sorted(by_device.items(), key=lambda x: int(x[0], 16)))]


def test_inspect_claims_lists_every_update_with_its_state_and_totals(chain, monkeypatch, capsys):
    assert run(monkeypatch, chain, "inspect", "claims", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    claimed = {(1, DEVICES[0]), (2, DEVICES[0]), (1, DEVICES[2])}
    assert out["mode"] == "merkle"
    assert out["rows"] == expected_rows(chain, claimed)
    paid = SAMPLES[0] * 2 + SAMPLES[2]
    everything = sum(SAMPLES) + sum(SAMPLES[:3])
    assert out["total"] == {"samples": str(everything), "reward": str(everything * RATE),
                            "claimed": str(paid * RATE),
                            "claimable": str((everything - paid) * RATE)}
    # what the chain paid is what inspect calls claimed
    assert sum(chain.ledger.balance_of(d) for d in DEVICES) == paid * RATE


def test_inspect_claims_of_one_address_as_a_table(chain, monkeypatch, capsys):
    device = DEVICES[2]
    assert run(monkeypatch, chain, "inspect", "claims", "--address", device.lower()) == 0
    out = capsys.readouterr().out
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()]
    leaf = sorted(DEVICES, key=lambda d: int(d, 16)).index(device)
    reward = inspect_cli.tokens(SAMPLES[2] * RATE)
    assert [c for c in cells if device in c] == [
        ["1", str(leaf), device, str(SAMPLES[2]), reward, "claimed"],
        ["2", str(leaf), device, str(SAMPLES[2]), reward, "claimable"],
    ]
    total = next(c for c in cells if c and c[0] == "total")
    assert total[3:] == [str(2 * SAMPLES[2]), inspect_cli.tokens(2 * SAMPLES[2] * RATE),
                         f"claimed {reward}, claimable {reward}"]


def test_claim_lists_then_claims_what_inspect_shows(monkeypatch, capsys):
    chain = make_chain()
    key = "0x" + DEVICE_KEYS[1].hex()
    assert run(monkeypatch, chain, "claim", "--key", key, "--list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["updates"]
    assert [(r["round"], r["claimed"]) for r in listed] == [(1, False), (2, False)]
    assert chain.ledger.balance_of(DEVICES[1]) == 0
    assert run(monkeypatch, chain, "claim", "--key", key, "--json") == 0
    claimed = json.loads(capsys.readouterr().out)["updates"]
    assert [(r["round"], r["claimed"]) for r in claimed] == [(1, True), (2, True)]
    assert chain.ledger.balance_of(DEVICES[1]) == 2 * SAMPLES[1] * RATE
    assert run(monkeypatch, chain, "inspect", "claims", "--address", DEVICES[1], "--json") == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["claimed"] for r in rows] == [True, True]


def test_a_round_no_miner_serves_is_named(chain):
    with pytest.raises(LookupError, match="round 2"):
        list(served_blocks(chain.ledger, [Miner({1: chain.miner.blocks[1]})]))


def test_a_direct_deployment_has_nothing_to_claim(monkeypatch, capsys):
    ledger = EvmLedger.create(embedded_web3(), default_params(), MINERS)
    ledger.commit_block(MINER_KEYS[0], block(ledger, honest_updates(ledger)))
    direct = Chain(ledger, Miner({}), {})
    assert run(monkeypatch, direct, "inspect", "claims", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "mode": "direct", "rows": [],
        "total": {"samples": "0", "reward": "0", "claimed": "0", "claimable": "0"}}
    assert run(monkeypatch, direct, "inspect", "claims") == 0
    assert "direct mode" in capsys.readouterr().out
