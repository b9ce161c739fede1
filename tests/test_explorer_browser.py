"""The explorer in a real browser (headless Debian Chromium through Selenium + chromedriver).

One network of real processes (anvil, 2 miners, 4 devices, multi-Krum keeping 3 updates of 4)
runs for the module. The explorer is
started before any block exists; the devices then commit rounds 1-2 and stop, a model file of
miner 1 is tampered with, and the devices commit rounds 3-4. The page must show what the chain
holds: the block rows, one chart point per round, the table growing, the tampered copy as a
MISMATCH, who was paid how much for which round, and which updates the rule excluded and why.

`BLOCKFL_EXPLORER_SCREENSHOT=docs/figures/explorer.png` also saves the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from blockfl.chain.node import find_anvil, free_port, wait_for_port
from blockfl.client import MinerClient
from blockfl.config import load_config
from blockfl.hashing import to_hex
from blockfl.launcher import CHILD_ENV, LocalNetwork
from blockfl.tensors import decode, encode

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]
FIRST_ROUNDS, ROUNDS, DEVICES = 2, 4, 4
READ_TABLE = """
return Array.from(document.querySelectorAll(`table#${arguments[0]} tbody tr`)).map((tr) => ({
  round: tr.dataset.round ? Number(tr.dataset.round) : null,
  text: Array.from(tr.cells).map((td) => td.innerText),
  hashes: Array.from(tr.cells).map((td) => td.dataset.hash || null),
}));
"""


@dataclass(frozen=True)
class Row:
    """A table row: its round (data-round), the text of each cell, each cell's full hash."""

    round: int | None
    text: list[str]
    hashes: list[str | None]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by chromedriver (both Debian packages)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing = "chromium/chromedriver missing: `make test` installs them (apt-get)"
        if os.environ.get("CI"):  # CI must run what it claims to test
            pytest.fail(missing)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


class Site:
    """The network, the explorer process serving it and the browser looking at it."""

    def __init__(self, network: LocalNetwork, url: str, driver: Any) -> None:
        self.network = network
        self.url = url
        self.driver = driver
        self.growth: list[int] = []  # block rows shown at the start, after round 2, round 4
        self.tampered = b""  # the round-1 model hash whose copy at miner 1 was changed

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)
        wait_until(lambda: self.driver.execute_script(
            "return document.getElementById('app').dataset.updated"), 60, f"{path} to render")

    def rows(self, table: str) -> list[Row]:
        """The rows of a table as the page shows them now (read in one go: the page redraws)."""
        return [Row(**row) for row in self.driver.execute_script(READ_TABLE, table)]

    def wait_rows(self, table: str, count: int, timeout: float = 60) -> list[Row]:
        found = wait_until(lambda: (rows,) if len(rows := self.rows(table)) == count else None,
                           timeout, f"{count} rows in table {table}")
        return found[0]

    def text(self, selector: str, field: str = "innerText") -> str:
        """A property of an element, read in the page (its nodes are redrawn at every poll)."""
        return self.driver.execute_script(
            f"return document.querySelector(arguments[0]).{field}", selector)

    def api(self, path: str) -> Any:
        return httpx.get(self.url + "/api" + path, timeout=10).json()


def run_devices(network: LocalNetwork, rounds: int) -> None:
    """Start the devices until the chain has `rounds` blocks and wait for them to finish."""
    for role in network.devices:
        role.args = [*role.args, "--rounds", str(rounds)]
        network.start_role(role)
    network.wait_for_round(rounds, timeout=240)
    wait_until(lambda: not any(r.running for r in network.devices), 60, "the devices to finish")


def tamper(network: LocalNetwork, miner: int, round_: int) -> bytes:
    """Replace miner `miner`'s stored copy of a round's global model with other weights."""
    model_hash = network.ledger.get_block(round_).global_model_hash
    path = network.run_dir / f"miner{miner}" / "models" / f"{to_hex(model_hash)}.safetensors"
    state = decode(path.read_bytes(), max_bytes=1 << 30)
    path.write_bytes(encode({k: v + 0.5 for k, v in state.items()}))
    return model_hash


