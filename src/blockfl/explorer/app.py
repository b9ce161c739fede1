"""The explorer's web app (FastAPI): HTML pages, each with a JSON twin under `/api/...`.

    /                   /api/blocks          the chain of blocks and the accuracy/loss curve
    /rounds/{round}     /api/rounds/{round}  a round's paid updates, mining reward, exclusions
    /rewards            /api/rewards         balances against reward events, every reward event
    /models             /api/models          each miner's copy of each global model vs the chain
    /latency            /api/latency         phase times of each round from the event logs

A page is a shell (`static/page.html`) whose script (`static/explorer.js`) polls its twin and
redraws, so it updates live. The chart library (Chart.js, MIT) ships with the package in
`vendor/`, a copy of the npm package package.json pins: no CDN, no node_modules at run time. A
background thread refreshes the `Explorer` snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from blockfl.explorer.reader import Explorer

STATIC = Path(__file__).parent / "static"
#: Chart.js's browser bundle: node_modules/chart.js/dist/chart.umd.min.js, with its licence
CHART_JS = Path(__file__).parent / "vendor" / "chart.umd.min.js"


def render_page(page: str, api: str, title: str, poll_ms: int) -> HTMLResponse:
    """The HTML shell of a page that polls `api` every `poll_ms` milliseconds."""
    html = (STATIC / "page.html").read_text()
    for key, value in (("page", page), ("api", api), ("title", title), ("poll_ms", str(poll_ms))):
        html = html.replace("{{" + key + "}}", value)
    return HTMLResponse(html)


def create_app(explorer: Explorer, interval: float = 2.0) -> FastAPI:
    """The explorer app; while it runs, a thread refreshes `explorer` every `interval` s."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = threading.Thread(target=explorer.run, args=(stop, interval), daemon=True,
                                  name="explorer-refresh")
        thread.start()
        yield
        stop.set()
        thread.join(timeout=10)

    app = FastAPI(title="BlockFL explorer", version="1", lifespan=lifespan)
    poll_ms = max(500, round(interval * 1000))

    def view(name: str) -> dict:
        snapshot = explorer.snapshot
        return getattr(snapshot, name) | {"error": snapshot.error}

    @app.get("/api/blocks")
    def api_blocks() -> dict:
        return view("blocks")

    @app.get("/api/rounds/{round_}")
    def api_round(round_: int) -> JSONResponse:
        snapshot = explorer.snapshot
        found = snapshot.rounds.get(round_)
        if found is None:
            head = snapshot.blocks.get("head")
            return JSONResponse({"error": f"no block committed for round {round_}", "head": head},
                                status_code=404)
        return JSONResponse(found | {"error": snapshot.error})

    @app.get("/api/rewards")
    def api_rewards() -> dict:
        return view("rewards")

    @app.get("/api/models")
    def api_models() -> dict:
        return view("models")

    @app.get("/api/latency")
    def api_latency() -> dict:
        return view("latency")

    @app.get("/", response_class=HTMLResponse)
    @app.get("/blocks", response_class=HTMLResponse)
    def page_blocks() -> HTMLResponse:
        return render_page("blocks", "/api/blocks", "blocks", poll_ms)

    @app.get("/rounds/{round_}", response_class=HTMLResponse)
    def page_round(round_: int) -> HTMLResponse:
        return render_page("round", f"/api/rounds/{round_}", f"round {round_}", poll_ms)

    for name in ("rewards", "models", "latency"):
        app.add_api_route(f"/{name}",
                          lambda name=name: render_page(name, f"/api/{name}", name, poll_ms),
                          response_class=HTMLResponse, methods=["GET"])

    @app.get("/static/vendor/chart.js")
    def vendor_chart() -> FileResponse:
        return FileResponse(CHART_JS, media_type="text/javascript")

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        files = {p.name: p for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
        if name not in files:
            return JSONResponse({"error": f"no static file {name}"},  # type: ignore[return-value]
                                status_code=404)
        return FileResponse(files[name])

    return app
