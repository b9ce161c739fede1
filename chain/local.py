"""The `local` ledger: the BlockFL contract's rules in Python over SQLite, no EVM.

It enforces the same checks in the same order as `BlockFL.commitBlock` and raises the same
named errors, so large simulations can run without an EVM and the conformance suite holds both
backends to one behaviour. State is durable when given a file path; a commit is one SQLite
transaction, so a rejected block changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import rlp
from eth_utils import to_checksum_address

from blockfl.chain.attestation import (
    Attestation,
    AttestedBlock,
    check_attestations,
    equivocator,
    sort_attestations,
)
from blockfl.chain.blocks import (
    MODES,
    AcceptedUpdate,
    BlockHeader,
    BlockProposal,
    BlockRecord,
    ChainParams,
    CommitReceipt,
    Head,
    update_digests,
    updates_root,
)
from blockfl.chain.errors import rejection
from blockfl.chain.ledger import Ledger
from blockfl.chain.merkle import (
    UINT64_MAX,
    MerkleClaim,
    block_summary,
    committed_root,
    verify,
)
from blockfl.hashing import ZERO_HASH, keccak
from blockfl.signing import Domain, SignatureError, UpdateRecord, address_of, recover_signer

LOCAL_CHAIN_ID = 31337
MAX_MINERS = 767  # the contract's MAX_MINERS: its list of miners is a contract's code

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS miners (address TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS allowed_devices (address TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS blocks (
    round INTEGER PRIMARY KEY, block_hash BLOB NOT NULL, prev_hash BLOB NOT NULL,
    global_model_hash BLOB NOT NULL, updates_root BLOB NOT NULL, miner TEXT NOT NULL,
    num_updates INTEGER NOT NULL, timestamp INTEGER NOT NULL, total_samples TEXT NOT NULL,
    nonce TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accepted_updates (
    round INTEGER NOT NULL, position INTEGER NOT NULL, device TEXT NOT NULL,
    update_hash BLOB NOT NULL, samples TEXT NOT NULL, reward TEXT NOT NULL,
    PRIMARY KEY (round, position));
CREATE TABLE IF NOT EXISTS balances (address TEXT PRIMARY KEY, amount TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (round INTEGER NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY (round, idx));
CREATE TABLE IF NOT EXISTS claimed_samples (round INTEGER PRIMARY KEY, samples TEXT NOT NULL);
"""


def contract_address(deployer: str, nonce: int = 0) -> str:
    """The CREATE address of a contract deployed by `deployer` at `nonce`."""
    raw = bytes.fromhex(deployer.removeprefix("0x"))
    return to_checksum_address(keccak(rlp.encode([raw, nonce]))[-20:])


