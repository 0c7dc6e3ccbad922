#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the tansu broker if
# missing (the integration tests start and stop their own brokers), checks
# formatting and lints, then runs every test, the crash loop, the scale-out
# test and a short fuzzing run of the event decoders.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/tansu.sh install
export TANSU_BIN="$(scripts/tansu.sh bin)"

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release --all-targets
# The crash loop (about 4 minutes: 20 SIGKILLs against a real broker).
cargo test --release --test crash_loop -- --ignored --nocapture
# Scale-out (about 3 minutes): three instances, one SIGKILLed, an empty-disk
# joiner and an empty-disk replacement restore from the changelog.
cargo test --release --test scale_out -- --ignored --nocapture
# The decoders under libFuzzer for a minute.
scripts/fuzz.sh 60
