"""Rejections of a block, a claim or an administrative call, named after the contract's custom
errors."""

from __future__ import annotations

from typing import Any

FORK_ERROR = "RoundAlreadyCommitted"

# Every rejection the contract can name, with the argument names of its custom error.
BLOCK_ERRORS: dict[str, tuple[str, ...]] = {
    "NotMiner": ("sender",),
    FORK_ERROR: ("round", "committedHash"),
    "WrongRound": ("expected", "given"),
    "WrongPreviousHash": ("expected", "given"),
    "EmptyBlock": (),
    "TooManyUpdates": ("count", "max"),
    "UpdatesNotSorted": ("index",),
    "DuplicateDevice": ("index", "device"),
    "DeviceNotAllowed": ("index", "device"),
    "SampleCountOutOfRange": ("index", "samples", "cap"),
    "StaleBaseModel": ("index", "expected", "given"),
    "MalformedSignature": ("index",),
    "InvalidSignature": ("index", "device", "signer"),
    "InsufficientWork": ("blockHash", "target"),
    "InvalidParams": ("maxSamplesPerUpdate", "maxUpdatesPerBlock"),
    "WrongMode": ("mode",),
    "MalformedAttestation": ("index",),
    "AttesterNotMiner": ("index", "signer"),
    "DuplicateAttester": ("index", "signer"),
    "AttestationsNotSorted": ("index",),
    "TooManyMiners": ("count", "max"),
    "MinerListNotStored": (),
    "QuorumNotReached": ("attesters", "quorum"),
    "NotEquivocation": (),
    "NoMerkleBlock": ("round",),
    "ClaimWrongRound": ("round", "recordRound"),
    "AlreadyClaimed": ("round", "index"),
    "InvalidProof": ("round", "index"),
    "ClaimIndexOutOfRange": ("round", "index", "numUpdates"),
    "ClaimExceedsTotal": ("round", "claimedSamples", "totalSamples"),
    "QuorumUnreachable": ("quorum", "miners"),
    "OwnableUnauthorizedAccount": ("account",),
    "BlockTooLarge": ("updates", "maxUpdates"),
}

# What to do about a rejection, where the error name alone does not say it.
HINTS = {
    "BlockTooLarge": "a direct-mode block this size exceeds the block gas limit; deploy in "
                     "merkle mode (--chain-mode merkle), where a block costs the same at any size",
    "QuorumNotReached": "gather attestations of more registered miners",
    "QuorumUnreachable": "a fixed quorum cannot exceed the registered miners; register more "
                         "miners or lower chain.quorum (0 = a majority)",
}


class BlockRejected(Exception):
    """The ledger refused a block; `error` is the contract's custom error name."""

    def __init__(self, error: str, values: tuple[Any, ...] = ()) -> None:
        names = BLOCK_ERRORS.get(error, tuple(f"arg{i}" for i in range(len(values))))
        self.error = error
        self.details = dict(zip(names, values, strict=False))
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.details.items())
        hint = f": {HINTS[error]}" if error in HINTS else ""
        super().__init__(f"{error}({shown}){hint}")


class ForkRejected(BlockRejected):
    """A block for a round that already has one: a fork, not an invalid block."""


def rejection(error: str, *values: Any) -> BlockRejected:
    """The exception for a named contract error (a ForkRejected for a second block)."""
    cls = ForkRejected if error == FORK_ERROR else BlockRejected
    return cls(error, values)


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)
