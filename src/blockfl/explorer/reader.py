"""What the explorer shows, read from the chain, the miners and the network's event logs.

`Explorer.refresh()` reads everything once and keeps a `Snapshot` of JSON-ready views, one per
page: `blocks` (the chain and the accuracy curve), `round(r)` (a round's paid and excluded
updates), `rewards` (balances against reward events, and with `[privacy]` on each device's
epsilon spent, charged as every miner charges it), `models` (each miner's copy of each
global model against the on-chain hash) and `latency` (phase times from the logs). Chain reads
go through `blockfl.chain.inspection`, so the "agrees" check is the one `inspect rewards` makes.
What never changes is cached: each committed block, its gas and paid updates, and the metrics of
each model, so a refresh reads only the new blocks and costs time linear in the chain. A
refresh downloads at most `MODEL_CHECKS` models from the miners (never checked first, then the
oldest checks). The block table is served a page at a time (`Snapshot.blocks_page`, newest
first) with the accuracy curve thinned to `CHART_POINTS` points per metric.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockfl.chain import inspection
from blockfl.chain.blocks import AcceptedUpdate, BlockRecord
from blockfl.chain.evm import EvmLedger
from blockfl.chain.participation import Participation
from blockfl.client import MinerClient, MinerUnavailable
from blockfl.config import NO_PRIVACY, Config, PrivacyConfig
from blockfl.events import role_logs
from blockfl.explorer.thinning import thinned
from blockfl.hashing import to_hex
from blockfl.round_phases import forks_per_round, round_table
from blockfl.store import MAX_MODEL_BYTES
from blockfl.tensors import StateDict, TensorFormatError, decode, tensor_hash

#: event the winning miner logs for each update its aggregation rule left out of its block
#: (`round`, `device`, `update_hash`, `reason`, `detail`)
EXCLUDED_EVENT = "excluded"
PAGE_ROWS = 25  # blocks per page of the block table by default
MAX_PAGE_ROWS = 500
MODEL_CHECKS = 12  # model downloads per refresh at most


@dataclass(frozen=True)
class ModelStatus:
    """A miner's copy of a global model: match, mismatch, missing or unreachable."""

    miner: str
    status: str
    served_hash: str | None = None
    detail: str = ""
    checked_at: float = 0.0


def served_model(client: MinerClient, model_hash: bytes) -> tuple[ModelStatus, StateDict | None]:
    """Download a model from a miner and compare its tensor hash with `model_hash`."""
    now = time.time()
    try:
        data = client.model_bytes(model_hash)
    except MinerUnavailable as exc:
        return ModelStatus(client.url, "unreachable", detail=str(exc), checked_at=now), None
    except ValueError as exc:  # the miner refused the request
        return ModelStatus(client.url, "missing", detail=str(exc), checked_at=now), None
    if data is None:
        return ModelStatus(client.url, "missing", detail="the miner has no such model",
                           checked_at=now), None
    try:
        state = decode(data, max_bytes=MAX_MODEL_BYTES)
    except TensorFormatError as exc:
        return ModelStatus(client.url, "mismatch", detail=f"not a safetensors model: {exc}",
                           checked_at=now), None
    served = tensor_hash(state)
    if served != model_hash:
        return ModelStatus(client.url, "mismatch", to_hex(served),
                           "served tensors hash to another value", now), None
    return ModelStatus(client.url, "match", to_hex(served), checked_at=now), state