@pytest.fixture(scope="module")
def site(tmp_path_factory, browser) -> Iterator[Site]:
    """The network with the explorer started before round 1; the page open at /."""
    if find_anvil() is None:
        pytest.skip("anvil binary not found (npm ci)")
    base = load_config("network")
    config = replace(base, run=replace(base.run, rounds=FIRST_ROUNDS),
                     network=replace(base.network, miners=2, devices=DEVICES),
                     # multi-Krum keeps 3 of the 4 updates: each full block excludes one
                     aggregation=replace(base.aggregation, rule="multi_krum", f=1, m=3))
    network = LocalNetwork(config, tmp_path_factory.mktemp("explorer") / "net")
    network.start(start_devices=False)
    port = free_port()
    miners = ",".join(network.miner_url(i) for i in range(len(network.miners)))
    explorer = subprocess.Popen(
        [sys.executable, "-m", "blockfl.cli", "explorer", "--deployment",
         str(network.deployment_path), "--rpc-url", network.rpc_url, "--miners", miners,
         "--port", str(port), "--interval", "0.5", "--recheck", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=CHILD_ENV,
    )
    try:
        wait_for_port(port, timeout=120)
        site = Site(network, f"http://127.0.0.1:{port}", browser)
        site.open("/")
        site.growth.append(len(site.wait_rows("blocks", 0)))
        run_devices(network, FIRST_ROUNDS)
        site.growth.append(len(site.wait_rows("blocks", FIRST_ROUNDS)))
        site.tampered = tamper(network, miner=1, round_=1)
        run_devices(network, ROUNDS)
        site.growth.append(len(site.wait_rows("blocks", ROUNDS)))
        yield site
    finally:
        explorer.terminate()
        explorer.wait(timeout=10)
        network.stop()


def test_block_table_grows_as_rounds_commit_and_matches_the_chain(site):
    assert site.growth == [0, FIRST_ROUNDS, ROUNDS]  # the page open since before round 1
    site.open("/")
    rows = site.wait_rows("blocks", ROUNDS)

    ledger = site.network.ledger
    for row in rows:  # newest first
        block = ledger.get_block(row.round)
        assert row.text[0] == str(row.round)
        assert row.hashes[1] == to_hex(block.block_hash)
        assert row.text[2] == block.miner
        assert int(row.text[4]) == block.num_updates
        assert int(row.text[5]) == block.total_samples
    assert [r.round for r in rows] == list(range(ROUNDS, 0, -1))


def test_chart_has_one_point_per_round_and_accuracy_improves(site):
    site.open("/")
    head = site.network.ledger.head().round
    points = wait_until(lambda: site.driver.execute_script(
        "const c = Chart.getChart('accuracy-chart');"
        "return c && c.data.datasets[0].data.length === arguments[0] ? c.data.datasets[0].data"
        " : null;", head), 60, f"{head} chart points")
    assert [p["x"] for p in points] == list(range(1, head + 1))
    accuracy = [p["y"] for p in points]
    assert accuracy[-1] > accuracy[0] > 0.1  # digits: 10 classes, far above chance
    assert site.text("#accuracy-chart", "dataset.points") == str(head)
    if path := os.environ.get("BLOCKFL_EXPLORER_SCREENSHOT"):
        site.driver.save_screenshot(path)


def test_tampered_model_shows_as_a_mismatch(site):
    tampered = site.tampered
    site.open("/models")
    miner1 = site.network.miner_url(1)
    wait_until(lambda: site.api("/models")["rounds"][0]["checks"][1]["status"] == "mismatch",
               60, "the explorer to see the tampered model")
    rows = site.wait_rows("models", ROUNDS)
    statuses = {}
    for row in rows:
        statuses[row.round] = row.text[2:4]
        assert row.hashes[1] == to_hex(site.network.ledger.get_block(row.round).global_model_hash)
    assert statuses == {1: ["match", "MISMATCH"], **{r: ["match", "match"]
                                                     for r in range(2, ROUNDS + 1)}}
    assert "not every miner" in site.text("#verdict")
    check = site.api("/models")["rounds"][0]
    assert check["chain_hash"] == to_hex(tampered)
    assert check["checks"][1]["miner"] == miner1
    assert check["checks"][1]["served_hash"] != to_hex(tampered)
    site.open("/")
    wait_until(lambda: site.rows("blocks")[-1].text[-1] == "MISMATCH", 30, "round 1 flagged")


def test_page_tells_who_was_paid_how_much_for_which_round(site):
    ledger = site.network.ledger
    site.open("/rewards")
    paid_addresses = {u.device for u in ledger.accepted_updates()} | {
        b.miner for b in ledger.blocks()}
    balances = site.wait_rows("balances", len(paid_addresses) + 1)  # and the total
    assert {r.text[0] for r in balances[:-1]} == paid_addresses
    assert all(r.text[-1] == "yes" for r in balances)
    events = site.wait_rows("reward-events", len(ledger.accepted_updates()) + ROUNDS)
    shown = {(int(e.text[0]), e.text[1], e.text[2]) for e in events}
    paid = {(u.round, u.device, "data") for u in ledger.accepted_updates()}
    mined = {(b.round, b.miner, "mining") for b in ledger.blocks()}
    assert shown == paid | mined

    site.open("/rounds/3")
    updates = site.wait_rows("updates", len(ledger.accepted_updates(3)))
    for row, update in zip(updates, ledger.accepted_updates(3), strict=True):
        assert row.text[0] == update.device
        assert row.hashes[1] == to_hex(update.update_hash)
        assert int(row.text[2]) == update.samples
        assert row.text[3] == f"{update.reward / 10**18:g}"
    first = ledger.accepted_updates(3)[0]
    assert site.api("/rounds/3")["updates"][0]["reward"] == str(first.reward)


def test_round_page_shows_the_updates_the_rule_excluded_and_why(site):
    ledger = site.network.ledger
    miner = MinerClient(site.network.miner_url(0), timeout=10)
    excluded_any = 0
    for round_ in range(1, ROUNDS + 1):
        block = miner.block(round_)  # the block as miners exchange it: kept and excluded
        assert block is not None
        site.open(f"/rounds/{round_}")
        rows = site.wait_rows("excluded", len(block.excluded)) if block.excluded else []
        assert {r.hashes[1] for r in rows} == {to_hex(h) for h in block.excluded}
        paid = {u.device for u in ledger.accepted_updates(round_)}
        for row in rows:
            assert row.text[2] == "robust_filter" and "krum score ranks" in row.text[3]
            assert row.text[0] not in paid  # an excluded update earns nothing
        if not rows:
            assert site.text("#excluded") == "none"
        excluded_any += len(rows)
    miner.close()
    assert excluded_any >= 1  # a block with all 4 updates excludes one


def test_network_up_explorer_shows_the_block_table_growing(browser, tmp_path):
    """`network up --explorer`: the page, opened as soon as the explorer serves, gains a row per
    committed round; the network and the explorer keep running after the rounds."""
    port, rounds = free_port(), 3
    printed = tmp_path / "network-up.txt"
    with printed.open("w") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "blockfl.cli", "network", "up", "--rounds", str(rounds),
             "--miners", "2", "--devices", "3", "--run-dir", str(tmp_path / "net"),
             "--explorer", "--explorer-port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=CHILD_ENV,
        )
    try:
        wait_for_port(port, timeout=180)
        site = Site(None, f"http://127.0.0.1:{port}", browser)  # type: ignore[arg-type]
        site.open("/")
        seen = [len(site.rows("blocks"))]
        deadline = time.monotonic() + 240
        while seen[-1] < rounds and time.monotonic() < deadline:
            time.sleep(0.3)
            seen.append(len(site.rows("blocks")))
        assert seen[0] < rounds and seen[-1] == rounds and seen == sorted(seen), seen
        # after the rounds the command checks the run (it waits for the devices to finish),
        # then says it keeps running: wait for that line, not a fixed time
        deadline = time.monotonic() + 120
        while "keep running; Ctrl-C stops them" not in printed.read_text():
            assert command.poll() is None, printed.read_text()[-3000:]
            assert time.monotonic() < deadline, printed.read_text()[-3000:]
            time.sleep(0.3)
        time.sleep(2)
        assert command.poll() is None  # still serving after the rounds
        assert site.api("/blocks")["head"] == rounds
    finally:
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=60)
    assert f"explorer: http://127.0.0.1:{port}/" in printed.read_text()
