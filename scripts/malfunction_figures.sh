#!/usr/bin/env bash
# Reproduce the malfunction figures and table (docs/malfunction.md): vanilla FL vs BlockFL
# without and with model verification, 10 rounds on the digits data (10 devices, 3 miners),
# 5 seeds, malfunction probabilities 0, 0.3, 0.6, 0.8; time to test accuracy 0.9 with the latency
# model of this config (T_wait = 0.5 s) and real training. A few minutes on one core.
# Output: CSV + JSON + PNG in runs/figures/ (or the directory given as $1). Extra arguments are
# passed on, e.g.
#   scripts/malfunction_figures.sh runs/figures --seeds 10 --malfunction-corruption sign
set -euo pipefail
source "$(dirname "$0")/_blockfl.sh"

out="${1:-runs/figures}"
shift || true

blockfl malfunction --p 0.6 --sweep-p 0,0.3,0.8 --rounds 10 --devices 10 --miners 3 --seeds 5 \
    --seed 0 --target 0.9 --network-t-wait 0.5 --out "$out" "$@"
