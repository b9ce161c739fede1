"""Keys of devices and miners: parsing key arguments and deterministic development keys."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from eth_account import Account

from blockfl.hashing import keccak

# The public development mnemonic whose accounts anvil, hardhat and Foundry fund on every local
# chain. Its keys are well known: for local test chains only, never for real funds.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
#: BIP-32 non-hardened child indexes (the N of dev:N) are below 2^31
MAX_DEV_INDEX = 2**31


@cache
def dev_key(index: int) -> bytes:
    """The `index`-th development key of the standard local-chain mnemonic."""
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return bytes(account.key)


def derived_key(role: str, index: int, seed: int = 0) -> bytes:
    """A deterministic key for simulations: keccak of role, index and seed (never for funds)."""
    return keccak(f"blockfl/{role}/{index}/{seed}".encode())


def parse_key(spec: str) -> bytes:
    """A private key from `dev:N`, a 0x-hex string, or a file holding the hex."""
    spec = spec.strip()
    if spec.startswith("dev:"):
        index = spec[4:]
        if not index.isdigit() or int(index) >= MAX_DEV_INDEX:
            raise ValueError(f"a development key is dev:N with N from 0 to {MAX_DEV_INDEX - 1}, "
                             f"got {spec!r}")
        return dev_key(int(index))
    path = Path(spec)
    if len(spec) < 200 and path.exists():
        spec = path.read_text().strip()
    try:
        raw = bytes.fromhex(spec.removeprefix("0x"))
    except ValueError:
        raise ValueError("a key is dev:N, 64 hex digits, or a file holding them") from None
    if len(raw) != 32:
        raise ValueError(f"a private key is 32 bytes, got {len(raw)}")
    return raw
