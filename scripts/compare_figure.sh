#!/usr/bin/env bash
# Measured against modelled latency: a 40-round simulate run with emulated links (the latency
# model's S / (W log2(1 + SNR)) transfers) and the real proof-of-work race, then
# `blockfl latency compare`. Output: the run in runs/compare-run, latency_compare.png in
# runs/figures/ (or the directory given as $1). Extra arguments go to simulate.
set -euo pipefail
source "$(dirname "$0")/_blockfl.sh"

out="${1:-runs/figures}"
shift || true
mkdir -p "$out"
rm -rf runs/compare-run
blockfl simulate --rounds 40 --devices 5 --miners 3 --ledger local --model-name logreg \
    --training-epochs 1 --training-compute-time modelled --network-t-wait 0.5 \
    --links-w-m 300000 --chain-block-rate 2.0 --run-out-dir runs --run-name compare-run "$@"
blockfl latency compare runs/compare-run
cp runs/compare-run/latency_compare.png "$out/latency_compare.png"
