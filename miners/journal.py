"""A miner's durable state in SQLite: every update it acknowledged and every block it knows.

An update is written (and fsynced, WAL with `synchronous=FULL`) before the miner acknowledges
it, so a miner killed at any moment restarts with every acknowledged update: either it is in a
committed block or it is still pending for the open round. Committed blocks are kept with their
updates' tensors so the miner can serve them to peers and devices after a restart. The
candidate the miner attested for each committer in each round is written before its signature
leaves the miner, so a restarted miner never signs a second one (provable equivocation). Global
models live next to it in the content-addressed `ModelStore`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from blockfl.chain.blocks import BlockProposal
from blockfl.wire import (
    UpdateSubmission,
    proposal_from_dict,
    proposal_to_dict,
    signed_from_dict,
    signed_to_dict,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    round INTEGER NOT NULL,
    device TEXT NOT NULL,
    update_hash BLOB NOT NULL,
    record TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (round, device)
);
CREATE INDEX IF NOT EXISTS updates_by_hash ON updates (update_hash);
CREATE TABLE IF NOT EXISTS blocks (
    round INTEGER PRIMARY KEY,
    block_hash BLOB NOT NULL UNIQUE,
    block TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exclusions (
    round INTEGER NOT NULL,
    device TEXT NOT NULL,
    update_hash BLOB NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (round, device)
);
CREATE TABLE IF NOT EXISTS attested (
    round INTEGER NOT NULL,
    committer TEXT NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (round, committer)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class MinerJournal:
    """Acknowledged updates and known blocks of one miner on one deployment, in `path` (SQLite).

    `deployment` names the chain and contract (e.g. "31337:0xAbc..."); a journal written for
    another deployment is refused rather than mixed with this one.
    """

    def __init__(self, path: Path, deployment: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('deployment', ?)", (deployment,))
        (owner,) = self._db.execute("SELECT value FROM meta WHERE key = 'deployment'").fetchone()
        if owner != deployment:
            self._db.close()
            raise ValueError(f"{path} is the journal of deployment {owner}, not {deployment}: "
                             "give this deployment its own --data-dir")

    def record_update(self, submission: UpdateSubmission) -> None:
        """Keep an accepted update (durable when this returns)."""
        with self._lock:
            self._insert(submission)

    def _insert(self, submission: UpdateSubmission) -> None:
        record = submission.signed.record
        self._db.execute(
            "INSERT OR IGNORE INTO updates VALUES (?, ?, ?, ?, ?)",
            (record.round, submission.device, record.update_hash,
             json.dumps(signed_to_dict(submission.signed)), submission.payload),
        )

    def updates_of(self, round_: int) -> list[UpdateSubmission]:
        """Every update acknowledged for `round_`, in the order they were accepted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record, payload FROM updates WHERE round = ? ORDER BY rowid", (round_,)
            ).fetchall()
        return [UpdateSubmission(signed_from_dict(json.loads(r)), bytes(p)) for r, p in rows]

    def update(self, update_hash: bytes) -> UpdateSubmission | None:
        """The acknowledged update with this update hash, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT record, payload FROM updates WHERE update_hash = ? LIMIT 1",
                (update_hash,),
            ).fetchone()
        if row is None:
            return None
        return UpdateSubmission(signed_from_dict(json.loads(row[0])), bytes(row[1]))

    def record_exclusion(
        self, round_: int, device: str, update_hash: bytes, reason: str, detail: str
    ) -> None:
        """Keep why an accepted update stayed out of the committed block of `round_`."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO exclusions VALUES (?, ?, ?, ?, ?)",
                             (round_, device, update_hash, reason, detail))

    def exclusions(self, round_: int) -> list[tuple[str, bytes, str, str]]:
        """`(device, update_hash, reason, detail)` of the updates excluded in `round_`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device, update_hash, reason, detail FROM exclusions WHERE round = ? "
                "ORDER BY device", (round_,)).fetchall()
        return [(d, bytes(h), r, t) for d, h, r, t in rows]

    def record_block(
        self, proposal: BlockProposal, block_hash: bytes, submissions: list[UpdateSubmission]
    ) -> None:
        """Keep a committed block and its updates' tensors (one transaction)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for submission in submissions:
                    self._insert(submission)
                self._db.execute(
                    "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?)",
                    (proposal.round, block_hash, json.dumps(proposal_to_dict(proposal))),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_attested(self, round_: int, committer: str, digest: bytes) -> bytes:
        """Keep `digest` (of a `BlockAttestation`) as the candidate of `committer` attested in
        `round_` unless one is kept already (durable when this returns); the digest kept."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO attested VALUES (?, ?, ?)",
                             (round_, committer, digest))
            (kept,) = self._db.execute(
                "SELECT digest FROM attested WHERE round = ? AND committer = ?",
                (round_, committer)).fetchone()
        return bytes(kept)

    def block(self, ref: int | bytes) -> BlockProposal | None:
        """The committed block of a round (int) or with a block hash (bytes), if known."""
        column = "block_hash" if isinstance(ref, bytes) else "round"
        with self._lock:
            row = self._db.execute(
                f"SELECT block FROM blocks WHERE {column} = ?", (ref,)
            ).fetchone()
        return None if row is None else proposal_from_dict(json.loads(row[0]))

    def forget_blocks_from(self, round_: int) -> list[int]:
        """Drop the blocks (and exclusions) of rounds from `round_` on: the chain abandoned them
        (a rollback or reorganisation). Their updates stay, to be included again. The rounds
        dropped, ascending."""
        with self._lock:
            rows = self._db.execute("SELECT round FROM blocks WHERE round >= ? ORDER BY round",
                                    (round_,)).fetchall()
            self._db.execute("DELETE FROM blocks WHERE round >= ?", (round_,))
            self._db.execute("DELETE FROM exclusions WHERE round >= ?", (round_,))
        return [r for (r,) in rows]

    def forget_updates_from(self, round_: int) -> None:
        """Drop the updates of rounds from `round_` on: their base models left the chain, and
        each device's update of such a round is to be replaced by the one it sends again."""
        with self._lock:
            self._db.execute("DELETE FROM updates WHERE round >= ?", (round_,))

    def forget_update(self, round_: int, device: str) -> None:
        """Drop one device's update of `round_`: its base model left the chain (a reorg at
        this miner's height), and the device sends another."""
        with self._lock:
            self._db.execute("DELETE FROM updates WHERE round = ? AND device = ?",
                             (round_, device))

    def forget_from(self, round_: int) -> None:
        """Drop the candidates attested for rounds from `round_` on: the chain rolled back
        under them (`AttestedRounds`)."""
        with self._lock:
            self._db.execute("DELETE FROM attested WHERE round >= ?", (round_,))

    def missing_blocks(self, upto: int) -> list[int]:
        """Rounds 1..`upto` whose committed block this journal does not hold."""
        with self._lock:
            rows = self._db.execute("SELECT round FROM blocks WHERE round <= ?", (upto,))
            known = {r for (r,) in rows.fetchall()}
        return [r for r in range(1, upto + 1) if r not in known]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
