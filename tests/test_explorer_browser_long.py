"""The explorer's block page in a real browser at 10,000 rounds (a synthetic chain): a page of
rows, page links that work, a thinned chart that keeps the last round, and a poll (fetch and
redraw) that takes less than the refresh interval."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn

from blockfl.chain.node import free_port
from blockfl.explorer.app import create_app
from blockfl.explorer.reader import PAGE_ROWS
from blockfl.explorer.thinning import CHART_POINTS
from tests.explorer_synthetic import SyntheticExplorer
from tests.test_explorer_browser import READ_TABLE, browser, wait_until

__all__ = ["browser"]  # the fixture, shared with the network's browser test

ROUNDS, INTERVAL = 10_000, 2.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(SyntheticExplorer(ROUNDS), INTERVAL),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "the explorer to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def rounds_shown(driver) -> list[int]:
    return [row["round"] for row in driver.execute_script(READ_TABLE, "blocks")]


def test_a_long_chain_is_paged_thinned_and_redrawn_within_the_interval(browser, url):
    browser.get(url + "/")
    newest = list(range(ROUNDS, ROUNDS - PAGE_ROWS, -1))
    wait_until(lambda: rounds_shown(browser) == newest, 60, "the newest page of blocks")
    points = wait_until(lambda: browser.execute_script(
        "const c = Chart.getChart('accuracy-chart');"
        "return c && c.data.datasets[0].data.length ? c.data.datasets[0].data : null;"),
        60, "the chart")
    xs = [p["x"] for p in points]
    assert len(xs) <= CHART_POINTS and xs[0] == 1 and xs[-1] == ROUNDS and xs == sorted(xs)
    assert browser.execute_script(
        "return document.getElementById('accuracy-chart').dataset.rounds") == str(ROUNDS)
    # a few polls later: each fetch and redraw took less than the interval between polls
    first = browser.execute_script("return document.getElementById('app').dataset.updated")
    wait_until(lambda: browser.execute_script(
        "return document.getElementById('app').dataset.updated") != first, 30, "a poll")
    redraw_ms = float(browser.execute_script(
        "return document.getElementById('app').dataset.redrawMs"))
    assert redraw_ms < INTERVAL * 1000
    browser.find_element("id", "older").click()
    older = list(range(ROUNDS - PAGE_ROWS, ROUNDS - 2 * PAGE_ROWS, -1))
    wait_until(lambda: rounds_shown(browser) == older, 60, "the next page of older blocks")
    assert browser.current_url.endswith(f"?offset={PAGE_ROWS}&limit={PAGE_ROWS}")
    browser.find_element("id", "newer").click()
    wait_until(lambda: rounds_shown(browser) == newest, 60, "the newest page again")