def blocks_view(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The blocks page's data: block `rows` (newest first) and the chart's metrics (one dict
    per evaluated round, oldest first), thinned to `CHART_POINTS` points per metric;
    `metric_rounds` says how many rounds were evaluated."""
    names = sorted({k for m in metrics for k in m} - {"round"})
    return {"blocks": rows, "metrics": thinned(metrics, names), "metric_rounds": len(metrics),
            "metric_names": names}


@dataclass
class Snapshot:
    """The views of one refresh; `error` is set when the last refresh failed."""

    blocks: dict[str, Any] = field(default_factory=dict)
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)
    rewards: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def blocks_page(self, offset: int = 0, limit: int = PAGE_ROWS) -> dict[str, Any]:
        """The blocks view with `limit` block rows from the `offset`-th newest (newest first):
        `total` blocks, and the chart's thinned metrics (`metric_rounds`: rounds evaluated)."""
        rows = self.blocks.get("blocks", [])
        return self.blocks | {"blocks": rows[offset:offset + limit], "offset": offset,
                              "limit": limit, "total": len(rows), "error": self.error}


class Explorer:
    """Reads one deployment (and optionally its miners, config and logs) into snapshots."""

    def __init__(
        self,
        ledger: EvmLedger,
        miners: list[MinerClient] | None = None,
        config: Config | None = None,
        logs: Path | None = None,
        notes: list[str] | None = None,
        recheck: float = 30.0,
        test_data: Path | None = None,
        privacy: PrivacyConfig = NO_PRIVACY,
    ) -> None:
        """`config`: the experiment whose test split (or the data file `test_data`, read by its
        task) evaluates the global models; `logs`: the
        folder of the network's `minerN.jsonl`/`deviceN.jsonl` event logs; `notes`: said on
        every page (e.g. where the config came from); `recheck`: seconds before a miner's copy
        of a model that matched is downloaded and checked again; `privacy`: the deployment's
        `[privacy]` (from its protocol spec), whose epsilon the rewards page shows."""
        self.ledger = ledger
        self.miners = miners or []
        self.config = config
        self.logs = logs
        self.notes = list(notes or [])
        self.recheck = recheck
        self.test_data = test_data
        self.privacy = privacy
        self._participation = Participation(ledger)
        self.snapshot = Snapshot()
        self._gas: dict[int, int] = {}
        self._blocks: list[BlockRecord] = []  # committed blocks of rounds 1, 2, ... (final)
        self._paid: dict[int, list[dict[str, Any]]] = {}  # round -> its paid updates as JSON
        self._paid_count = 0  # UpdateAccepted events converted into `_paid`
        self._metrics: dict[bytes, dict[str, float]] = {}
        self._checks: dict[tuple[str, bytes], ModelStatus] = {}
        self._exclusions: dict[int, tuple[bytes, ...]] = {}
        self._test: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the refresh

    def refresh(self) -> Snapshot:
        """Read the chain, miners and logs once; keep and return the new snapshot."""
        with self._lock:
            try:
                snapshot = self._read()
            except Exception as exc:  # a node restarting must not stop the page
                snapshot = Snapshot(**{**self.snapshot.__dict__,
                                       "error": f"{type(exc).__name__}: {exc}"})
            self.snapshot = snapshot
            return snapshot

    def run(self, stop: threading.Event, interval: float) -> None:
        """Refresh every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            self.refresh()
            stop.wait(interval)

    def _read(self) -> Snapshot:
        ledger = self.ledger
        head = ledger.head()
        blocks = self._committed_blocks(head.round)
        accepted = ledger.accepted_updates()
        miner_logs = role_logs(self.logs, "miner") if self.logs else []
        forks = forks_per_round(miner_logs) if self.logs else None
        excluded = self._logged_exclusions(miner_logs)
        models = self._model_rows(blocks)
        metrics = [row["metrics"] | {"round": row["round"]} for row in models
                   if row["metrics"] is not None]
        chain = {"chain_id": ledger.domain.chain_id, "contract": ledger.contract.address,
                 "head": head.round, "updated": time.time(), "notes": self._notes()}
        gas = self._gas_used(head.round)
        block_rows = [self._block_row(b, gas, forks, models[b.round - 1])
                      for b in reversed(blocks)]
        paid = self._paid_updates(blocks, accepted)
        mining_reward = ledger.params().mining_reward
        return Snapshot(
            blocks=chain | blocks_view(block_rows, metrics),
            rounds={b.round: chain | self._round_view(b, paid[b.round], excluded, mining_reward)
                    for b in blocks},
            rewards=chain | self._rewards_view(blocks, accepted),
            models=chain | {"miners": [m.url for m in self.miners], "rounds": models,
                            "all_match": bool(models) and all(r["all_match"] for r in models)},
            latency=chain | self._latency_view(),
        )

    def _committed_blocks(self, head: int) -> list[BlockRecord]:
        """Every committed block up to `head`, reading only those not read before."""
        self._blocks += inspection.blocks(self.ledger, first=len(self._blocks) + 1, last=head)
        return self._blocks

    def _notes(self) -> list[str]:
        notes = list(self.notes)
        if not self.miners:
            notes.append("no miners given (--miners): models are neither checked nor evaluated")
        if self.logs is None:
            notes.append("no event logs (--logs): forks, excluded updates and latency unknown")
        return notes

    # ------------------------------------------------------------------ blocks

    def _gas_used(self, head: int) -> dict[int, int]:
        """Gas of each block's commit transaction, from its `BlockCommitted` event's receipt."""
        if len(self._gas) < head:
            for log in self.ledger.contract.events.BlockCommitted().get_logs(from_block=0):
                round_ = int(log["args"]["round"])
                if round_ not in self._gas:
                    receipt = self.ledger.w3.eth.get_transaction_receipt(log["transactionHash"])
                    self._gas[round_] = int(receipt["gasUsed"])
        return self._gas

    @staticmethod
    def _block_row(block: BlockRecord, gas: dict[int, int], forks: dict[int, int] | None,
                   models: dict[str, Any]) -> dict[str, Any]:
        return inspection.block_json(block) | {
            "gas": gas.get(block.round),
            "forks": None if forks is None else forks.get(block.round, 0),
            "models_match": models["all_match"] if models["checks"] else None,
        }

    # ------------------------------------------------------------------ rounds and rewards

    def _paid_updates(self, blocks: list[BlockRecord],
                      accepted: list[AcceptedUpdate]) -> dict[int, list[dict[str, Any]]]:
        """Each round's paid updates as JSON. Events come in chain order and stay (merkle-mode
        claims add events to old rounds later), so only those not seen before are converted."""
        for u in accepted[self._paid_count:]:
            self._paid.setdefault(u.round, []).append(inspection.jsonable(u))
        self._paid_count = len(accepted)
        return {b.round: list(self._paid.get(b.round, ())) for b in blocks}

    def _round_view(self, block: BlockRecord, paid: list[dict[str, Any]],
                    logged: dict[int, list[dict[str, Any]]], mining_reward: int) -> dict[str, Any]:
        return {
            "round": block.round,
            "block": inspection.block_json(block),
            "updates": paid,
            "mining": {"miner": block.miner, "reward": str(mining_reward)},
            "excluded": self._excluded(block.round, logged.get(block.round, [])),
            "excluded_known": self.logs is not None or bool(self.miners),
        }

    @staticmethod
    def _logged_exclusions(miner_logs: list[list[dict]]) -> dict[int, list[dict[str, Any]]]:
        """The `excluded` events of the miners' logs, by round, in one pass."""
        found: dict[int, list[dict[str, Any]]] = {}
        for events in miner_logs:
            for e in events:
                if e.get("event") == EXCLUDED_EVENT and isinstance(e.get("round"), int):
                    found.setdefault(e["round"], []).append(e)
        return found

    def _excluded(self, round_: int, logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Updates the aggregation rule left out of the round's block: with their reasons from
        the miners' logs, and the update hashes the block carries as a miner serves it."""
        found: dict[str, dict[str, Any]] = {}
        for e in logged:
            found.setdefault(str(e.get("update_hash")), {
                "device": e.get("device"), "update_hash": e.get("update_hash"),
                "reason": e.get("reason"), "detail": e.get("detail", "")})
        for update_hash in self._block_exclusions(round_):
            found.setdefault(to_hex(update_hash), {
                "device": None, "update_hash": to_hex(update_hash), "reason": None,
                "detail": "the reason is in the winning miner's log"})
        return list(found.values())

    def _block_exclusions(self, round_: int) -> tuple[bytes, ...]:
        """The excluded update hashes of a round's block, as the first miner that has the block
        serves it (cached: a committed block does not change)."""
        if round_ not in self._exclusions:
            for client in self.miners:
                try:
                    proposal = client.block(round_)
                except (MinerUnavailable, ValueError):
                    continue
                if proposal is not None:
                    self._exclusions[round_] = tuple(proposal.excluded)
                    break
        return self._exclusions.get(round_, ())

    def _rewards_view(self, blocks: list[BlockRecord],
                      accepted: list[AcceptedUpdate]) -> dict[str, Any]:
        rows = inspection.rewards(self.ledger, blocks)
        mining_reward = self.ledger.params().mining_reward
        events = [{"round": u.round, "address": u.device, "kind": "data",
                   "samples": u.samples, "reward": str(u.reward)} for u in accepted]
        events += [{"round": b.round, "address": b.miner, "kind": "mining", "samples": None,
                    "reward": str(mining_reward)} for b in blocks]
        events.sort(key=lambda e: (e["round"], e["kind"] == "mining", e["address"]))
        spent = {}
        if self.privacy.mode != "off":
            from blockfl.privacy import summary

            spent = {"privacy": summary(self.privacy, self._participation.charged())}
        return spent | {
            "rows": [inspection.jsonable(r) for r in rows],
            "total": {"balance": str(sum(r.balance for r in rows)),
                      "event_total": str(sum(r.event_total for r in rows))},
            "agrees": all(r.agrees for r in rows),
            "events": events,
        }

    # ------------------------------------------------------------------ models

    def _model_rows(self, blocks: list[BlockRecord]) -> list[dict[str, Any]]:
        due = self._due_checks(blocks)
        rows = []
        for block in blocks:
            checks, state = [], None
            for client in self.miners:
                key = (client.url, block.global_model_hash)
                if key in due:
                    status, served = served_model(client, block.global_model_hash)
                    self._checks[key] = status
                    state = state if state is not None else served
                checks.append(self._checks.get(key, ModelStatus(client.url, "unchecked")).__dict__)
            rows.append({
                "round": block.round,
                "chain_hash": to_hex(block.global_model_hash),
                "checks": checks,
                "all_match": bool(checks) and all(c["status"] == "match" for c in checks),
                "metrics": self._evaluate(block.global_model_hash, state),
            })
        return rows

    def _due_checks(self, blocks: list[BlockRecord]) -> set[tuple[str, bytes]]:
        """The (miner, model) copies to download in this refresh, `MODEL_CHECKS` at most: those
        never checked (newest round first), then those whose last check is oldest, except
        matches younger than `recheck` seconds."""
        now = time.time()
        never, stale = [], []
        for block in reversed(blocks):
            for client in self.miners:
                key = (client.url, block.global_model_hash)
                cached = self._checks.get(key)
                if cached is None:
                    never.append(key)
                elif cached.status != "match" or now - cached.checked_at >= self.recheck:
                    stale.append((cached.checked_at, key))
        stale.sort(key=lambda item: item[0])
        return set((never + [key for _, key in stale])[:MODEL_CHECKS])

    def _evaluate(self, model_hash: bytes, state: StateDict | None) -> dict[str, float] | None:
        """Test metrics of a global model (cached by hash), None until a miner served it."""
        if model_hash in self._metrics or self.config is None:
            return self._metrics.get(model_hash)
        if state is None:
            return None
        from blockfl.sim.setup import test_data
        from blockfl.task import evaluate

        if self._test is None:
            self._test = test_data(self.config, self.test_data)
        task, test = self._test
        try:
            metrics = evaluate(task, state, test)
        except (RuntimeError, ValueError, KeyError) as exc:
            self.notes.append(f"cannot evaluate the global models with the config: {exc}")
            self.config = None
            return None
        self._metrics[model_hash] = metrics
        return metrics

    # ------------------------------------------------------------------ latency

    def _latency_view(self) -> dict[str, Any]:
        if self.logs is None or not self.logs.is_dir():
            return {"available": False, "logs": None, "rows": []}
        return {"available": True, "logs": str(self.logs), "rows": round_table(self.logs)}
