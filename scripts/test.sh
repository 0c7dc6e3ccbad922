#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the tansu broker if
# missing (the integration tests start and stop their own brokers), checks
# formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tansu.sh install
export TANSU_BIN="$(scripts/tansu.sh bin)"

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release --all-targets
