"""The keeper saves an anvil node's state whole: a dump cut between its blocks and its accounts
(as anvil's own periodic save can be, about 1 in 100 under a steady commit load) is never
written, and a killed keeper takes its anvil with it."""

from __future__ import annotations

import copy
import json
import os
import signal
import time

import pytest

from blockfl.chain.evm import EvmLedger, rpc_web3
from blockfl.chain.keeper import dump, is_whole, save
from blockfl.chain.node import find_anvil, free_port, port_in_use, start_anvil
from tests.conftest import MINER_KEYS, MINERS, default_params
from tests.test_ledger_conformance import block, honest_updates

pytestmark = pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found")


def commit_rounds(ledger: EvmLedger, n: int) -> None:
    for _ in range(n):
        head = ledger.head()
        r = head.round + 1
        updates = honest_updates(ledger, r, head.global_model_hash)
        ledger.commit_block(MINER_KEYS[0], block(ledger, updates, r))


def test_a_dump_whose_accounts_are_ahead_of_its_blocks_is_not_whole(tmp_path):
    port = free_port()
    node = start_anvil(port, state=tmp_path / "state.json", state_interval=None)
    url = f"http://127.0.0.1:{port}"
    try:
        commit_rounds(EvmLedger.create(rpc_web3(url), default_params(), MINERS), 3)
        state = json.loads(dump(url))
        assert is_whole(state)
        assert save(url, tmp_path / "saved.json") and is_whole(
            json.loads((tmp_path / "saved.json").read_text()))
    finally:
        node.terminate()
        node.wait(timeout=15)
    # anvil's tear: the last block and its transaction missing, its state change kept
    torn = copy.deepcopy(state)
    last = max(torn["blocks"], key=lambda b: int(b["header"]["number"], 16))
    torn["blocks"].remove(last)
    torn["transactions"] = [t for t in torn["transactions"]
                            if t["block_number"] != int(last["header"]["number"], 16)]
    assert not is_whole(torn)
    # and the other cut: a transaction whose block was read too early
    cut = copy.deepcopy(state)
    cut["blocks"] = [b for b in cut["blocks"] if b["header"] != last["header"]]
    assert not is_whole(cut)
    # the final save at a clean stop wrote the three rounds, whole
    final = json.loads((tmp_path / "state.json").read_text())
    assert is_whole(final) and len(final["transactions"]) == len(state["transactions"])


def test_a_killed_keeper_takes_its_anvil_and_keeps_its_last_whole_save(tmp_path):
    port, path = free_port(), tmp_path / "state.json"
    node = start_anvil(port, state=path, state_interval=1)
    url = f"http://127.0.0.1:{port}"
    ledger = EvmLedger.create(rpc_web3(url), default_params(), MINERS)
    commit_rounds(ledger, 2)
    deadline = time.monotonic() + 10
    while not (path.exists() and len(json.loads(path.read_text())["transactions"]) >= 4):
        assert time.monotonic() < deadline, "no save within 10 s"
        time.sleep(0.2)
    os.kill(node.pid, signal.SIGKILL)
    node.wait(timeout=5)
    deadline = time.monotonic() + 3
    while port_in_use(port):
        assert time.monotonic() < deadline, "anvil outlived its keeper"
        time.sleep(0.05)
    assert is_whole(json.loads(path.read_text()))
    again = start_anvil(port, state=path, state_interval=None)
    try:
        assert EvmLedger(rpc_web3(url), ledger.contract.address).head().round == 2
    finally:
        again.terminate()
        again.wait(timeout=15)


def test_a_dump_that_never_checks_is_saved_once_without_the_check(tmp_path, monkeypatch):
    """A keeper started from a file torn before it (never whole again) saves after one dump,
    not after every retry; a whole node's save retries only while a dump is torn."""
    from blockfl.chain import keeper

    torn = {"blocks": [], "transactions": [], "accounts": {"0x1": {"nonce": 1, "code": "0x"}}}
    calls = []
    monkeypatch.setattr(keeper, "dump", lambda url: calls.append(url) or json.dumps(torn).encode())
    assert keeper.save("u", tmp_path / "a.json", check=False) and len(calls) == 1
    calls.clear()
    assert keeper.save("u", tmp_path / "b.json") and len(calls) == keeper.TRIES
    assert json.loads((tmp_path / "a.json").read_text()) == torn
