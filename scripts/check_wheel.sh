#!/usr/bin/env bash
# CI: what `pip install .` gives a user. Builds the wheel from a clean copy of the checkout,
# installs it alone in a fresh venv (torch pinned first: the CPU build, as the Makefile does),
# and from an empty folder outside the checkout runs `blockfl --help`, the --help of every
# subcommand (nested ones too: chain up, latency analyze, ...) and `blockfl demo --rounds 1`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 MPLBACKEND=Agg

mkdir "$tmp/checkout" "$tmp/run"
tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./node_modules --exclude=./build \
    --exclude=./dist --exclude=./runs --exclude='*.egg-info' --exclude=__pycache__ -cf - . |
    tar -C "$tmp/checkout" -xf -
"$python" -m venv "$tmp/venv"
bin="$tmp/venv/bin"
"$bin/pip" install -q torch==2.13.0
"$bin/pip" wheel -q --no-deps "$tmp/checkout" -w "$tmp/dist"
rm -rf "$tmp/checkout"
"$bin/pip" install -q "$tmp"/dist/blockfl-*.whl

cd "$tmp/run"
# every command path of the full parser, one a line ("" is blockfl itself)
"$bin/python" - > commands.txt <<'PY'
import argparse

from blockfl.cli import build_parser


def walk(parser, path):
    print(" ".join(path))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                walk(sub, [*path, name])


walk(build_parser(), [])
PY
while read -r command; do
    # shellcheck disable=SC2086  # a command path is words
    "$bin/blockfl" $command --help > /dev/null || { echo "FAILED: blockfl $command --help"; exit 1; }
done < commands.txt
"$bin/blockfl" demo --rounds 1
# what `chain up` and `network up` run anvil under: a module of the wheel, run with -m
keeper="$("$bin/python" -m blockfl.chain.keeper 2>&1 || true)"  # no arguments: its usage line
[[ "$keeper" == "usage: python -m blockfl.chain.keeper"* ]] ||
    { echo "FAILED: python -m blockfl.chain.keeper: $keeper"; exit 1; }
echo "wheel check passed: $(wc -l < commands.txt) --help pages, blockfl demo --rounds 1 and the chain keeper from $(basename "$tmp"/dist/*.whl)"
