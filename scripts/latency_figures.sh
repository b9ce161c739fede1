#!/usr/bin/env bash
# Reproduce the BlockFL latency figures: latency vs lambda (analytic + Monte Carlo, lambda*
# marked), lambda* vs SNR and lambda* vs number of miners. Output: CSV + PNG in runs/figures/
# (or the directory given as $1). Extra arguments are passed to every sweep, e.g.
#   scripts/latency_figures.sh runs/figures --config my_latency.toml --rounds 200000
set -euo pipefail
source "$(dirname "$0")/_blockfl.sh"

out="${1:-runs/figures}"
shift || true

blockfl latency sweep --param lambda --start 0.01 --stop 1 --num 25 --log --out "$out" "$@"
blockfl latency sweep --param snr --start 0 --stop 30 --num 16 --out "$out" "$@"
blockfl latency sweep --param miners --start 1 --stop 20 --num 20 --out "$out" "$@"
