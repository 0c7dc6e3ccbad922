#!/usr/bin/env bash
# Fuzzes the event decoders (fuzz/fuzz_targets/decode.rs) with cargo-fuzz and
# libFuzzer for SECONDS (default 60). Installs cargo-fuzz when missing.
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them for this build only.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz run decode --release -- -max_total_time="$seconds" -max_len=4096