class LocalLedger(Ledger):
    """A BlockFL ledger in one SQLite database. Use `create` or `open`."""

    def __init__(self, db: sqlite3.Connection, owner_key: bytes | None = None) -> None:
        self._db = db
        self.owner_key = owner_key
        self._lock = threading.RLock()
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if "params" not in meta:
            raise ValueError("the database holds no BlockFL ledger; use LocalLedger.create")
        self._params = ChainParams(**json.loads(meta["params"], object_hook=_unhex))
        self.owner = meta["owner"]
        self.domain = Domain(int(meta["chain_id"]), meta["contract"])

    @staticmethod
    def _connect(path: str | Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        return db

    @classmethod
    def open(cls, path: str | Path, owner_key: bytes | None = None) -> LocalLedger:
        """Open an existing ledger file (with the deployer's key for owner-only calls)."""
        if not Path(path).exists():
            raise FileNotFoundError(f"no ledger at {path}")
        return cls(cls._connect(path), owner_key)

    @classmethod
    def create(
        cls,
        path: str | Path,
        params: ChainParams,
        miners: list[str],
        owner_key: bytes,
        chain_id: int = LOCAL_CHAIN_ID,
    ) -> LocalLedger:
        """A new ledger at `path` (":memory:" for none), as if `owner_key` deployed the contract.

        The contract address (also the reward token's) is the one a first deployment by that
        key would get, so signatures are bound to a domain just as on an EVM chain.
        """
        if params.max_samples_per_update * params.max_updates_per_block > UINT64_MAX:
            raise rejection("InvalidParams", params.max_samples_per_update,
                            params.max_updates_per_block)
        miners = list(dict.fromkeys(to_checksum_address(m) for m in miners))
        if params.quorum > len(miners):
            raise rejection("QuorumUnreachable", params.quorum, len(miners))
        if len(miners) > MAX_MINERS:
            raise rejection("TooManyMiners", len(miners), MAX_MINERS)
        db = cls._connect(path)
        if db.execute("SELECT 1 FROM meta WHERE key = 'params'").fetchone():
            raise FileExistsError(f"{path} already holds a ledger")
        owner = address_of(owner_key)
        contract = contract_address(owner)
        stored = ChainParams(**{**asdict(params), "token": contract})
        with db:
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("params", json.dumps(asdict(stored), default=bytes.hex)),
                    ("owner", owner),
                    ("chain_id", str(chain_id)),
                    ("contract", contract),
                    ("head_round", "0"),
                ],
            )
            db.executemany("INSERT INTO miners VALUES (?)", [(m,) for m in miners])
        return cls(db, owner_key)

    # -------------------------------------------------------------- reads

    def params(self) -> ChainParams:
        return self._params

    def head(self) -> Head:
        with self._lock:
            round_ = self._head_round()
            if round_ == 0:
                return Head(0, ZERO_HASH, self._params.genesis_model_hash)
            block = self.get_block(round_)
            assert block is not None
            return Head(round_, block.block_hash, block.global_model_hash)

    def get_block(self, round_: int) -> BlockRecord | None:
        row = self._db.execute("SELECT * FROM blocks WHERE round = ?", (round_,)).fetchone()
        if row is None:
            return None
        return BlockRecord(*row[:8], total_samples=int(row[8]), nonce=int(row[9]))

    def is_miner(self, address: str) -> bool:
        query = "SELECT 1 FROM miners WHERE address = ?"
        return self._db.execute(query, (to_checksum_address(address),)).fetchone() is not None

    def balance_of(self, address: str) -> int:
        query = "SELECT amount FROM balances WHERE address = ?"
        row = self._db.execute(query, (to_checksum_address(address),)).fetchone()
        return int(row[0]) if row else 0

    def accepted_updates(self, round_: int | None = None) -> list[AcceptedUpdate]:
        query = "SELECT round, device, update_hash, samples, reward FROM accepted_updates"
        args: tuple = ()
        if round_ is not None:
            query += " WHERE round = ?"
            args = (round_,)
        rows = self._db.execute(query + " ORDER BY round, position", args)
        return [AcceptedUpdate(r, d, h, int(s), int(w)) for r, d, h, s, w in rows]

    # -------------------------------------------------------------- writes

    def commit_block(
        self, miner_key: bytes, proposal: BlockProposal, attestations: Sequence[Attestation] = ()
    ) -> CommitReceipt:
        if self._params.mode == "merkle":
            summary = block_summary(proposal.updates, proposal.round)
            return self.commit_root(miner_key, proposal, summary, attestations)
        miner = address_of(miner_key)
        updates = proposal.updates
        with self._lock:
            head = self._check_link(miner, proposal, "direct")
            self._check_count(len(updates))
            root = self._check_updates(proposal, head)
            return self._commit(miner, proposal, root, root, len(updates),
                                sum(u.record.samples for u in updates), attestations)

    def commit_root(
        self, miner_key: bytes, proposal: BlockProposal, summary: tuple[bytes, int, int],
        attestations: Sequence[Attestation] = (),
    ) -> CommitReceipt:
        miner = address_of(miner_key)
        merkle_root, count, total = summary
        with self._lock:
            self._check_link(miner, proposal, "merkle")
            self._check_count(count)
            return self._commit(miner, proposal, committed_root(*summary), merkle_root, count,
                                total, attestations)

    def required_attesters(self) -> int:
        """The contract's `requiredAttesters`: a majority for quorum 0, else the quorum or
        every registered miner when fewer are left."""
        miners = self._miner_count()
        if self._params.quorum:
            return min(self._params.quorum, miners)
        return miners // 2 + 1

    def _miner_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM miners").fetchone()[0]

    def _check_link(self, miner: str, proposal: BlockProposal, mode: str) -> Head:
        """The contract's `_checkCommitter` and `_checkLink`, in its order; the head."""
        if not self.is_miner(miner):
            raise rejection("NotMiner", miner)
        if self._params.mode != mode:
            raise rejection("WrongMode", MODES.index(self._params.mode))
        head = self.head()
        if proposal.round == 0 or proposal.round > head.round + 1:
            raise rejection("WrongRound", head.round + 1, proposal.round)
        if proposal.round <= head.round:
            committed = self.get_block(proposal.round)
            raise rejection("RoundAlreadyCommitted", proposal.round,
                            committed.block_hash if committed else ZERO_HASH)
        if proposal.prev_hash != head.block_hash:
            raise rejection("WrongPreviousHash", head.block_hash, proposal.prev_hash)
        return head

    def _check_count(self, count: int) -> None:
        if count == 0:
            raise rejection("EmptyBlock")
        if count > self._params.max_updates_per_block:
            raise rejection("TooManyUpdates", count, self._params.max_updates_per_block)

    def _check_updates(self, proposal: BlockProposal, head: Head) -> bytes:
        """The contract's `_checkUpdate` of each update of a direct block; its updates root."""
        p = self._params
        updates = proposal.updates
        digests = update_digests(updates, proposal.round, self.domain)
        for i, update in enumerate(updates):
            record = update.record
            device = to_checksum_address(record.device)
            if i > 0:
                previous = int(updates[i - 1].record.device, 16)
                if int(device, 16) == previous:
                    raise rejection("DuplicateDevice", i, device)
                if int(device, 16) < previous:
                    raise rejection("UpdatesNotSorted", i)
            if p.device_allow_list and not self._allowed(device):
                raise rejection("DeviceNotAllowed", i, device)
            if record.samples == 0 or record.samples > p.max_samples_per_update:
                cap = p.max_samples_per_update
                raise rejection("SampleCountOutOfRange", i, record.samples, cap)
            if record.base_model_hash != head.global_model_hash:
                raise rejection("StaleBaseModel", i, head.global_model_hash, record.base_model_hash)
            digest = digests[i]
            try:
                signer = recover_signer(digest, update.signature)
            except SignatureError:
                raise rejection("MalformedSignature", i) from None
            if signer != device:
                raise rejection("InvalidSignature", i, device, signer)
        return updates_root(digests)

    def _commit(
        self, miner: str, proposal: BlockProposal, attested_root: bytes, stored_root: bytes,
        count: int, total: int, attestations: Sequence[Attestation],
    ) -> CommitReceipt:
        """The contract's `_record` and `_checkAttestations`: the proof-of-work, the quorum
        (of attestations naming this committer), then the block is stored and paid."""
        p = self._params
        header = BlockHeader(proposal.prev_hash, proposal.round, proposal.global_model_hash,
                             attested_root, miner)
        block_hash = header.block_hash(proposal.nonce)
        if int.from_bytes(block_hash, "big") > p.target:
            raise rejection("InsufficientWork", block_hash, p.target)
        attested = AttestedBlock(proposal.round, proposal.prev_hash, attested_root,
                                 proposal.global_model_hash, p.protocol_spec_hash, miner)
        check_attestations(attested, sort_attestations(attestations, self.domain), self.domain,
                           miner, self.is_miner, self.required_attesters())
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (proposal.round, block_hash, proposal.prev_hash, proposal.global_model_hash,
                 stored_root, miner, count, int(time.time()), str(total), str(proposal.nonce)),
            )
            if p.mode == "direct":  # a merkle block's updates are paid when claimed
                for position, update in enumerate(proposal.updates):
                    self._pay(proposal.round, position, update.device, update.record)
            self._mint(miner, p.mining_reward)
            db.execute("UPDATE meta SET value = ? WHERE key = 'head_round'", (str(proposal.round),))
        return CommitReceipt(block_hash, gas_used=0)

    def report_equivocation(self, reporter_key: bytes, a: Attestation, b: Attestation) -> str:
        with self._lock:
            miner = equivocator(a, b, self.domain)
            self._remove_miner(miner)
        return miner

    def claim(self, sender_key: bytes, round_: int, claims: Sequence[MerkleClaim]) -> int:
        with self._lock:
            block = self.get_block(round_)
            paid: set[int] = set()
            claimed = self.claimed_samples(round_)
            for c in claims:  # all checks first: a rejected batch pays nothing
                claimed = self._check_claim(round_, block, c, paid, claimed)
                paid.add(c.index)
            db = self._db
            with db:
                db.execute("BEGIN IMMEDIATE")
                position = db.execute("SELECT COUNT(*) FROM accepted_updates WHERE round = ?",
                                      (round_,)).fetchone()[0]
                for offset, c in enumerate(claims):
                    db.execute("INSERT INTO claims VALUES (?, ?)", (round_, c.index))
                    self._pay(round_, position + offset, to_checksum_address(c.record.device),
                              c.record)
                db.execute("INSERT OR REPLACE INTO claimed_samples VALUES (?, ?)",
                           (round_, str(claimed)))
        return 0

    def _check_claim(self, round_: int, block: BlockRecord | None, c: MerkleClaim,
                     paid: set[int], claimed: int) -> int:
        """The contract's `_claim` checks, in its order; the round's claimed samples after it."""
        p = self._params
        if p.mode != "merkle":
            raise rejection("WrongMode", MODES.index(p.mode))
        if c.record.round != round_:
            raise rejection("ClaimWrongRound", round_, c.record.round)
        if block is None:
            raise rejection("NoMerkleBlock", round_)
        if c.index >= block.num_updates:
            raise rejection("ClaimIndexOutOfRange", round_, c.index, block.num_updates)
        if c.index in paid or self.is_claimed(round_, c.index):
            raise rejection("AlreadyClaimed", round_, c.index)
        if not verify(c.proof, block.updates_root, c.leaf()):
            raise rejection("InvalidProof", round_, c.index)
        device = to_checksum_address(c.record.device)
        if p.device_allow_list and not self._allowed(device):
            raise rejection("DeviceNotAllowed", c.index, device)
        if c.record.samples == 0 or c.record.samples > p.max_samples_per_update:
            raise rejection("SampleCountOutOfRange", c.index, c.record.samples,
                            p.max_samples_per_update)
        claimed += c.record.samples
        if claimed > block.total_samples:
            raise rejection("ClaimExceedsTotal", round_, claimed, block.total_samples)
        return claimed

    def claimed_samples(self, round_: int) -> int:
        query = "SELECT samples FROM claimed_samples WHERE round = ?"
        row = self._db.execute(query, (round_,)).fetchone()
        return int(row[0]) if row else 0

    def _pay(self, round_: int, position: int, device: str, record: UpdateRecord) -> None:
        """Accept update `position` of `round_` and mint its data reward to `device` (the
        contract's `UpdateAccepted`), in a direct commit or a merkle claim."""
        reward = record.samples * self._params.reward_per_sample
        self._db.execute(
            "INSERT INTO accepted_updates VALUES (?, ?, ?, ?, ?, ?)",
            (round_, position, device, record.update_hash, str(record.samples), str(reward)),
        )
        self._mint(device, reward)

    def is_claimed(self, round_: int, index: int) -> bool:
        if not 0 <= index < 2**32:  # no leaf has such an index (a uint32)
            return False
        query = "SELECT 1 FROM claims WHERE round = ? AND idx = ?"
        return self._db.execute(query, (round_, index)).fetchone() is not None

    def _mint(self, address: str, amount: int) -> None:
        if not amount:
            return
        total = self.balance_of(address) + amount
        self._db.execute(
            "INSERT INTO balances VALUES (?, ?) ON CONFLICT(address) DO UPDATE SET amount = ?",
            (address, str(total), str(total)),
        )

    def _head_round(self) -> int:
        query = "SELECT value FROM meta WHERE key = 'head_round'"
        return int(self._db.execute(query).fetchone()[0])

    def _allowed(self, device: str) -> bool:
        query = "SELECT 1 FROM allowed_devices WHERE address = ?"
        return self._db.execute(query, (device,)).fetchone() is not None

    # -------------------------------------------------------------- administration

    def _require_owner(self) -> None:
        """The contract's `onlyOwner`."""
        if self.owner_key is None:
            raise PermissionError("this ledger was opened without the deployer's key")
        caller = address_of(self.owner_key)
        if caller != self.owner:
            raise rejection("OwnableUnauthorizedAccount", caller)

    def add_miner(self, miner: str) -> None:
        self._require_owner()
        with self._lock:
            if self.is_miner(miner):
                return
            if self._miner_count() == MAX_MINERS:
                raise rejection("TooManyMiners", MAX_MINERS + 1, MAX_MINERS)
            self._db.execute("INSERT INTO miners VALUES (?)", (to_checksum_address(miner),))

    def remove_miner(self, miner: str) -> None:
        self._require_owner()
        with self._lock:
            self._remove_miner(miner)

    def _remove_miner(self, miner: str) -> None:
        if not self.is_miner(miner):
            raise rejection("NotMiner", to_checksum_address(miner))
        self._db.execute("DELETE FROM miners WHERE address = ?", (to_checksum_address(miner),))

    def set_target(self, target: int) -> None:
        self._require_owner()
        with self._lock:
            self._params = ChainParams(**{**asdict(self._params), "target": target})
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'params'",
                (json.dumps(asdict(self._params), default=bytes.hex),),
            )

    def set_device_allowed(self, device: str, allowed: bool) -> None:
        self._require_owner()
        device = to_checksum_address(device)
        if allowed:
            self._db.execute("INSERT OR IGNORE INTO allowed_devices VALUES (?)", (device,))
        else:
            self._db.execute("DELETE FROM allowed_devices WHERE address = ?", (device,))


def _unhex(obj: dict) -> dict:
    """JSON hook: the hashes among the parameters are stored as hex."""
    for name in ("genesis_model_hash", "protocol_spec_hash"):
        if name in obj:
            obj[name] = bytes.fromhex(obj[name])
    return obj
