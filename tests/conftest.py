"""Shared fixtures: deterministic keys and a ledger factory for every backend."""

from __future__ import annotations

import importlib.util
import os
import types

# one torch thread per process, as every blockfl command pins it (read when torch is imported):
# the built-in tasks' pinned bits (the cnn's convolutions) are those of one thread, and on two
# cores two threads per process made the process-network tests' timings miss
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import settings

from blockfl.chain.blocks import MAX_TARGET, ChainParams
from blockfl.chain.evm import DEV_DEPLOYER_KEY, EvmLedger, embedded_web3, rpc_web3
from blockfl.chain.ledger import Ledger
from blockfl.chain.local import LocalLedger
from blockfl.chain.node import find_anvil, free_port, start_anvil, stop_pid
from blockfl.config import Config
from blockfl.hashing import keccak
from blockfl.signing import address_of

os.environ.setdefault("MPLBACKEND", "Agg")

# fuzzing (tests/test_fuzz.py): a bounded run in CI; `--hypothesis-profile=fuzz` for a long one
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True)
settings.register_profile("fuzz", max_examples=5_000, deadline=None)
settings.load_profile("ci")

BACKENDS = ["evm", "local", "anvil"]
GENESIS = keccak(b"genesis model")


def load_script(name: str) -> types.ModuleType:
    """The module of `scripts/<name>.py` (scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def key(label: str) -> bytes:
    """A deterministic private key for tests."""
    return keccak(label.encode())


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """A session-wide anvil node on a free loopback port."""
    if find_anvil() is None:
        pytest.skip("anvil binary not found (npm install @foundry-rs/anvil-linux-amd64)")
    port = free_port()
    proc = start_anvil(port)
    yield f"http://127.0.0.1:{port}"
    stop_pid(proc.pid)


def default_params(**overrides: object) -> ChainParams:
    """Test parameters: an easy target (1 hash in 16 succeeds), small rewards, a quorum of one
    (the committer alone; attestation tests raise it)."""
    values = dict(
        target=MAX_TARGET >> 4,
        reward_per_sample=10**15,
        mining_reward=5 * 10**17,
        max_samples_per_update=1000,
        max_updates_per_block=64,
        device_allow_list=False,
        genesis_model_hash=GENESIS,
        quorum=1,
    )
    values.update(overrides)
    return ChainParams(**values)  # type: ignore[arg-type]


LedgerFactory = Callable[..., Ledger]


@pytest.fixture(params=BACKENDS)
def make_ledger(request: pytest.FixtureRequest, tmp_path) -> LedgerFactory:
    """Build a fresh ledger of the parametrized backend: make_ledger(params, miners)."""
    backend = request.param

    def factory(params: ChainParams, miners: list[str]) -> Ledger:
        if backend == "local":
            return LocalLedger.create(tmp_path / "ledger.db", params, miners, DEV_DEPLOYER_KEY)
        w3 = embedded_web3() if backend == "evm" else rpc_web3(request.getfixturevalue("anvil_url"))
        return EvmLedger.create(w3, params, miners)

    factory.backend = backend  # type: ignore[attr-defined]
    return factory


MINER_KEYS = [key(f"miner-{i}") for i in range(3)]
MINERS = [address_of(k) for k in MINER_KEYS]


def small_config(tmp_path, **sections) -> Config:
    """A quick experiment (5 devices, 3 miners, logreg, 3 rounds); `sections` override fields,
    e.g. small_config(tmp_path, network={"devices": 3})."""
    config = Config()
    config = replace(
        config,
        run=replace(config.run, rounds=3, out_dir=str(tmp_path), name="run"),
        network=replace(config.network, devices=5, miners=3),
        model=replace(config.model, name="logreg"),
        # modelled computation times make the signed records, and so every block hash and
        # the proof-of-work race, reproducible (measured times are wall-clock)
        training=replace(config.training, epochs=1, lr=0.5, compute_time="modelled"),
    )
    for section, values in sections.items():
        config = replace(config, **{section: replace(getattr(config, section), **values)})
    return config
