"""Compile the BlockFL contracts with py-solc-x and write (or check) the committed artifacts.

A native `solc` on PATH is used when it reports the pinned version; otherwise the npm package
`solc` (solcjs) runs through a small shim, because no native solc can be downloaded offline.
solcjs prints `>>>` notes before its JSON; the shim drops them so py-solc-x can parse the output.
Imports are resolved here (our sources and `@openzeppelin/...` from node_modules) and passed as
source contents, so the compilation does not depend on compiler-side import callbacks.

Usage: python -m blockfl.contracts.build [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import solcx

from blockfl.contracts import ARTIFACTS_DIR, CONTRACT_NAMES, CONTRACTS_DIR, find_node_modules

SOLC_VERSION = "0.8.28"
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": True,
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}
_IMPORT = re.compile(r'^\s*import\s+(?:[^"\']*\bfrom\s+)?["\']([^"\']+)["\']', re.MULTILINE)


def collect_sources(node_modules: Path, roots: tuple[Path, ...] = ()) -> dict[str, dict[str, str]]:
    """All source units reachable from our contracts (or from the files `roots`, e.g. a
    benchmark's prototype, each named by its file name), keyed by their import path."""
    sources: dict[str, dict[str, str]] = {}
    local = {root.name: root for root in roots} or {
        f"{name}.sol": CONTRACTS_DIR / f"{name}.sol" for name in CONTRACT_NAMES}
    pending = list(local)
    while pending:
        unit = pending.pop()
        if unit in sources:
            continue
        path = (node_modules / unit if unit.startswith("@")
                else local.get(unit, CONTRACTS_DIR / unit))
        text = path.read_text()
        sources[unit] = {"content": text}
        for target in _IMPORT.findall(text):
            if target.startswith("."):
                target = os.path.normpath(os.path.join(os.path.dirname(unit), target))
            pending.append(target)
    return dict(sorted(sources.items()))


def solc_binary(node_modules: Path, workdir: Path) -> Path:
    """A solc executable of the pinned version: native on PATH, else a solcjs shim."""
    native = shutil.which("solc")
    if native:
        out = subprocess.run([native, "--version"], capture_output=True, text=True).stdout
        if SOLC_VERSION in out:
            return Path(native)
    solcjs = node_modules / "solc" / "solc.js"
    if not solcjs.exists():
        raise FileNotFoundError(f"{solcjs} missing: run `npm install` in the repository root")
    shim = workdir / "solc"
    # solcjs reads stdin with readFileSync, which fails with EAGAIN on a pipe that is not ready,
    # and exits before a piped stdout past 64 KiB is flushed: the shim goes through files.
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--standard-json" ]; then\n'
        '  input=$(mktemp); output=$(mktemp); cat > "$input"\n'
        f'  node "{solcjs}" "$@" < "$input" > "$output"; status=$?\n'
        '  grep -v "^>>>" "$output"; rm -f "$input" "$output"; exit $status\n'
        f'else\n  exec node "{solcjs}" "$@"\nfi\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return shim


def compile_contracts() -> dict[str, dict[str, Any]]:
    """Compile the contracts; return one artifact dict per contract name."""
    node_modules = find_node_modules()
    if node_modules is None:
        raise FileNotFoundError("node_modules not found: run `npm install` in the repository root")
    sources = collect_sources(node_modules)
    with tempfile.TemporaryDirectory() as tmp:
        binary = solc_binary(node_modules, Path(tmp))
        output = solcx.compile_standard(
            {"language": "Solidity", "sources": sources, "settings": SETTINGS},
            solc_binary=binary,
        )
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("\n".join(e["formattedMessage"] for e in errors))
    artifacts = {}
    for name in CONTRACT_NAMES:
        compiled = output["contracts"][f"{name}.sol"][name]
        artifacts[name] = {
            "contractName": name,
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "compiler": {"version": SOLC_VERSION, "settings": SETTINGS},
        }
    return artifacts


def render(artifact: dict[str, Any]) -> str:
    """The committed text form of an artifact."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the artifacts, or with --check fail when they differ from a fresh compilation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    artifacts = compile_contracts()
    stale = []
    for name, artifact in artifacts.items():
        path = ARTIFACTS_DIR / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text() != render(artifact):
                stale.append(name)
        else:
            ARTIFACTS_DIR.mkdir(exist_ok=True)
            path.write_text(render(artifact))
            print(f"wrote {path}")
    if stale:
        print(f"artifacts out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
