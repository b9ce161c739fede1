"""A block explorer in the browser: blocks, rewards, model checks and accuracy of a deployment.

`reader` reads the chain (through `blockfl.chain.inspection`), the miners and the network's event
logs into JSON-ready snapshots; `app` serves them as HTML pages, each with a JSON twin under
`/api/...`, polled by the page's script so it updates live.
"""
