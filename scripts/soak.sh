#!/usr/bin/env bash
# Soak run: the real binary against tansu (SQLite storage) for SECONDS of
# streamed events (default 300), paced at half of the peak rate measured
# first on this machine, with duplicates, late events and poison messages
# mixed in, random SIGKILLs of the service and broker restarts. At the end
# every customer's state is compared with a clean run, and the figures are
# printed (events lost, applied twice, alerts missing, dead letters by
# reason, restarts survived, event-to-commit latency).
#
#   scripts/soak.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tansu.sh install
export TANSU_BIN="$(scripts/tansu.sh bin)"
export SOAK_SECONDS="${1:-300}"
export SOAK_SEED="${2:-23}"
cargo test --release --test soak -- --ignored --nocapture
