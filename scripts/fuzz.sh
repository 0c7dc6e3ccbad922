#!/usr/bin/env bash
# Fuzzes the event decoders (fuzz/fuzz_targets/decode.rs) with cargo-fuzz and
# libFuzzer for SECONDS (default 60). Installs cargo-fuzz when missing.
# `scripts/fuzz.sh SECONDS --dev` builds without optimisation (with overflow
# checks): on 2 cores the build takes ~7 minutes instead of ~12, and runs
# ~10 times fewer inputs a second (~600-900 against ~7,000), which is what the
# test suite's short run uses; a long run wants the default (--release).
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them for this build only.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build="${2:---release}"
if [[ ! "$seconds" =~ ^[0-9]+$ || ! "$build" =~ ^--(release|dev)$ || $# -gt 2 ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS [--release|--dev]]" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz run decode "$build" -- -max_total_time="$seconds" -max_len=4096
