#!/usr/bin/env bash
# A local BlockFL network of processes: anvil, the deployment, 3 miners and 6 devices on
# loopback (the packaged network.toml), until 5 rounds are committed; then the blocks and
# rewards tables, and everything it started is stopped (also on Ctrl-C or failure).
# Any `blockfl network up` flag passes through, e.g. --miners 4 --devices 10 --rounds 8 --tls.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_blockfl.sh"
blockfl network up "$@"
