#!/usr/bin/env bash
# Every figure of the README, into docs/figures/ (or $1): latency model, measured vs model,
# malfunction, attacks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$here/.." && mkdir -p "${1:-docs/figures}" && cd "${1:-docs/figures}" && pwd)"
"$here/latency_figures.sh" "$out"
"$here/compare_figure.sh" "$out"
"$here/malfunction_figures.sh" "$out"
"$here/attack_figures.sh" "$out/attack"
