#!/usr/bin/env bash
# Reproduce the malfunction figures: vanilla FL vs BlockFL without and with model verification,
# 20 rounds on the digits data (10 devices, 3 miners), trajectories at p = 0.3 and the final
# accuracy over p = 0..0.5. Output: CSV + JSON + PNG in runs/figures/ (or the directory given as
# $1). Extra arguments are passed on, e.g.
#   scripts/malfunction_figures.sh runs/figures --seed 1 --corruption sign
set -euo pipefail
source "$(dirname "$0")/_blockfl.sh"

out="${1:-runs/figures}"
shift || true

blockfl malfunction --p 0.3 --rounds 20 --devices 10 --miners 3 \
    --sweep-p 0,0.1,0.2,0.3,0.4,0.5 --seed 0 --out "$out" "$@"
