#!/usr/bin/env bash
# Reproduce the attack figures and tables of the README: digits, the MLP, 10 devices, 2 miners,
# the local ledger, 8 rounds (src/blockfl/configs/attack.toml), seeds 0, 1 and 2. Poisoning
# attacks at 0-40% attackers under every rule, then the reward attacks (free-riders, sample
# inflation, Sybil copies) at 30%. About 300 runs, a few seconds of CPU each (15 minutes).
# Output: docs/figures/attack/ (or the directory given as $1): attack.csv, summary.json and one
# PNG per attack; rewards/ below it for the reward attacks. Extra arguments are passed on, e.g.
#   scripts/attack_figures.sh runs/attack --seeds 0
set -euo pipefail
source "$(dirname "$0")/_blockfl.sh"

out="${1:-docs/figures/attack}"
shift || true

blockfl attack --attacks sign_flip,scale_x10,gaussian_noise,label_flip \
    --fractions 0,0.2,0.3,0.4 --seeds 0,1,2 --out "$out" "$@"
blockfl attack --attacks free_rider,free_rider_noise,sample_inflation,sybil \
    --fractions 0.3 --seeds 0,1,2 --out "$out/rewards" "$@"
